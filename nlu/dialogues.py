"""Whole dialogues against the running bot: what it says at each turn, and what the CRM holds after."""

from __future__ import annotations

import functools
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.crm.database import make_engine
from bot.crm.models import ChannelIdentity, Consent, Escalation, Feedback, Interaction, Patron, Suggestion
from bot.language import detect_language
from bot.settings import PROJECT_ROOT

DIALOGUES = PROJECT_ROOT / "tests" / "dialogues"
# The record kinds a dialogue can expect, each compared as a whole list (so an unwanted row fails it).
RECORD_KINDS = ("feedback", "reports", "escalations")


class DialogueFileError(Exception):
    """A dialogue file is malformed; the message names the file and the dialogue."""


@dataclass(frozen=True)
class Turn:
    """What the patron says, and what the bot must do: the responses or actions that produce its
    replies (`interaction.produced_by`, in order, among others), those it must not, their language."""

    say: str
    expect: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    language: str | None = None  # the replies' language, where it is not the dialogue's
    answer: str | None = None  # a knowledge-base entry one of the replies must be the answer of
    answer_for: str | None = None  # with `answer`: the answer for this patron type
    not_answer: str | None = None  # a knowledge-base entry no reply may be the answer of


@dataclass(frozen=True)
class Dialogue:
    name: str
    language: str
    kind: str
    turns: tuple[Turn, ...]
    records: dict[str, Any] | None = field(default_factory=dict)  # None: the records are not checked


@dataclass
class Outcome:
    dialogue: Dialogue
    replies: list[list[str]] = field(default_factory=list)  # the texts the webhook answered, per turn
    problems: list[str] = field(default_factory=list)
    wrong_turns: set[int] = field(default_factory=set)  # numbers (from 1) of the turns with a problem
    records_right: bool = True

    @property
    def last_turn_right(self) -> bool:
        """The last turn's replies and the records are right (earlier turns are only its context)."""
        return self.records_right and len(self.dialogue.turns) not in self.wrong_turns

    @property
    def right(self) -> bool:
        return not self.problems


def load_dialogues(paths: Sequence[Path] | None = None) -> list[Dialogue]:
    """The dialogues of the given files, or of every file in tests/dialogues/."""
    files = list(paths) if paths else sorted(DIALOGUES.glob("*.yml"))
    dialogues = []
    for path in files:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for index, item in enumerate(raw.get("dialogues") or []):
            where = f"{path.name}: dialogue {index + 1}"
            try:
                turns = tuple(
                    Turn(
                        say=str(turn["say"]),
                        expect=tuple(turn.get("expect") or ()),
                        forbid=tuple(turn.get("forbid") or ()),
                        language=turn.get("language"),
                        answer=turn.get("answer"),
                        answer_for=turn.get("for"),
                        not_answer=turn.get("not_answer"),
                    )
                    for turn in item["turns"]
                )
                language = str(item["language"])
                name = str(item["name"])
            except (KeyError, TypeError) as error:
                raise DialogueFileError(f"{where}: needs a name, a language and turns ({error})") from None
            if language not in ("zh", "en") or not turns:
                raise DialogueFileError(f"{where}: language must be zh or en, with at least one turn")
            records = dict(item.get("records") or {})
            unknown = set(records) - {*RECORD_KINDS, "consent", "patron", "inbound_language"}
            if unknown:
                raise DialogueFileError(f"{where}: unknown records {sorted(unknown)}")
            dialogues.append(
                Dialogue(name=name, language=language, kind=path.stem, turns=turns, records=records)
            )
    return dialogues


def _post(webhook: str, sender: str, text: str) -> list[str]:
    body = json.dumps({"sender": sender, "message": text}).encode("utf-8")
    request = urllib.request.Request(webhook, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=60) as reply:  # noqa: S310 (the bot we launched)
        return [str(item.get("text") or "") for item in json.loads(reply.read())]


def run_dialogues(*, webhook: str, crm_url: str, dialogues: Sequence[Dialogue]) -> list[Outcome]:
    """Talk each dialogue through the webhook (a new patron each), then check every turn and record."""
    senders = {}
    outcomes = []
    for dialogue in dialogues:
        sender = f"dlg-{uuid.uuid4().hex[:12]}"
        senders[id(dialogue)] = sender
        outcome = Outcome(dialogue)
        for turn in dialogue.turns:
            outcome.replies.append(_post(webhook, sender, turn.say))
        outcomes.append(outcome)
    engine = make_engine(crm_url)
    try:
        _wait_for_ingester(engine, {senders[id(o.dialogue)]: len(o.dialogue.turns) for o in outcomes})
        with Session(engine, future=True) as session:
            for outcome in outcomes:
                outcome.problems = check(session, outcome, sender=senders[id(outcome.dialogue)])
    finally:
        engine.dispose()
    return outcomes


