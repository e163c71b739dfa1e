"""Segment files: their rules read and checked, with errors naming the file, line and field."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.crm.models import (
    CONSENT_PURPOSES,
    PATRON_TYPES,
    Segment,
)
from bot.language import LANGUAGES
from bot.outreach.spec import Spec, SpecError, check_fields, load_spec
from bot.thread import TOPIC_INTENTS

# The channels patrons reach the library on (the connectors' names).
CHANNELS = ("telegram", "wechat", "webchat", "rest")
# The topics of questions: the intents the bot answers (bot.thread.TOPIC_INTENTS), as the ingester
# stores them in interaction.intent for every patron message. Feedback.topic only exists for rated
# answers, so the intent is the one topic every question has.
TOPICS: tuple[str, ...] = tuple(sorted(TOPIC_INTENTS))
ESCALATION_CHOICES = ("open", "resolved", "any", "none")
RULES = (
    "patron_type",
    "language",
    "channel",
    "source",
    "time_zone",
    "active_within_days",
    "inactive_for_days",
    "conversations_at_least",
    "asked_about",
    "gave_feedback",
    "rating_at_most",
    "escalations",
    "suggestions_made",
    "consent",
    "persona",
    "interest_like",
)
# Checked when each message is sent, for every campaign, so a segment never needs to say them.
_SEND_TIME = {"reachable", "opted_out", "opt_out", "paused"}
_NAME = re.compile(r"^[\w][\w.-]*$")
_MAX_DAYS = 36500


class SegmentError(Exception):
    """An operator's request about segments that cannot be met (an unknown segment, persona ...)."""


@dataclass(frozen=True)
class AskedAbout:
    topics: tuple[str, ...]
    within_days: int | None = None


@dataclass(frozen=True)
class RatingAtMost:
    csat: int | None = None
    nps: int | None = None


@dataclass(frozen=True)
class InterestLike:
    text: str
    min_similarity: float


@dataclass(frozen=True)
class SegmentRules:
    """The rules of a segment; None where a rule is not used. All that are used must hold."""

    patron_type: tuple[str, ...] | None = None
    language: tuple[str, ...] | None = None
    channel: tuple[str, ...] | None = None
    source: tuple[str, ...] | None = None
    time_zone: tuple[str, ...] | None = None
    active_within_days: int | None = None
    inactive_for_days: int | None = None
    conversations_at_least: int | None = None
    asked_about: AskedAbout | None = None
    gave_feedback: bool | None = None
    rating_at_most: RatingAtMost | None = None
    escalations: str | None = None
    # At least this many suggestions (true in the file is 1); 0 means none at all (false in the file).
    suggestions_made: int | None = None
    consent: tuple[str, ...] | None = None
    persona: tuple[str, ...] | None = None
    interest_like: InterestLike | None = None

    def as_json(self) -> dict[str, Any]:
        """The rules as a segment file writes them (what Segment.definition stores)."""
        found: dict[str, Any] = {}
        for name in RULES:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, AskedAbout | RatingAtMost | InterestLike):
                value = {
                    key: list(item) if isinstance(item, tuple) else item
                    for key, item in dataclasses.asdict(value).items()
                    if item is not None
                }
            elif name == "suggestions_made" and value in (0, 1):
                value = bool(value)
            found[name] = value
        return found


@dataclass(frozen=True)
class SegmentDefinition:
    """A segment as its file defines it."""

    name: str
    description: str | None
    rules: SegmentRules


# --- reading a segment file --------------------------------------------------------------------------


