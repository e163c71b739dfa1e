"""A button's title typed instead of tapped: the patron means the button (channels without buttons, or
a patron who types "好的" or "No thanks" under a Yes / No question)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# Longer messages are never a button's title (a title is a few words; a "did you mean" question more).
MAX_TITLE_CHARS = 80
_NOT_A_WORD = re.compile(r"[^\w\u3400-\u9fff]+")
# Under the consent question (Yes / No, whose payloads subscribe and unsubscribe), a plain yes or no.
_YES = {"yes", "yeah", "yep", "sure", "ok", "okay", "please", "yes please", "please do", "好", "好的", "可以",
        "是", "是的", "行", "要", "嗯", "同意", "愿意"}  # fmt: skip
_NO = {"no", "nope", "no thanks", "no thank you", "not now", "dont", "不", "不用", "不用了", "不要", "不了",
       "算了", "不需要", "不同意", "不愿意"}  # fmt: skip
CONSENT_PAYLOADS = ("/subscribe", "/unsubscribe")


def _key(text: str) -> str:
    return _NOT_A_WORD.sub("", text.casefold())


def offered_buttons(events: Iterable[Any]) -> list[Mapping[str, Any]]:
    """The buttons of the bot's messages since the patron last wrote (events as Rasa's tracker holds
    them, objects or dicts): the ones a typed answer can mean."""
    buttons: list[Mapping[str, Any]] = []
    for event in reversed(list(events)):
        kind = event.get("event") if isinstance(event, dict) else getattr(event, "type_name", None)
        if kind == "user":
            break
        if kind == "bot":
            data = event.get("data") if isinstance(event, dict) else getattr(event, "data", None)
            found = (data or {}).get("buttons") if isinstance(data, dict) else None
            buttons = [*(found or []), *buttons]
    return [button for button in buttons if isinstance(button, Mapping)]


def last_written(events: Iterable[Any]) -> float | None:
    """When the patron last wrote (a Unix time), from the tracker's events; None if never."""
    for event in reversed(list(events)):
        kind = event.get("event") if isinstance(event, dict) else getattr(event, "type_name", None)
        if kind == "user":
            stamp = event.get("timestamp") if isinstance(event, dict) else getattr(event, "timestamp", None)
            return float(stamp) if isinstance(stamp, (int, float)) else None
    return None


def typed_payload(text: str, buttons: Iterable[Mapping[str, Any]]) -> str | None:
    """The payload of the offered button whose title the patron typed ("好的", "Yes, please", "Skip";
    either half of a bilingual "好的 / Yes"), or, under the consent question, of Yes or No for a plain
    yes or no ("no", "不用了"); None if the message is not one."""
    if len(text) > MAX_TITLE_CHARS:
        return None
    typed = _key(text)
    if not typed:
        return None
    offered = [(str(button.get("title") or ""), str(button.get("payload") or "")) for button in buttons]
    for title, payload in offered:
        if payload and typed in {_key(title), *(_key(half) for half in title.split(" / "))}:
            return payload
    payloads = [payload for _, payload in offered]
    if all(consent in payloads for consent in CONSENT_PAYLOADS):
        return _yes_or_no(text)
    return None


def _yes_or_no(text: str) -> str | None:
    """Under the consent question: a plain yes or no ("no", "不用了"), or a short answer that opens with
    one ("nope, not for me", "好的，谢谢")."""
    words = " ".join(text.casefold().replace("'", "").split()).strip(" .!。！,，")
    first = re.split(r"[\s,，.。!！]+", words, maxsplit=1)[0]
    short = len(words.split()) <= 5 and len(words) <= 20
    if words in _YES or (short and first in _YES):
        return CONSENT_PAYLOADS[0]
    if words in _NO or (short and first in _NO | {"nah"}):
        return CONSENT_PAYLOADS[1]
    return None
