"""Conversations that keep the thread, through the running bot: the multi-turn cases of tests/followups/,
each scored on its last turn, and the transcripts of issue 23 checked in the CRM."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.database import make_engine
from bot.crm.models import ChannelIdentity, Escalation, Suggestion
from nlu.dialogues import run_dialogues
from nlu.followups import KINDS, load_cases, summarise_last_turns
from tests.e2e.conftest import RunningBot

pytestmark = pytest.mark.rasa

# The last turn right per language on tests/followups/ (76 cases each). Issue 23's target is 0.85;
# measured 0.789 in each language (0.395 zh / 0.461 en before follow-ups were read with their
# thread): this floor keeps what was reached, docs/evaluation.md has the figures and what is missing.
FLOOR = 0.75


def test_follow_ups_are_read_with_the_thread_in_both_languages(running_bot: RunningBot) -> None:
    cases = load_cases()
    kinds = {(case.language, case.kind) for case in cases}
    assert kinds == {(language, kind) for language in ("zh", "en") for kind in KINDS}
    assert all(sum(case.language == language for case in cases) >= 60 for language in ("zh", "en"))
    summary = summarise_last_turns(
        run_dialogues(webhook=running_bot.webhook, crm_url=running_bot.crm_url, dialogues=cases)
    )
    accuracy = {language: row["accuracy"] for language, row in summary["by_language"].items()}
    wrong = "\n".join(f"{w['case']} [{w['language']}]: {w['problems']}" for w in summary["wrong"])
    assert all(share >= FLOOR for share in accuracy.values()), f"{accuracy}\n{wrong}"
    # Every kind is mostly right in each language, and the negative kinds nearly always.
    for name, row in summary["by_kind"].items():
        assert row["accuracy"] >= (0.75 if name.split()[1] in ("new_topic", "acknowledgement") else 0.5), name


def _talk(bot: RunningBot, sender: str, *texts: str) -> list[list[str]]:
    replies = []
    for text in texts:
        status, body = bot.post({"sender": sender, "message": text})
        assert status == 200
        replies.append([str(item.get("text") or "") for item in body])
    return replies


def test_a_place_sent_after_a_complaint_reaches_its_record(running_bot: RunningBot) -> None:
    sender = f"thread-{time.monotonic_ns()}"
    first, second = _talk(running_bot, sender, "阅览室空调太冷了，能不能调高一点", "三楼东边")
    assert any("投诉" in text for text in first)
    assert any("已补充" in text for text in second), second
    engine = make_engine(running_bot.crm_url)
    try:
        with Session(engine, future=True) as session:
            patron = session.execute(
                select(ChannelIdentity.patron_id).where(ChannelIdentity.external_id == sender)
            ).scalar_one()
            [report] = session.execute(select(Suggestion).where(Suggestion.patron_id == patron)).scalars()
            assert report.kind == "complaint"
            assert report.text.endswith("三楼东边")
            [escalation] = session.execute(select(Escalation).where(Escalation.patron_id == patron)).scalars()
            assert escalation.reason == "complaint"
            assert report.escalation_id == escalation.id
    finally:
        engine.dispose()


def test_the_type_said_in_a_question_is_used_by_the_next_answer(running_bot: RunningBot) -> None:
    _, second = _talk(running_bot, f"thread-{time.monotonic_ns()}", "我是研究生，能借几本书？", "借期多长")
    assert any("研究生" in text and "60" in text for text in second), second
    assert not any("哪类读者" in text for text in second), second
