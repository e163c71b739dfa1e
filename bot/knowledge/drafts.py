"""A knowledge-base entry as a librarian writes it in the console: its texts per language and answers
per patron type, checked against the limits, and its version (a digest of its content in the file)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.knowledge.entries import _TOPIC_IDS, PATRON_TYPES
from bot.language import LANGUAGES

TOPICS = _TOPIC_IDS
ENTRY_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # also the console's route parameter
# Words the console's addresses use beside entry ids (/knowledge/new, /api/knowledge/try).
RESERVED_IDS = ("new", "proposals", "try")
LONGEST_QUESTION = 300
LONGEST_ALTERNATIVE = 200
MOST_ALTERNATIVES = 100
LONGEST_ANSWER = 2000


class EditError(Exception):
    """An edit the knowledge base cannot take; the message says what is wrong (and the limit)."""


class EntryNotFoundError(EditError):
    """No entry has that id."""


class EntryExistsError(EditError):
    """A new entry's id is taken (by a retired entry too)."""


@dataclass(frozen=True)
class LanguageText:
    """An entry in one language: its question, the other ways patrons ask it, and the answer."""

    question: str
    answer: str
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class EntryDraft:
    """An entry as a librarian writes it: texts per language, answers per patron type and language."""

    id: str
    topic: str | None
    texts: dict[str, LanguageText]
    audience: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredEntry:
    """An entry as the file holds it now, with its version (a digest of its content)."""

    entry: EntryDraft
    version: str
    retired: bool

    def as_json(self) -> dict[str, Any]:
        entry = self.entry
        texts = {
            lang: {"question": text.question, "alternatives": list(text.alternatives), "answer": text.answer}
            for lang, text in entry.texts.items()
        }
        return {
            "id": entry.id,
            "topic": entry.topic,
            **texts,
            "audience": entry.audience,
            "retired": self.retired,
            "version": self.version,
        }


class EditConflictError(EditError):
    """The entry changed since the editor loaded it: nothing was written; `current` is what it is now."""

    def __init__(self, current: StoredEntry) -> None:
        super().__init__(
            f"entry {current.entry.id!r} was saved by someone else after you opened it: "
            "compare with their version and save again"
        )
        self.current = current


def plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(key): plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [plain(value) for value in node]
    return node if node is None or isinstance(node, bool | int | float) else str(node)


def entry_version(item: Mapping[str, Any]) -> str:
    """A short SHA-256 of the entry's content (key order and formatting aside)."""
    canonical = json.dumps(plain(item), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def stored_entry(item: Mapping[str, Any]) -> StoredEntry:
    """An entry of the file (as ruamel.yaml or PyYAML read it), with its version."""
    texts: dict[str, LanguageText] = {}
    for lang in LANGUAGES:
        block = item.get(lang)
        if isinstance(block, Mapping):
            texts[lang] = LanguageText(
                question=str(block.get("question") or ""),
                answer=str(block.get("answer") or ""),
                alternatives=tuple(str(a) for a in block.get("alternatives") or ()),
            )
    audience = item.get("audience") if isinstance(item.get("audience"), Mapping) else {}
    draft = EntryDraft(
        id=str(item.get("id") or ""),
        topic=str(item["topic"]) if item.get("topic") is not None else None,
        texts=texts,
        audience={
            str(kind): {str(lang): str(text) for lang, text in answers.items()}
            for kind, answers in (audience or {}).items()
            if isinstance(answers, Mapping)
        },
    )
    return StoredEntry(entry=draft, version=entry_version(item), retired=item.get("retired") is True)


def _writable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _text(data: Mapping[str, Any], name: str, where: str, longest: int, required: bool = True) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise EditError(f"{where}{name} must be text")
    value = value.replace("\r\n", "\n").strip()
    if not value.isprintable() and not _writable(value):
        raise EditError(f"{where}{name} holds characters that cannot be written")
    if required and not value:
        raise EditError(f"{where}{name} must not be empty")
    if len(value) > longest:
        raise EditError(f"{where}{name} has {len(value)} characters: at most {longest}")
    return value


def _language_text(lang: str, block: Any) -> LanguageText:
    if not isinstance(block, Mapping):
        raise EditError(f"{lang} must be an object with question, alternatives and answer")
    raw = block.get("alternatives") or []
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise EditError(f"{lang}.alternatives must be a list of texts")
    alternatives = [" ".join(a.split()) for a in raw if a.strip()]
    if not all(map(_writable, alternatives)):
        raise EditError(f"{lang}: an alternative holds characters that cannot be written")
    if len(alternatives) > MOST_ALTERNATIVES:
        raise EditError(f"{lang}: at most {MOST_ALTERNATIVES} alternatives ({len(alternatives)} given)")
    if any(len(alternative) > LONGEST_ALTERNATIVE for alternative in alternatives):
        raise EditError(f"{lang}: an alternative has at most {LONGEST_ALTERNATIVE} characters")
    return LanguageText(
        question=_text(block, "question", f"{lang}.", LONGEST_QUESTION),
        answer=_text(block, "answer", f"{lang}.", LONGEST_ANSWER),
        alternatives=tuple(dict.fromkeys(alternatives)),  # each once, in the order given
    )


def _audience(given: Any, languages: list[str]) -> dict[str, dict[str, str]]:
    if not isinstance(given, Mapping):
        raise EditError("audience must be an object of patron types")
    audience: dict[str, dict[str, str]] = {}
    for kind, answers in given.items():
        if kind not in PATRON_TYPES:
            raise EditError(f"audience: patron types are {', '.join(PATRON_TYPES)}")
        if not isinstance(answers, Mapping):
            raise EditError(f"audience.{kind} must be an object of answers by language")
        texts = {
            lang: _text(answers, lang, f"audience.{kind}.", LONGEST_ANSWER, required=False)
            for lang in languages
        }
        if any(texts.values()):
            audience[kind] = {lang: text for lang, text in texts.items() if text}
    return audience


def draft_from(data: Mapping[str, Any], *, entry_id: str) -> EntryDraft:
    """A draft from the editor's fields (the API's JSON shape): checked, with the limit in each error.
    A language left wholly blank is one the entry is not in."""
    if not ENTRY_ID.fullmatch(entry_id):
        raise EditError(
            "the id must be 1-64 lowercase letters, digits and hyphens, starting with a letter or digit"
        )
    topic = data.get("topic") or None
    if topic is not None and topic not in TOPICS:
        raise EditError(f"topic must be one of {', '.join(TOPICS)}")
    texts: dict[str, LanguageText] = {
        lang: _language_text(lang, data[lang])
        for lang in LANGUAGES
        if data.get(lang) is not None
        and not (isinstance(data[lang], Mapping) and not any(data[lang].values()))
    }
    if not texts:
        raise EditError("an entry needs a question and an answer in Chinese or English")
    return EntryDraft(
        id=entry_id, topic=topic, texts=texts, audience=_audience(data.get("audience") or {}, list(texts))
    )
