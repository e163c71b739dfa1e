"""The member query: a segment's rules, but interest_like, as one SELECT of patron ids."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from bot.crm.models import (
    ChannelIdentity,
    Conversation,
    Escalation,
    Feedback,
    Interaction,
    Patron,
    Persona,
    Suggestion,
)
from bot.crm.models.feedback import ACTIVE_ESCALATION_STATUSES
from bot.outreach.interests import consent_in_force
from bot.outreach.segment_rules import SegmentDefinition, SegmentRules


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
