"""Campaign messages: the fields a template may name, rendering, the opt-out line, channel limits, checks."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from bot.crm.models import Patron
from bot.outreach.spec import Spec, SpecError, check_fields

# The languages a campaign message is written in, in the order used when the patron's is unknown:
# Chinese first, as most of the library's patrons write it.
MESSAGE_LANGUAGES = ("zh", "en")

# The patron fields a template may name, each with what it holds. Only these, so a template cannot
# reach into anything else of the patron's (and nothing sensitive: no ids, channels or consents).
TEMPLATE_FIELDS: dict[str, str] = {
    "display_name": "the name the patron gave, or “reader” / “读者” when they gave none",
    "patron_type": "what the patron said they are, as a word in the message's language"
    " (“postgraduate” / “研究生”), or “reader” / “读者”",
}
# What a field says when the patron did not tell it.
FALLBACKS: dict[str, dict[str, str]] = {
    "display_name": {"en": "reader", "zh": "读者"},
    "patron_type": {"en": "reader", "zh": "读者"},
}
PATRON_TYPE_WORDS: dict[str, dict[str, str]] = {
    "undergraduate": {"en": "undergraduate", "zh": "本科生"},
    "postgraduate": {"en": "postgraduate", "zh": "研究生"},
    "faculty": {"en": "faculty member", "zh": "老师"},
    "staff": {"en": "staff member", "zh": "教职工"},
    "public": {"en": "visitor", "zh": "校外读者"},
}
# The longest value each field plausibly takes, for checking a message against the channels' limits
# before it is sent: a Telegram name is at most 64 + 64 characters, a WeChat nickname far less; a
# Chinese character is 3 bytes of UTF-8, which is what WeChat counts.
LONGEST_NAME = "名" * 129

OPT_OUT_HINTS = {
    "en": "Reply STOP to stop these messages, or PAUSE to pause them for 30 days.",
    "zh": "回复“退订”不再接收此类消息，回复“暂停推送”暂停 30 天。",
}

# The most a channel carries in one message: Telegram 4096 characters; WeChat's customer-service text
# 2048 bytes of UTF-8; the widget and the REST channel take Telegram's, so a message fits everywhere.
LIMITS: dict[str, tuple[int, str]] = {
    "telegram": (4096, "characters"),
    "wechat": (2048, "bytes"),
    "webchat": (4096, "characters"),
    "rest": (4096, "characters"),
}


MAX_BUTTONS = 3
BUTTON_FIELDS = {"title", "payload"}
# Telegram shows at most 64 characters of a button's title, and carries at most 64 bytes of its payload.
MAX_TITLE_CHARS = 64
MAX_PAYLOAD_BYTES = 64
# A button's payload is an intent in Rasa's shortcut syntax: "/affirm", '/give_feedback{"csat": "5"}'.
_PAYLOAD = re.compile(r"/[A-Za-z_]\w*(?P<entities>\{.*\})?", re.DOTALL)


class TemplateError(ValueError):
    """A message template that cannot be rendered safely: the message says what to write instead."""


def measure(text: str, channel: str) -> int:
    """The length of `text` as `channel` counts it (characters, or bytes of UTF-8)."""
    _limit, unit = LIMITS[channel]
    return len(text.encode("utf-8")) if unit == "bytes" else len(text)


def fits(text: str, channel: str) -> bool:
    """Whether `text` fits in one message on `channel`."""
    return measure(text, channel) <= LIMITS[channel][0]


def template_fields(template: str) -> list[str]:
    """The fields a template names, checked: plain `{name}` of TEMPLATE_FIELDS only, never attribute or
    index access (`{x.y}`, `{x[0]}`), conversions or format specs, which could reach into or reshape a
    value. `{{` and `}}` are literal braces."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise TemplateError(f"braces do not pair ({error}); write {{{{ and }}}} for literal braces") from None
    names: list[str] = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise TemplateError("a field must be named, like {display_name}")
        if "." in name or "[" in name:
            raise TemplateError(
                f"{{{name}}} reaches into a field: name the field alone, like {{display_name}}"
            )
        if spec or conversion:
            raise TemplateError(f"write {{{name}}} alone, without a conversion or format (!r, :>10)")
        if name not in TEMPLATE_FIELDS:
            known = ", ".join(f"{{{known}}}" for known in TEMPLATE_FIELDS)
            raise TemplateError(f"{{{name}}} is not a field a message can name (known: {known})")
        names.append(name)
    return names