def _strings(spec: Spec, value: Any, at: str, *, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise spec.error(at, "expected a non-empty list, e.g. [a, b]")
    found: list[str] = []
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise spec.error(f"{at}.{position}", "expected a word or name (a string)")
        if allowed is not None and item not in allowed:
            raise spec.error(f"{at}.{position}", f"unknown value {item!r} (one of: {', '.join(allowed)})")
        found.append(item.strip())
    return tuple(dict.fromkeys(found))


def _whole(spec: Spec, value: Any, at: str, *, least: int, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise spec.error(at, f"expected a whole number from {least} to {most}")
    if not least <= value <= most:
        raise spec.error(at, f"expected a whole number from {least} to {most}, not {value}")
    return value


def _flag(spec: Spec, value: Any, at: str) -> bool:
    if not isinstance(value, bool):
        raise spec.error(at, "expected true or false")
    return value


def _mapping(spec: Spec, value: Any, at: str, allowed: set[str], example: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise spec.error(at, f"expected a mapping, e.g. {example}")
    check_fields(spec, value, at=at, allowed=allowed)
    return value


def _time_zones(spec: Spec, value: Any, at: str) -> tuple[str, ...]:
    names = _strings(spec, value, at)
    for position, name in enumerate(names):
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise spec.error(
                f"{at}.{position}", f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)"
            ) from None
    return names


def _asked_about(spec: Spec, value: Any, at: str) -> AskedAbout:
    found = _mapping(spec, value, at, {"topics", "within_days"}, "{topics: [research_help], within_days: 90}")
    if "topics" not in found:
        raise spec.error(f"{at}.topics", "required: the topics asked about, e.g. [research_help]")
    within = found.get("within_days")
    return AskedAbout(
        topics=_strings(spec, found["topics"], f"{at}.topics", allowed=TOPICS),
        within_days=None
        if within is None
        else _whole(spec, within, f"{at}.within_days", least=1, most=_MAX_DAYS),
    )


def _rating(spec: Spec, value: Any, at: str) -> RatingAtMost:
    found = _mapping(spec, value, at, {"csat", "nps"}, "{csat: 2} or {nps: 6}")
    if not found:
        raise spec.error(at, "name csat (1-5) or nps (0-10), e.g. {csat: 2}")
    csat, nps = found.get("csat"), found.get("nps")
    return RatingAtMost(
        csat=None if csat is None else _whole(spec, csat, f"{at}.csat", least=1, most=5),
        nps=None if nps is None else _whole(spec, nps, f"{at}.nps", least=0, most=10),
    )


def _interest(spec: Spec, value: Any, at: str) -> InterestLike:
    found = _mapping(
        spec,
        value,
        at,
        {"text", "min_similarity"},
        '{text: "research data management", min_similarity: 0.85}',
    )
    text, least = found.get("text"), found.get("min_similarity")
    if not isinstance(text, str) or not text.strip():
        raise spec.error(f"{at}.text", "required: a description of the interest, in words")
    if isinstance(least, bool) or not isinstance(least, int | float) or not -1 <= least <= 1:
        raise spec.error(f"{at}.min_similarity", "required: a number from -1 to 1 (a cosine similarity)")
    return InterestLike(text=text.strip(), min_similarity=float(least))


def _escalations(spec: Spec, value: Any, at: str) -> str:
    if value not in ESCALATION_CHOICES:
        raise spec.error(at, f"expected one of: {', '.join(ESCALATION_CHOICES)}")
    return str(value)


def _suggestions(spec: Spec, value: Any, at: str) -> int:
    if isinstance(value, bool):
        return int(value)
    return _whole(spec, value, at, least=1, most=1_000_000)


def _rules(spec: Spec, value: Any) -> SegmentRules:
    if value is None:
        return SegmentRules()
    if not isinstance(value, dict):
        raise spec.error("rules", "expected a mapping of rules (channel: [...], ...), or {} for every patron")
    for key in value:
        if key in _SEND_TIME:
            raise spec.error(
                f"rules.{key}",
                "not a rule: reachability, opt-outs and pauses are checked when each message is sent",
            )
    check_fields(spec, value, at="rules", allowed=set(RULES))

    def days(name: str) -> int | None:
        return (
            None if name not in value else _whole(spec, value[name], f"rules.{name}", least=1, most=_MAX_DAYS)
        )

    def given(name: str, parse: Any) -> Any:
        return None if name not in value else parse(spec, value[name], f"rules.{name}")

    return SegmentRules(
        patron_type=given("patron_type", lambda s, v, a: _strings(s, v, a, allowed=PATRON_TYPES)),
        language=given("language", lambda s, v, a: _strings(s, v, a, allowed=LANGUAGES)),
        channel=given("channel", lambda s, v, a: _strings(s, v, a, allowed=CHANNELS)),
        source=given("source", _strings),
        time_zone=given("time_zone", _time_zones),
        active_within_days=days("active_within_days"),
        inactive_for_days=days("inactive_for_days"),
        conversations_at_least=given(
            "conversations_at_least", lambda s, v, a: _whole(s, v, a, least=1, most=1_000_000)
        ),
        asked_about=given("asked_about", _asked_about),
        gave_feedback=given("gave_feedback", _flag),
        rating_at_most=given("rating_at_most", _rating),
        escalations=given("escalations", _escalations),
        suggestions_made=given("suggestions_made", _suggestions),
        consent=given("consent", lambda s, v, a: _strings(s, v, a, allowed=CONSENT_PURPOSES)),
        persona=given("persona", _strings),
        interest_like=given("interest_like", _interest),
    )


def parse_segment(spec: Spec) -> SegmentDefinition:
    """A segment definition from a parsed file; any unknown field or bad value is a SpecError."""
    data = spec.data
    check_fields(spec, data, at="", allowed={"name", "description", "rules"})
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise spec.error("name", "required: the segment's name, e.g. pg-chemistry")
    name = name.strip()
    if len(name) > 100 or not _NAME.match(name):
        raise spec.error(
            "name", "letters, digits, '-', '_' and '.', at most 100, starting with a letter or digit"
        )
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise spec.error("description", "expected text")
    if "rules" not in data:
        raise spec.error("rules", "required: the rules patrons must meet ({} for every patron)")
    return SegmentDefinition(name=name, description=description, rules=_rules(spec, data["rules"]))


def load_segment_file(path: Path) -> SegmentDefinition:
    """Read a segment file (YAML); errors name the file, line and field."""
    return parse_segment(load_spec(path))


def definition_of(segment: Segment) -> SegmentDefinition:
    """A stored rule-made segment's definition, read back through the file checks."""
    if segment.definition is None:
        raise SegmentError(f"segment {segment.name} is made by hand: it has no rules")
    spec = Spec(
        data={"name": segment.name, "description": segment.description, "rules": segment.definition},
        path=f"segment {segment.name}",
    )
    try:
        return parse_segment(spec)
    except SpecError as error:
        raise SegmentError(f"segment {segment.name} as stored cannot be used: {error}") from None
