"""Editing the knowledge base file (the console's editor): entries read and written round-trip, so
librarians' comments and order survive; a stale edit is refused by the entry's version; every write is
checked by the bot's own loader and replaces the file atomically, which publishes it to the bot."""

from __future__ import annotations

import fcntl
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from bot.knowledge.drafts import (
    RESERVED_IDS,
    EditConflictError,
    EditError,
    EntryDraft,
    EntryExistsError,
    EntryNotFoundError,
    StoredEntry,
    draft_from,
    stored_entry,
)
from bot.knowledge.entries import PATRON_TYPES, KnowledgeError, load_entries
from bot.language import LANGUAGES

__all__ = [
    "EditConflictError",
    "EditError",
    "EntryExistsError",
    "EntryNotFoundError",
    "add_alternative",
    "create_entry",
    "get_entry",
    "list_entries",
    "restore_entry",
    "retire_entry",
    "update_entry",
]

T = TypeVar("T")


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True  # type: ignore[assignment]
    yaml.width = 4096  # type: ignore[assignment]  # never fold a long answer onto several lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the knowledge base's lock file: one read-check-write at a time, across
    console processes on this machine."""
    descriptor = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _read(path: Path, text: str | None = None) -> CommentedMap:
    try:
        document = _yaml().load(path.read_text(encoding="utf-8") if text is None else text)
    except OSError as error:
        raise EditError(f"{path}: cannot read the knowledge base ({error.strerror})") from None
    except YAMLError as error:
        raise EditError(f"{path.name}: not valid YAML ({error})") from None
    if not isinstance(document, CommentedMap) or not isinstance(document.get("entries"), CommentedSeq):
        raise EditError(f"{path}: expected a mapping with a list of 'entries'")
    return document


def _write(path: Path, document: CommentedMap, original: str) -> None:
    """Check the new file with the bot's loader, then put it in place at once (readers see the old
    file or the new one, never half of one); a refused edit leaves the file as it was."""
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    if buffer.getvalue() == original:
        return  # nothing changed: nothing to publish
    before = path.stat()
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        try:
            load_entries(temporary)
        except KnowledgeError as error:
            raise EditError(str(error).replace(str(temporary), path.name)) from None
        os.chmod(temporary, before.st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    # The bot notices an edit by the file's time: make sure it moved, even within the clock's tick.
    after = path.stat().st_mtime_ns
    if after <= before.st_mtime_ns:
        os.utime(path, ns=(before.st_mtime_ns + 1, before.st_mtime_ns + 1))


def _edit(path: Path, change: Callable[[CommentedSeq], T]) -> T:
    try:
        with _locked(path):
            original = path.read_text(encoding="utf-8")
            document = _read(path, original)
            result = change(document["entries"])
            _write(path, document, original)
            return result
    except OSError as error:
        raise EditError(f"{path}: cannot write the knowledge base ({error.strerror})") from None


def _find(entries: CommentedSeq, entry_id: str) -> CommentedMap:
    for item in entries:
        if isinstance(item, CommentedMap) and str(item.get("id") or "").strip() == entry_id:
            return item
    raise EntryNotFoundError(f"no knowledge base entry {entry_id!r}")


# The entries last read, by file: reading the file round-trip takes a while, and pages read it often.
_READ: dict[Path, tuple[tuple[int, int, int], list[StoredEntry]]] = {}


def list_entries(*, path: Path) -> list[StoredEntry]:
    """Every entry in the file's order, retired ones too (marked), each with its version."""
    try:
        status = path.stat()
    except OSError as error:
        raise EditError(f"{path}: cannot read the knowledge base ({error.strerror})") from None
    stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
    kept = _READ.get(path)
    if kept is not None and kept[0] == stamp:
        return list(kept[1])
    entries = [stored_entry(item) for item in _read(path)["entries"] if isinstance(item, Mapping)]
    _READ[path] = (stamp, entries)
    return list(entries)


