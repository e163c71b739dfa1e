"""The knowledge base's entries: questions and answers per language, from knowledge/faq.yml or JSONL."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.language import LANGUAGES

PATRON_TYPES = ("undergraduate", "postgraduate", "faculty", "staff", "public")
_TOPIC_IDS = (
    "card_account",
    "borrowing",
    "renewal",
    "holds",
    "returns",
    "fines_fees",
    "interlibrary_loan",
    "spaces",
    "tech_services",
    "resources",
    "research_help",
    "events",
    "location_contact",
    "hours",
)


class KnowledgeError(Exception):
    """The knowledge base file is missing or malformed; the message names the entry and key."""


@dataclass(frozen=True)
class Entry:
    """One question and its answer in one language."""

    id: str
    lang: str
    question: str
    answer: str
    alternatives: tuple[str, ...] = ()
    topic: str | None = None
    audience: dict[str, str] = field(default_factory=dict)

    def answer_for(self, patron_type: str | None) -> str:
        """The answer for this kind of patron, where the library gave one, else the general one."""
        return self.audience.get(patron_type or "", self.answer)

    def texts(self) -> list[str]:
        """What a query is compared with: the question, each alternative, and question with answer."""
        return [self.question, *self.alternatives, f"{self.question} {self.answer}"]


def load_entries(path: Path) -> list[Entry]:
    """Entries from the project's YAML file or from a JSONL file (one entry per line, per language)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise KnowledgeError(f"{path}: cannot read the knowledge base ({error.strerror})") from None
    if path.suffix == ".jsonl":
        return _from_jsonl(text, source=str(path))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KnowledgeError(f"{path}: not valid YAML ({error})") from None
    return _from_yaml(raw, source=str(path))


def _from_jsonl(text: str, *, source: str) -> list[Entry]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            entries.append(
                Entry(
                    id=str(item["id"]),
                    lang=str(item.get("lang") or "en"),
                    question=str(item["question"]),
                    answer=str(item["answer"]),
                    alternatives=tuple(str(a) for a in item.get("alternatives") or ()),
                    topic=item.get("topic"),
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise KnowledgeError(f"{source}:{number}: not a knowledge base entry ({error})") from None
    return entries


def _is_retired(item: dict[str, Any], where: str) -> bool:
    retired = item.get("retired", False)
    if not isinstance(retired, bool):
        raise KnowledgeError(f"{where}: 'retired' must be true or false")
    return retired


def _from_yaml(raw: Any, *, source: str) -> list[Entry]:
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise KnowledgeError(f"{source}: expected a mapping with a list of 'entries'")
    entries: list[Entry] = []
    seen: set[str] = set()
    for index, item in enumerate(raw["entries"]):
        where = f"{source}: entries[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"].strip():
            raise KnowledgeError(f"{where} needs an 'id'")
        entry_id = item["id"].strip()
        where = f"{source}: entry '{entry_id}'"
        if entry_id in seen:
            raise KnowledgeError(f"{where} appears twice")
        seen.add(entry_id)
        if _is_retired(item, where):  # kept in the file (the console can restore it), not used
            continue
        topic = item.get("topic")
        if topic is not None and topic not in _TOPIC_IDS:
            raise KnowledgeError(f"{where}: unknown topic {topic!r}")
        audience = item.get("audience") or {}
        if not isinstance(audience, dict) or any(key not in PATRON_TYPES for key in audience):
            raise KnowledgeError(f"{where}: 'audience' keys must be among {', '.join(PATRON_TYPES)}")
        languages = [lang for lang in LANGUAGES if lang in item]
        if not languages:
            raise KnowledgeError(f"{where} needs a 'zh' or 'en' block")
        for lang in languages:
            block = item[lang]
            if not isinstance(block, dict) or not str(block.get("question") or "").strip():
                raise KnowledgeError(f"{where}: '{lang}' needs a 'question'")
            if not str(block.get("answer") or "").strip():
                raise KnowledgeError(f"{where}: '{lang}' needs an 'answer'")
            alternatives = block.get("alternatives") or []
            if not isinstance(alternatives, list):
                raise KnowledgeError(f"{where}: '{lang}.alternatives' must be a list")
            entries.append(
                Entry(
                    id=entry_id,
                    lang=lang,
                    question=str(block["question"]).strip(),
                    answer=str(block["answer"]).strip(),
                    alternatives=tuple(str(a).strip() for a in alternatives if str(a).strip()),
                    topic=topic,
                    audience={
                        kind: str(texts[lang]).strip()
                        for kind, texts in audience.items()
                        if isinstance(texts, dict) and texts.get(lang)
                    },
                )
            )
    return entries