def _wait_for_ingester(engine: Any, turns: dict[str, int], timeout: float = 60.0) -> None:
    """Until every dialogue's messages are in the CRM (and a moment more for the bot's replies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine, future=True) as session:
            arrived = {
                str(sender): int(count)
                for sender, count in session.execute(
                    select(ChannelIdentity.external_id, func.count(Interaction.id))
                    .join(Interaction, Interaction.patron_id == ChannelIdentity.patron_id)
                    .where(ChannelIdentity.external_id.in_(list(turns)), Interaction.direction == "in")
                    .group_by(ChannelIdentity.external_id)
                ).all()
            }
            done = sum(1 for sender, count in turns.items() if arrived.get(sender, 0) >= count)
        if done == len(turns):
            break
        time.sleep(0.5)
    time.sleep(2.0)


def _turns_in_crm(session: Session, patron_id: int) -> list[tuple[Interaction, list[Interaction]]]:
    rows = session.execute(
        select(Interaction)
        .where(Interaction.patron_id == patron_id)
        .order_by(Interaction.occurred_at, Interaction.id)
    ).scalars()
    turns: list[tuple[Interaction, list[Interaction]]] = []
    for row in rows:
        if row.direction == "in":
            turns.append((row, []))
        elif turns:
            turns[-1][1].append(row)
    return turns


def _subsequence(expected: Sequence[str], said: Sequence[str]) -> bool:
    remaining = iter(said)
    return all(any(name == produced for produced in remaining) for name in expected)


def _matches(row: Any, expected: dict[str, Any]) -> bool:
    return all(str(getattr(row, key)) == str(value) for key, value in expected.items())


def check(session: Session, outcome: Outcome, *, sender: str) -> list[str]:
    """What went wrong in one dialogue: a turn's replies, or a record the CRM holds or lacks."""
    dialogue, problems = outcome.dialogue, []
    patron_id = session.execute(
        select(ChannelIdentity.patron_id).where(
            ChannelIdentity.channel == "rest", ChannelIdentity.external_id == sender
        )
    ).scalar_one_or_none()
    if patron_id is None:
        outcome.records_right = False
        return ["the patron never reached the CRM"]
    crm_turns = _turns_in_crm(session, patron_id)
    if len(crm_turns) != len(dialogue.turns):
        outcome.records_right = False
        problems.append(f"{len(crm_turns)} patron messages in the CRM for {len(dialogue.turns)} turns")
    for number, (turn, (_, replies), texts) in enumerate(
        zip(dialogue.turns, crm_turns, outcome.replies, strict=False), start=1
    ):
        said = [str(reply.produced_by or "") for reply in replies]
        found = _turn_problems(turn, said, texts, dialogue.language)
        if found:
            outcome.wrong_turns.add(number)
            problems += [f"turn {number} ({turn.say!r}): {problem}" for problem in found]
    record_problems = [] if dialogue.records is None else _check_records(session, patron_id, dialogue.records)
    outcome.records_right = outcome.records_right and not record_problems
    return problems + record_problems


def _turn_problems(turn: Turn, said: list[str], texts: list[str], language: str) -> list[str]:
    problems = []
    if not _subsequence(turn.expect, said):
        problems.append(f"expected {list(turn.expect)}, said {said}")
    wrong = [name for name in turn.forbid if name in said]
    if wrong:
        problems.append(f"said {wrong}, which it must not")
    languages = {str(found) for text in texts if (found := detect_language(text)) is not None}
    if languages - {turn.language or language}:
        problems.append(f"replied in {sorted(languages)}")
    if turn.answer is not None:
        answered = answered_entries(texts, language)
        wanted = (turn.answer, turn.answer_for)
        if not any(
            entry == turn.answer and (turn.answer_for is None or kind == turn.answer_for)
            for entry, kind in answered
        ):
            problems.append(f"expected the answer {wanted}, answered {sorted(answered)}")
    if turn.not_answer is not None and any(
        entry == turn.not_answer for entry, _ in answered_entries(texts, language)
    ):
        problems.append(f"answered {turn.not_answer}, which it must not")
    return problems


@functools.cache
def _answers(language: str) -> dict[str, tuple[str, str | None]]:
    """Each answer text of the knowledge base in `language`: its entry, and the patron type it is for."""
    from bot.knowledge.entries import load_entries
    from bot.settings import get_settings

    settings = get_settings()
    answers: dict[str, tuple[str, str | None]] = {}
    for entry in load_entries(settings.path(settings.knowledge_base)):
        if entry.lang == language:
            answers[entry.answer.strip()] = (entry.id, None)
            for patron_type, text in entry.audience.items():
                answers[text.strip()] = (entry.id, patron_type)
    return answers