def get_entry(*, path: Path, entry_id: str) -> StoredEntry:
    for stored in list_entries(path=path):
        if stored.entry.id == entry_id:
            return stored
    raise EntryNotFoundError(f"no knowledge base entry {entry_id!r}")


def _tail(node: Any) -> tuple[Any, Any] | None:
    """The innermost last (container, key) of a node: where the comment that follows it is kept."""
    found = None
    while isinstance(node, CommentedMap | CommentedSeq) and node:
        key = list(node)[-1] if isinstance(node, CommentedMap) else len(node) - 1
        found, node = (node, key), node[key]
        if isinstance(node, CommentedMap | CommentedSeq) and node.fa.flow_style():
            break  # a comment inside {...} would land before its closing brace
    return found


def _take_tail_comment(item: CommentedMap) -> Any:
    """Detach the comment that follows the entry (a blank line, the next topic's heading): ruamel.yaml
    keeps it on the entry's last value, which an edit may move, replace or follow with a new key."""
    tail = _tail(item)
    if tail is None or tail[1] not in tail[0].ca.items:
        return None
    slots = tail[0].ca.items[tail[1]]
    slot = 2 if isinstance(tail[0], CommentedMap) else 0
    token, slots[slot] = slots[slot], None
    return token


def _put_tail_comment(item: CommentedMap, token: Any) -> None:
    tail = _tail(item)
    if token is None or tail is None:
        return
    container, key = tail
    slots = container.ca.items.setdefault(key, [None, None, None, None])
    slots[2 if isinstance(container, CommentedMap) else 0] = token


# The bot's loader reads the file with PyYAML (YAML 1.1), ruamel.yaml writes YAML 1.2: a text such as
# "yes", "off" or "9:30" that 1.1 reads as something else than text is written in quotes.
_RESOLVER = yaml.resolver.Resolver()
_TEXT_TAG = "tag:yaml.org,2002:str"


def _string(text: str) -> str:
    tag = _RESOLVER.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    return text if tag == _TEXT_TAG else DoubleQuotedScalarString(text)


def _set_text(block: CommentedMap, key: str, text: str) -> None:
    if str(block.get(key) or "").strip() != text:  # unchanged texts keep their quoting
        block[key] = _string(text)


def _apply_alternatives(block: CommentedMap, wanted: list[str]) -> None:
    old = [str(a).strip() for a in block.get("alternatives") or []]
    if old == wanted:
        return
    if not wanted:
        block.pop("alternatives", None)
    elif old and wanted[: len(old)] == old:  # only added: the list and its comments stay
        block["alternatives"].extend(_string(text) for text in wanted[len(old) :])
    elif "alternatives" in block:
        block["alternatives"] = CommentedSeq(_string(text) for text in wanted)
    else:  # between the question and the answer, as the file writes them
        keys = list(block)
        block.insert(
            keys.index("answer") if "answer" in keys else len(keys),
            "alternatives",
            CommentedSeq(_string(text) for text in wanted),
        )


def _apply_audience(item: CommentedMap, wanted: dict[str, dict[str, str]]) -> None:
    if not wanted:
        item.pop("audience", None)
        return
    audience = item.get("audience")
    if not isinstance(audience, CommentedMap):
        audience = item["audience"] = CommentedMap()
    for kind in [kind for kind in audience if kind not in wanted]:
        del audience[kind]
    for kind in PATRON_TYPES:
        if kind not in wanted:
            continue
        answers = audience.get(kind)
        if not isinstance(answers, CommentedMap):
            answers = audience[kind] = CommentedMap()
            answers.fa.set_flow_style()  # one line per patron type, as the file writes them
        for lang in [lang for lang in answers if lang not in wanted[kind]]:
            del answers[lang]
        for lang, text in wanted[kind].items():
            _set_text(answers, lang, text)