def message_language(campaign_message: Mapping[str, str], language: str | None) -> str:
    """The language a patron gets: theirs when the campaign has it, else the other one."""
    wanted = (language or "").strip().lower().replace("_", "-").split("-")[0]
    if wanted in campaign_message:
        return wanted
    for other in MESSAGE_LANGUAGES:
        if other in campaign_message:
            return other
    raise TemplateError("the campaign has no message in any language")


def patron_fields(patron: Patron) -> dict[str, str]:
    """What a patron told that a template may name (raw: `render` words it in the message's language)."""
    fields: dict[str, str] = {}
    if patron.display_name and str(patron.display_name).strip():
        fields["display_name"] = str(patron.display_name).strip()
    if patron.patron_type:
        fields["patron_type"] = str(patron.patron_type)
    return fields


def _values(fields: Mapping[str, str], language: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in TEMPLATE_FIELDS:
        value = (fields.get(name) or "").strip()
        if name == "patron_type" and value in PATRON_TYPE_WORDS:
            value = PATRON_TYPE_WORDS[value][language]
        values[name] = value or FALLBACKS[name][language]
    return values


def render(
    *, campaign_message: dict[str, str], language: str | None, fields: Mapping[str, str]
) -> tuple[str, str]:
    """(the language used, the text) of a campaign's message for a patron with `fields`
    (`patron_fields`): missing fields read "reader" / "读者"; a patron type becomes a word."""
    used = message_language(campaign_message, language)
    template = campaign_message[used]
    template_fields(template)  # refuses what validation should already have refused
    return used, template.format_map(_values(fields, used))


def with_opt_out(text: str, language: str) -> str:
    """The message with its one-line opt-out hint, in the patron's language, on a line of its own."""
    hint = OPT_OUT_HINTS["zh" if language == "zh" else "en"]
    return f"{text.rstrip()}\n\n{hint}"


def campaign_text(
    *, campaign_message: dict[str, str], language: str | None, fields: Mapping[str, str]
) -> tuple[str, str]:
    """(language, text) as the patron receives it: rendered, with the opt-out hint."""
    used, text = render(campaign_message=campaign_message, language=language, fields=fields)
    return used, with_opt_out(text, used)


def button_titles(buttons: Sequence[Mapping[str, Any]] | None, language: str) -> list[dict[str, str]]:
    """A campaign's buttons as Rasa buttons ({"title", "payload"}) with titles in `language` (or the
    other one, when a title lacks it)."""
    result: list[dict[str, str]] = []
    for button in buttons or []:
        titles = button.get("title") or {}
        if isinstance(titles, str):
            title = titles
        else:
            title = titles.get(language) or next(
                (titles[other] for other in MESSAGE_LANGUAGES if titles.get(other)), ""
            )
        result.append({"title": str(title), "payload": str(button.get("payload") or "")})
    return result


def as_shown(text: str, titles: Sequence[str]) -> str:
    """A message as the most verbose channel shows it: WeChat writes each button as a numbered line."""
    lines = [f"{number}. {title}" for number, title in enumerate(titles, start=1)]
    return "\n".join([text, *lines])


def longest_text(template: str, language: str, titles: Sequence[str] = ()) -> str:
    """The longest message a template plausibly becomes, as shown with its buttons and opt-out hint:
    what is checked against the channels' limits."""
    types = [words[language] for words in PATRON_TYPE_WORDS.values()] + [FALLBACKS["patron_type"][language]]
    longest = {"display_name": LONGEST_NAME, "patron_type": max(types, key=lambda word: len(word.encode()))}
    filled = template.format_map(longest)
    return as_shown(with_opt_out(filled, language), titles)


# --- checking a campaign file's message and buttons (bot/outreach/campaigns.py reads the rest) ---


def _text(spec: Spec, value: Any, at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise spec.error(at, "expected a non-empty text")
    return value.strip()


def parse_message(spec: Spec, value: Any) -> dict[str, str]:
    """A campaign file's `message:`, checked: en and/or zh, each a template of TEMPLATE_FIELDS."""
    if value is None:
        # Absent, it has no line of its own: named at the top of the file, where it belongs.
        raise SpecError(
            "missing: the message to send, per language (en:, zh:)", path=spec.path, line=1, field="message"
        )
    if not isinstance(value, Mapping) or not value:
        raise spec.error("message", "expected the message per language: en: ..., zh: ...")
    message: dict[str, str] = {}
    for language, template in value.items():
        at = f"message.{language}"
        if language not in MESSAGE_LANGUAGES:
            raise spec.error(
                at, f"unknown language (a message is written in {' and '.join(MESSAGE_LANGUAGES)})"
            )
        text = _text(spec, template, at)
        try:
            template_fields(text)
        except TemplateError as error:
            raise spec.error(at, str(error)) from None
        message[str(language)] = text
    return message


def _button_title(spec: Spec, titles: Any, at: str, languages: list[str]) -> dict[str, str]:
    if not isinstance(titles, Mapping) or not titles:
        raise spec.error(at, "expected the title per language: {en: ..., zh: ...}")
    title: dict[str, str] = {}
    for language, text in titles.items():
        if language not in MESSAGE_LANGUAGES:
            raise spec.error(f"{at}.{language}", "unknown language (en or zh)")
        title[str(language)] = _text(spec, text, f"{at}.{language}")
        if len(title[str(language)]) > MAX_TITLE_CHARS:
            raise spec.error(f"{at}.{language}", f"longer than {MAX_TITLE_CHARS} characters")
    for language in languages:
        if language not in title:
            raise spec.error(at, f"no {language} title, though the message has {language}")
    return title


def _button_payload(spec: Spec, payload: Any, at: str) -> str:
    match = _PAYLOAD.fullmatch(payload.strip()) if isinstance(payload, str) else None
    if match is None:
        raise spec.error(at, 'expected an intent, like /affirm or /give_feedback{"csat": "5"}')
    if match["entities"] is not None:
        try:
            entities = json.loads(match["entities"])
        except ValueError:
            entities = None
        if not isinstance(entities, dict):
            raise spec.error(at, "the entities after the intent must be a JSON object")
    if len(match[0].encode("utf-8")) > MAX_PAYLOAD_BYTES:
        raise spec.error(at, f"longer than {MAX_PAYLOAD_BYTES} bytes (Telegram's limit)")
    return match[0]


def parse_buttons(spec: Spec, value: Any, languages: list[str]) -> list[dict[str, Any]]:
    """A campaign file's `buttons:`, checked; each title in every language of the message."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise spec.error(
            "buttons", "expected a list of buttons (- title: {en: ..., zh: ...}, payload: /intent)"
        )
    if len(value) > MAX_BUTTONS:
        raise spec.error("buttons", f"at most {MAX_BUTTONS} buttons, not {len(value)}")
    buttons: list[dict[str, Any]] = []
    for position, button in enumerate(value):
        at = f"buttons.{position}"
        if not isinstance(button, Mapping):
            raise spec.error(at, "expected a button: title: {en: ..., zh: ...} and payload: /intent")
        check_fields(spec, button, at=at, allowed=BUTTON_FIELDS)
        title = _button_title(spec, button.get("title"), f"{at}.title", languages)
        buttons.append(
            {"title": title, "payload": _button_payload(spec, button.get("payload"), f"{at}.payload")}
        )
    return buttons


def check_lengths(spec: Spec, message: dict[str, str], buttons: list[dict[str, Any]]) -> None:
    """Refuse a message that, with the longest plausible fields, its buttons and the opt-out line, is
    over any channel's limit: a patron may be reached on any channel they use."""
    for language, template in message.items():
        titles = [button["title"].get(language, "") for button in buttons]
        text = longest_text(template, language, titles)
        for channel, (limit, unit) in LIMITS.items():
            length = measure(text, channel)
            if length > limit:
                raise spec.error(
                    f"message.{language}",
                    f"too long for {channel}: up to {length} {unit} with the longest names, the buttons and"
                    f" the opt-out line, over its limit of {limit}",
                )
