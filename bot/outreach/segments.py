"""Segments: named groups of patrons by attributes, behaviour, consent, persona and interest, kept in SQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from sqlalchemy import delete, func, insert, literal, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from bot.crm.database import session_scope
from bot.crm.models import (
    CONSENT_PURPOSES,
    PATRON_TYPES,
    ChannelIdentity,
    Conversation,
    Escalation,
    Feedback,
    Interaction,
    Patron,
    PatronInterest,
    Persona,
    Segment,
    SegmentMembership,
    Suggestion,
    utcnow,
)
from bot.crm.models.feedback import ACTIVE_ESCALATION_STATUSES
from bot.language import LANGUAGES
from bot.outreach.interests import PURPOSE as INTEREST_PURPOSE
from bot.outreach.interests import QueryEncoder, consent_in_force, interest_vectors, model_key
from bot.outreach.spec import Spec, SpecError, check_fields, load_spec

# The channels patrons reach the library on (the connectors' names).
CHANNELS = ("telegram", "wechat", "webchat", "rest")
# The topics of questions: the intents the bot answers (bot.thread.TOPIC_INTENTS), as the ingester
# stores them in interaction.intent for every patron message. Feedback.topic only exists for rated
# answers, so the intent is the one topic every question has.
TOPICS = (
    "card_account",
    "borrowing_rules",
    "renewal",
    "holds",
    "returns",
    "fines_lost",
    "interlibrary_loan",
    "study_spaces",
    "tech_services",
    "e_resources",
    "events",
    "research_help",
    "ask_hours",
    "ask_contact",
)
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
# Members whose interest is compared with the description at a time (one matrix product each).
_VECTOR_CHUNK = 5000
_DELETE_CHUNK = 500


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


@dataclass(frozen=True)
class PreviewPatron:
    patron_id: int
    display_name: str | None
    language: str | None
    patron_type: str | None
    channels: tuple[str, ...]


@dataclass(frozen=True)
class SegmentPreview:
    """How many patrons a segment holds now, and a few of them (no message texts)."""

    name: str
    count: int
    sample: tuple[PreviewPatron, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "sample": [
                dataclasses.asdict(patron) | {"channels": list(patron.channels)} for patron in self.sample
            ],
        }


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


# --- storing -----------------------------------------------------------------------------------------


def find_segment(*, session: Session, name: str) -> Segment:
    segment: Segment | None = session.execute(
        select(Segment).where(Segment.name == name)
    ).scalar_one_or_none()
    if segment is None:
        raise SegmentError(f"no segment named {name!r}: `patronbot segment list` lists them")
    return segment


def save_segment(*, session: Session, definition: SegmentDefinition, staff_id: int | None = None) -> Segment:
    """Insert the segment, or update the one of that name; its membership is refreshed separately."""
    if definition.rules.persona:
        known = set(
            session.execute(select(Persona.key).where(Persona.key.in_(definition.rules.persona))).scalars()
        )
        missing = [key for key in definition.rules.persona if key not in known]
        if missing:
            raise SegmentError(
                f"segment {definition.name}: no persona {', '.join(missing)}: `patronbot personas` lists them"
            )
    now = utcnow()
    segment = session.execute(select(Segment).where(Segment.name == definition.name)).scalar_one_or_none()
    if segment is None:
        segment = Segment(name=definition.name, created_by_id=staff_id, created_at=now)
        session.add(segment)
    segment.description = definition.description
    segment.definition = definition.rules.as_json()
    segment.updated_at = now
    session.flush()
    return segment


# --- membership --------------------------------------------------------------------------------------


def _with(patron_ids: Any) -> ColumnElement[Any]:
    condition: ColumnElement[Any] = Patron.id.in_(patron_ids)
    return condition


def _attributes(rules: SegmentRules, now: dt.datetime) -> list[ColumnElement[Any]]:
    """What the patron told or where they came from, and when they were last seen."""
    where: list[ColumnElement[Any]] = []
    if rules.patron_type is not None:
        where.append(Patron.patron_type.in_(rules.patron_type))
    if rules.language is not None:
        where.append(Patron.language.in_(rules.language))
    if rules.time_zone is not None:
        where.append(Patron.time_zone.in_(rules.time_zone))
    if rules.channel is not None:
        where.append(
            _with(select(ChannelIdentity.patron_id).where(ChannelIdentity.channel.in_(rules.channel)))
        )
    if rules.source is not None:
        where.append(_with(select(ChannelIdentity.patron_id).where(ChannelIdentity.source.in_(rules.source))))
    if rules.active_within_days is not None:
        where.append(Patron.last_seen_at >= now - dt.timedelta(days=rules.active_within_days))
    if rules.inactive_for_days is not None:
        where.append(Patron.last_seen_at < now - dt.timedelta(days=rules.inactive_for_days))
    for purpose in rules.consent or ():
        where.append(consent_in_force(purpose, Patron.id))
    if rules.persona is not None:
        where.append(Patron.persona_id.in_(select(Persona.id).where(Persona.key.in_(rules.persona))))
    return where


def _conversations(rules: SegmentRules, now: dt.datetime) -> list[ColumnElement[Any]]:
    """How much the patron talked with the library, and about what."""
    where: list[ColumnElement[Any]] = []
    if rules.conversations_at_least is not None:
        where.append(
            _with(
                select(Conversation.patron_id)
                .group_by(Conversation.patron_id)
                .having(func.count() >= rules.conversations_at_least)
            )
        )
    if rules.asked_about is not None:
        asked = select(Interaction.patron_id).where(
            Interaction.direction == "in", Interaction.intent.in_(rules.asked_about.topics)
        )
        if rules.asked_about.within_days is not None:
            since = now - dt.timedelta(days=rules.asked_about.within_days)
            asked = asked.where(Interaction.occurred_at >= since)
        where.append(_with(asked))
    return where


def _engagement(rules: SegmentRules) -> list[ColumnElement[Any]]:
    """What the patron told the library about its service: ratings, escalations, suggestions."""
    where: list[ColumnElement[Any]] = []
    if rules.gave_feedback is not None:
        gave = select(Feedback.patron_id).where(Feedback.patron_id.is_not(None))
        where.append(_with(gave) if rules.gave_feedback else ~_with(gave))
    if rules.rating_at_most is not None:
        rating = rules.rating_at_most
        low = [
            *([Feedback.csat <= rating.csat] if rating.csat is not None else []),
            *([Feedback.nps <= rating.nps] if rating.nps is not None else []),
        ]
        where.append(_with(select(Feedback.patron_id).where(Feedback.patron_id.is_not(None), or_(*low))))
    if rules.escalations is not None:
        escalated = select(Escalation.patron_id).where(Escalation.patron_id.is_not(None))
        if rules.escalations == "open":
            escalated = escalated.where(Escalation.status.in_(ACTIVE_ESCALATION_STATUSES))
        elif rules.escalations == "resolved":
            escalated = escalated.where(Escalation.status == "resolved")
        where.append(~_with(escalated) if rules.escalations == "none" else _with(escalated))
    if rules.suggestions_made is not None:
        # Ideas and purchase requests; a complaint is a suggestion row too, but not a suggestion made.
        made = select(Suggestion.patron_id).where(
            Suggestion.patron_id.is_not(None), Suggestion.kind.in_(("service", "purchase"))
        )
        if rules.suggestions_made == 0:
            where.append(~_with(made))
        else:
            counted = made.group_by(Suggestion.patron_id).having(func.count() >= rules.suggestions_made)
            where.append(_with(counted))
    return where


def member_query(*, definition: SegmentDefinition, now: dt.datetime) -> Select:
    """One SELECT of the ids of the patrons meeting every rule but interest_like.

    Each behaviour rule is an IN (or NOT IN) subquery over the table that records it: both databases
    run it as one semi-join (PostgreSQL hashes it; SQLite builds the subquery's ids once) over an
    index (interaction(occurred_at) for a period, conversation(patron_id, started_at), ...) rather than
    a probe per patron; the consent rule probes consent(patron_id, purpose, recorded_at) per patron."""
    rules = definition.rules
    where = [*_attributes(rules, now), *_conversations(rules, now), *_engagement(rules)]
    return select(Patron.id).where(*where)


def _default_encoder() -> QueryEncoder:
    from bot.knowledge.encoders import MultilingualEncoder

    return MultilingualEncoder()


def refresh_membership(
    *, engine: Engine, segment_id: int, encoder: QueryEncoder | None = None, now: dt.datetime | None = None
) -> int:
    """Recompute who is in a rule-made segment (all of it in one transaction) and return how many.

    The rules become one INSERT ... SELECT. With interest_like, only patrons who have an interest
    vector of the encoder (and so the profiling consent) go in; then those whose vector is less similar
    to the description's than min_similarity are taken out, comparing a chunk of members' vectors at
    a time with one matrix product. A hand-made segment is left as it is."""
    now = now or utcnow()
    with session_scope(engine) as session:
        segment = session.get(Segment, segment_id)
        if segment is None:
            raise SegmentError(f"no segment with id {segment_id}")
        if segment.definition is None:
            count = _count(session, segment_id)
            segment.member_count = count
            return count
        definition = definition_of(segment)
    interest = definition.rules.interest_like
    query_vector: np.ndarray[Any, np.dtype[np.float32]] | None = None
    model = ""
    if interest is not None:
        encoder = encoder or _default_encoder()
        model = model_key(encoder)
        query_vector = np.asarray(encoder.encode_queries([interest.text]), dtype=np.float32)[0]
    with session_scope(engine) as session:
        members = member_query(definition=definition, now=now)
        if interest is not None:
            members = members.where(
                Patron.id.in_(select(PatronInterest.patron_id).where(PatronInterest.model == model)),
                consent_in_force(INTEREST_PURPOSE, Patron.id),
            )
        session.execute(delete(SegmentMembership).where(SegmentMembership.segment_id == segment_id))
        session.execute(
            insert(SegmentMembership).from_select(
                ["segment_id", "patron_id", "added_at"],
                members.with_only_columns(
                    literal(segment_id), Patron.id, literal(now, type_=SegmentMembership.added_at.type)
                ),
            )
        )
        if interest is not None and query_vector is not None:
            _drop_unlike(
                session,
                segment_id=segment_id,
                model=model,
                vector=query_vector,
                least=interest.min_similarity,
            )
        count = _count(session, segment_id)
        session.execute(
            update(Segment).where(Segment.id == segment_id).values(refreshed_at=now, member_count=count)
        )
    return count


def _drop_unlike(
    session: Session,
    *,
    segment_id: int,
    model: str,
    vector: np.ndarray[Any, np.dtype[np.float32]],
    least: float,
) -> None:
    members = select(SegmentMembership.patron_id).where(SegmentMembership.segment_id == segment_id)
    unlike: list[int] = []
    for ids, matrix in interest_vectors(
        session=session, model=model, patron_ids=members, chunk=_VECTOR_CHUNK
    ):
        if matrix.shape[1] != vector.shape[0]:  # stored by another build of the model: not comparable
            unlike.extend(int(patron_id) for patron_id in ids)
            continue
        unlike.extend(int(patron_id) for patron_id in ids[matrix @ vector < least])
    for start in range(0, len(unlike), _DELETE_CHUNK):
        session.execute(
            delete(SegmentMembership).where(
                SegmentMembership.segment_id == segment_id,
                SegmentMembership.patron_id.in_(unlike[start : start + _DELETE_CHUNK]),
            )
        )


def _count(session: Session, segment_id: int) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(SegmentMembership)
            .where(SegmentMembership.segment_id == segment_id)
        ).scalar_one()
    )


def preview(
    *, engine: Engine, segment_id: int, sample: int = 10, encoder: QueryEncoder | None = None
) -> SegmentPreview:
    """Refresh the segment's membership, then its count and up to `sample` members, most recently
    seen first: who they are and where they can be reached, never what they wrote."""
    count = refresh_membership(engine=engine, segment_id=segment_id, encoder=encoder)
    with session_scope(engine) as session:
        segment = session.get(Segment, segment_id)
        assert segment is not None
        patrons = session.execute(
            select(Patron.id, Patron.display_name, Patron.language, Patron.patron_type)
            .join(SegmentMembership, SegmentMembership.patron_id == Patron.id)
            .where(SegmentMembership.segment_id == segment_id)
            .order_by(Patron.last_seen_at.desc(), Patron.id)
            .limit(max(0, sample))
        ).all()
        channels: dict[int, list[str]] = {int(row[0]): [] for row in patrons}
        if channels:
            for patron_id, channel in session.execute(
                select(ChannelIdentity.patron_id, ChannelIdentity.channel)
                .where(ChannelIdentity.patron_id.in_(list(channels)))
                .order_by(ChannelIdentity.patron_id, ChannelIdentity.channel)
            ):
                if channel not in channels[int(patron_id)]:
                    channels[int(patron_id)].append(str(channel))
        return SegmentPreview(
            name=str(segment.name),
            count=count,
            sample=tuple(
                PreviewPatron(
                    patron_id=int(patron_id),
                    display_name=display_name,
                    language=language,
                    patron_type=patron_type,
                    channels=tuple(channels[int(patron_id)]),
                )
                for patron_id, display_name, language, patron_type in patrons
            ),
        )


def list_segments(*, session: Session) -> list[Segment]:
    return list(session.execute(select(Segment).order_by(Segment.name)).scalars())