def _apply(item: CommentedMap, draft: EntryDraft) -> None:
    """Write a draft into the file's entry, touching only what changed, so unchanged texts keep their
    quoting and comments stay where they were."""
    comment = _take_tail_comment(item)
    if draft.topic is None:
        item.pop("topic", None)
    elif item.get("topic") != draft.topic:
        item["topic"] = draft.topic
    for lang in LANGUAGES:
        text = draft.texts.get(lang)
        if text is None:
            item.pop(lang, None)
            continue
        block = item.get(lang)
        if not isinstance(block, CommentedMap):
            block = CommentedMap()
            keys = list(item)
            later = [key for key in LANGUAGES[LANGUAGES.index(lang) + 1 :] if key in item]
            item.insert(keys.index(later[0]) if later else len(keys), lang, block)
        _set_text(block, "question", text.question)
        _apply_alternatives(block, list(text.alternatives))
        _set_text(block, "answer", text.answer)
    _apply_audience(item, draft.audience)
    _put_tail_comment(item, comment)


def create_entry(*, path: Path, draft: EntryDraft) -> StoredEntry:
    """A new entry at the end of the file; its id must not be taken, by a retired entry either."""

    if draft.id in RESERVED_IDS:
        raise EntryExistsError(f"{draft.id!r} is a word the console uses in its addresses: choose another id")

    def change(entries: CommentedSeq) -> StoredEntry:
        try:
            _find(entries, draft.id)
        except EntryNotFoundError:
            pass
        else:
            raise EntryExistsError(
                f"there is already an entry {draft.id!r} (perhaps retired): choose another id"
            )
        item = CommentedMap()
        item["id"] = _string(draft.id)
        _apply(item, draft)
        item.move_to_end("id", last=False)
        entries.append(item)
        blank = CommentToken("\n", CommentMark(0), None)
        entries.ca.items[len(entries) - 1] = [None, [blank], None, None]  # a blank line before it
        return stored_entry(item)

    return _edit(path, change)


def update_entry(*, path: Path, draft: EntryDraft, base_version: str) -> StoredEntry:
    """Save a librarian's edit of an entry they loaded at `base_version`; if it has changed since,
    EditConflictError with the entry as it is now, and nothing is written."""

    def change(entries: CommentedSeq) -> StoredEntry:
        item = _find(entries, draft.id)
        current = stored_entry(item)
        if current.version != base_version:
            raise EditConflictError(current)
        _apply(item, draft)
        return stored_entry(item)

    return _edit(path, change)


def _set_retired(path: Path, entry_id: str, retired: bool) -> StoredEntry:
    def change(entries: CommentedSeq) -> StoredEntry:
        item = _find(entries, entry_id)
        comment = _take_tail_comment(item)
        if retired:
            item["retired"] = True
        else:
            item.pop("retired", None)
        _put_tail_comment(item, comment)
        return stored_entry(item)

    return _edit(path, change)


def retire_entry(*, path: Path, entry_id: str) -> StoredEntry:
    """Keep the entry in the file but stop the bot using it (`retired: true`)."""
    return _set_retired(path, entry_id, True)


def restore_entry(*, path: Path, entry_id: str) -> StoredEntry:
    """Put a retired entry back in use."""
    return _set_retired(path, entry_id, False)


def add_alternative(*, path: Path, entry_id: str, lang: str, text: str) -> StoredEntry:
    """One more way patrons ask an entry's question, in `lang` (a reviewed proposal)."""
    if lang not in LANGUAGES:
        raise EditError(f"the language must be one of {', '.join(LANGUAGES)}")

    def change(entries: CommentedSeq) -> StoredEntry:
        stored = stored_entry(_find(entries, entry_id))
        texts = dict(stored.entry.texts)
        if lang not in texts:
            raise EditError(f"entry {entry_id!r} has no {lang} question yet: add it in the editor first")
        wanted = [*texts[lang].alternatives, text]
        block = {"question": texts[lang].question, "answer": texts[lang].answer, "alternatives": wanted}
        checked = draft_from({lang: block}, entry_id=entry_id).texts[lang]
        texts[lang] = checked
        item = _find(entries, entry_id)
        _apply(
            item,
            EntryDraft(id=entry_id, topic=stored.entry.topic, texts=texts, audience=stored.entry.audience),
        )
        return stored_entry(item)

    return _edit(path, change)
