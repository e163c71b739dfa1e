"""Segments: named groups of patrons by attributes, behaviour, consent, persona and interest, kept in SQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import (
    ChannelIdentity,
    Patron,
    PatronInterest,
    Persona,
    Segment,
    SegmentMembership,
    utcnow,
)
from bot.outreach.interests import PURPOSE as INTEREST_PURPOSE
from bot.outreach.interests import QueryEncoder, consent_in_force, interest_vectors, model_key
from bot.outreach.segment_rules import (
    CHANNELS,
    ESCALATION_CHOICES,
    RULES,
    TOPICS,
    AskedAbout,
    InterestLike,
    RatingAtMost,
    SegmentDefinition,
    SegmentError,
    SegmentRules,
    definition_of,
    load_segment_file,
    parse_segment,
)
from bot.outreach.segment_sql import member_query

# The segment API is read from here: the file's rules are in segment_rules, the member query in
# segment_sql.
__all__ = [
    "CHANNELS",
    "ESCALATION_CHOICES",
    "RULES",
    "TOPICS",
    "AskedAbout",
    "InterestLike",
    "PreviewPatron",
    "RatingAtMost",
    "SegmentDefinition",
    "SegmentError",
    "SegmentPreview",
    "SegmentRules",
    "definition_of",
    "find_segment",
    "list_segments",
    "load_segment_file",
    "member_query",
    "parse_segment",
    "preview",
    "refresh_membership",
    "save_segment",
]

# Members whose interest is compared with the description at a time (one matrix product each), and
# memberships deleted at a time.
_VECTOR_CHUNK = 5000
_DELETE_CHUNK = 500


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
        channels = channels_of(session=session, patron_ids=[int(row[0]) for row in patrons])
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


def channels_of(*, session: Session, patron_ids: list[int]) -> dict[int, list[str]]:
    """Each patron's channels, in name order (every patron of `patron_ids` has a list, maybe empty)."""
    channels: dict[int, list[str]] = {patron_id: [] for patron_id in patron_ids}
    if channels:
        for patron_id, channel in session.execute(
            select(ChannelIdentity.patron_id, ChannelIdentity.channel)
            .where(ChannelIdentity.patron_id.in_(list(channels)))
            .order_by(ChannelIdentity.patron_id, ChannelIdentity.channel)
        ):
            if channel not in channels[int(patron_id)]:
                channels[int(patron_id)].append(str(channel))
    return channels


def list_segments(*, session: Session) -> list[Segment]:
    return list(session.execute(select(Segment).order_by(Segment.name)).scalars())