def answered_entries(texts: Sequence[str], language: str) -> set[tuple[str, str | None]]:
    """The knowledge-base entries (and patron types) whose answers are among the replies."""
    answers = _answers(language)
    return {answers[text.strip()] for text in texts if text.strip() in answers}


def _check_records(session: Session, patron_id: int, expected: dict[str, Any]) -> list[str]:
    problems = []
    found: dict[str, list[Any]] = {
        "feedback": list(
            session.execute(select(Feedback).where(Feedback.patron_id == patron_id).order_by(Feedback.id))
            .scalars()
            .all()
        ),
        "reports": list(
            session.execute(
                select(Suggestion).where(Suggestion.patron_id == patron_id).order_by(Suggestion.id)
            )
            .scalars()
            .all()
        ),
        "escalations": list(
            session.execute(
                select(Escalation).where(Escalation.patron_id == patron_id).order_by(Escalation.id)
            )
            .scalars()
            .all()
        ),
    }
    for kind in RECORD_KINDS:
        wanted = [dict(item) for item in expected.get(kind) or []]
        rows = found[kind]
        if len(rows) != len(wanted) or not all(
            _matches(row, item) for row, item in zip(rows, wanted, strict=True)
        ):
            described = [{key: getattr(row, key) for key in (wanted[0] if wanted else {})} for row in rows]
            problems.append(f"{kind}: expected {wanted}, found {len(rows)} {described}")
    for purpose, state in (expected.get("consent") or {}).items():
        latest = session.execute(
            select(Consent.granted)
            .where(Consent.patron_id == patron_id, Consent.purpose == purpose)
            .order_by(Consent.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        actual = "none" if latest is None else ("granted" if latest else "withdrawn")
        if actual != state:
            problems.append(f"consent {purpose}: expected {state}, found {actual}")
    patron = session.get(Patron, patron_id)
    for key, value in (expected.get("patron") or {}).items():
        actual_value = getattr(patron, key, None)
        if str(actual_value) != str(value):
            problems.append(f"patron {key}: expected {value}, found {actual_value}")
    language = expected.get("inbound_language")
    if language:
        stored = set(
            session.execute(
                select(Interaction.language).where(
                    Interaction.patron_id == patron_id, Interaction.direction == "in"
                )
            ).scalars()
        )
        if stored - {language}:
            problems.append(f"patron messages stored with languages {sorted(map(str, stored))}")
    return problems


def tally(selected: Sequence[Outcome], *, right: Callable[[Outcome], bool], label: str) -> dict[str, Any]:
    """How many of `selected` are `right`, and their share under `label` (None when there are none)."""
    count = sum(right(outcome) for outcome in selected)
    return {"n": len(selected), "right": count, label: round(count / len(selected), 3) if selected else None}


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The share of dialogues right, overall, per language and per kind, and what went wrong."""

    def share(selected: list[Outcome]) -> dict[str, Any]:
        return tally(selected, right=lambda outcome: outcome.right, label="share")

    return {
        "overall": share(list(outcomes)),
        "by_language": {
            language: share([o for o in outcomes if o.dialogue.language == language])
            for language in ("zh", "en")
        },
        "by_kind": {
            kind: share([o for o in outcomes if o.dialogue.kind == kind])
            for kind in sorted({o.dialogue.kind for o in outcomes})
        },
        "wrong": [
            {"dialogue": o.dialogue.name, "language": o.dialogue.language, "problems": o.problems}
            for o in outcomes
            if not o.right
        ],
    }


def evaluate_dialogues(
    *,
    model: Path,
    dialogues: Sequence[Dialogue],
    workdir: Path,
    vector_dir: Path | None = None,
    summary: Callable[[Sequence[Outcome]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Start the bot on `model` (its own data folder and ports; the knowledge base's vectors from
    `vector_dir` if given), talk every dialogue, then stop it; `summary` makes the report (default:
    whole dialogues right, `summarise`)."""
    from bot.runtime.launch import launch, stop

    env = {"PATRONBOT_VECTOR_DIR": str(vector_dir)} if vector_dir is not None else None
    bot = launch(workdir=workdir, model=model, env=env)
    try:
        crm_url = f"sqlite:///{bot.data_dir / 'patronbot.db'}"
        outcomes = run_dialogues(webhook=bot.webhook, crm_url=crm_url, dialogues=dialogues)
        return (summary or summarise)(outcomes)
    finally:
        stop(bot)
