"""Multi-turn cases: a follow-up, an added detail or a new topic, scored on the conversation's last turn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bot.settings import PROJECT_ROOT
from nlu.dialogues import Dialogue, DialogueFileError, Outcome, Turn, tally

FOLLOWUPS = PROJECT_ROOT / "tests" / "followups"
KINDS = ("follow_up", "remembered", "detail", "new_topic", "acknowledgement", "no_context")
PATRON_TYPES = ("undergraduate", "postgraduate", "faculty", "staff", "public")


def load_cases(paths: Sequence[Path] | None = None) -> list[Dialogue]:
    """The cases of the given files, or of tests/followups/*.yml (the test set; dev/ is for tuning).
    Each file is one language, named by it (en.yml, zh.yml); a case is a dialogue whose last turn
    carries the expectations."""
    files = list(paths) if paths else sorted(FOLLOWUPS.glob("*.yml"))
    cases = []
    for path in files:
        language = path.stem
        if language not in ("zh", "en"):
            raise DialogueFileError(f"{path.name}: a file of cases is named after its language (zh or en)")
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for index, item in enumerate(raw.get("cases") or []):
            cases.append(_case(item, language=language, where=f"{path.name}: case {index + 1}"))
    return cases


def _case(item: Any, *, language: str, where: str) -> Dialogue:
    if not isinstance(item, dict) or not item.get("name") or not item.get("turns"):
        raise DialogueFileError(f"{where}: needs a name, a kind and turns")
    kind = str(item.get("kind"))
    said = [str(text) for text in item["turns"]]
    if kind not in KINDS or not 1 <= len(said) <= 4:
        raise DialogueFileError(f"{where}: kind must be one of {KINDS}, with one to four turns")
    if item.get("for") is not None and (item.get("for") not in PATRON_TYPES or not item.get("answer")):
        raise DialogueFileError(f"{where}: `for` names a patron type, with `answer`")
    if not any(item.get(key) for key in ("answer", "expect", "not_answer", "forbid")):
        raise DialogueFileError(f"{where}: says nothing the last turn must do")
    last = Turn(
        say=said[-1],
        expect=tuple(item.get("expect") or ()),
        forbid=tuple(item.get("forbid") or ()),
        answer=item.get("answer"),
        answer_for=item.get("for"),
        not_answer=item.get("not_answer"),
    )
    turns = (*(Turn(say=text) for text in said[:-1]), last)
    records = item.get("records")
    return Dialogue(
        name=str(item["name"]),
        language=language,
        kind=kind,
        turns=turns,
        records=dict(records) if isinstance(records, dict) else None,
    )


def summarise_last_turns(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Last-turn accuracy overall, per language, and per language and kind, and the cases it missed."""

    def share(selected: list[Outcome]) -> dict[str, Any]:
        return tally(selected, right=lambda outcome: outcome.last_turn_right, label="accuracy")

    return {
        "overall": share(list(outcomes)),
        "by_language": {
            language: share([o for o in outcomes if o.dialogue.language == language])
            for language in ("zh", "en")
        },
        "by_kind": {
            f"{language} {kind}": share(selected)
            for language in ("zh", "en")
            for kind in KINDS
            if (
                selected := [
                    o for o in outcomes if o.dialogue.language == language and o.dialogue.kind == kind
                ]
            )
        },
        "wrong": [
            {
                "case": o.dialogue.name,
                "language": o.dialogue.language,
                "kind": o.dialogue.kind,
                "turns": [turn.say for turn in o.dialogue.turns],
                "replies": o.replies[-1] if o.replies else [],
                "problems": o.problems,
            }
            for o in outcomes
            if not o.last_turn_right
        ],
    }
