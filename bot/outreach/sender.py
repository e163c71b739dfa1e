"""Campaign sending: due deliveries checked against the patron's say at send time, then handed to the outbox.

A delivery is checked when it is about to go, not when its run filled the outbox: consent for the
campaign's purpose (none yet: no_consent; withdrawn: opted_out), a pause ("pause" / "暂停推送"),
reachability, WeChat's 48-hour window (when no template message is set), the frequency cap, and quiet
hours in the patron's time zone (the delivery waits for the morning). A delivery that passes becomes an
outbox message (bot/outbound/outbox.py) in the same transaction, so a crash leaves it either pending or
queued, never both and never twice; the outbox's dispatcher then sends it at the channel's rate and
records every attempt. A follow-up question goes through the patron's Rasa conversation instead
(bot/outreach/questions.py), after the same checks.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import (
    Campaign,
    Consent,
    Conversation,
    Delivery,
    Interaction,
    OutboxMessage,
    Patron,
    utcnow,
)
from bot.outbound.outbox import send
from bot.outreach.messages import button_titles, campaign_text, patron_fields
from bot.outreach.questions import Ask, RasaApi, api_from_settings, ask_questions, claim, patron_wrote
from bot.quiet_hours import QuietHours
from bot.settings import get_settings

log = logging.getLogger(__name__)

# Campaign messages a patron may get in CAP_DAYS (PATRONBOT_CAMPAIGN_CAP says how many).
CAP_DAYS = 7
# How many seconds of sending a channel may have waiting in the outbox: deliveries are checked this
# close to their sending, and a pause or an opt-out in the meantime still stops the rest.
LOOKAHEAD_SECONDS = 10.0
# Channels whose 48-hour window bounds free-form messages.
WINDOWED = ("wechat",)
WECHAT_WINDOW = dt.timedelta(hours=48) - dt.timedelta(minutes=1)


@dataclass(frozen=True)
class SendRules:
    """What the library set: quiet hours, the cap, its own time zone (for patrons who gave none)."""

    quiet_hours: QuietHours | None = field(default_factory=lambda: QuietHours.parse("21:00-08:00"))
    cap: int = 2
    library_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    # Channels with a sender somewhere and how many messages a second they take (the outbox backlog
    # of a channel is kept under LOOKAHEAD_SECONDS of this).
    rates: Mapping[str, float] = field(default_factory=lambda: {"telegram": 29.6, "wechat": 20.0})
    wechat_template: bool = False  # outside the window a template message may go
    # The Rasa server that asks follow-up questions; None: the one the settings name.
    rasa: RasaApi | None = None


@dataclass
class Released:
    """What one look at the due deliveries did."""

    queued: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    waiting: int = 0  # moved to the end of the patron's quiet hours

    def add(self, other: Released) -> None:
        self.queued += other.queued
        self.waiting += other.waiting
        for reason, count in other.skipped.items():
            self.skipped[reason] += count


def _zone(name: str | None, fallback: ZoneInfo) -> ZoneInfo:
    if not name:
        return fallback
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return fallback


def _latest_consents(session: Session, patron_ids: list[int]) -> dict[tuple[int, str], bool]:
    rows = session.execute(
        select(Consent.patron_id, Consent.purpose, Consent.granted)
        .where(Consent.patron_id.in_(patron_ids))
        .order_by(Consent.recorded_at, Consent.id)
    )
    return {(int(p), str(purpose)): bool(granted) for p, purpose, granted in rows}


def _latest_conversations(session: Session, patron_ids: list[int]) -> dict[int, Conversation]:
    """Each patron's conversation they wrote in last: the channel a campaign message reaches them on."""
    latest = (
        select(Conversation.patron_id, func.max(Conversation.last_message_at).label("at"))
        .where(Conversation.patron_id.in_(patron_ids))
        .group_by(Conversation.patron_id)
        .subquery()
    )
    rows = session.execute(
        select(Conversation)
        .join(
            latest,
            and_(Conversation.patron_id == latest.c.patron_id, Conversation.last_message_at == latest.c.at),
        )
        .order_by(Conversation.id)
    ).scalars()
    return {int(conversation.patron_id): conversation for conversation in rows}


def _recent_counts(session: Session, patron_ids: list[int], since: dt.datetime) -> dict[int, int]:
    rows = session.execute(
        select(Delivery.patron_id, func.count())
        .where(Delivery.patron_id.in_(patron_ids), Delivery.state == "queued", Delivery.queued_at >= since)
        .group_by(Delivery.patron_id)
    )
    return {int(p): int(n) for p, n in rows}


def _last_inbound(session: Session, sender: str) -> dt.datetime | None:
    return session.execute(
        select(func.max(Interaction.occurred_at))
        .join(Conversation, Conversation.id == Interaction.conversation_id)
        .where(Conversation.rasa_sender_id == sender, Interaction.direction == "in", patron_wrote())
    ).scalar_one_or_none()


def campaign_backlog(*, session: Session) -> dict[str, int]:
    """Campaign messages waiting in the outbox, per channel."""
    rows = session.execute(
        select(OutboxMessage.channel, func.count())
        .where(OutboxMessage.status == "pending", OutboxMessage.produced_by.like("campaign:%"))
        .group_by(OutboxMessage.channel)
    )
    return {str(channel): int(n) for channel, n in rows}


def release_due(
    *,
    engine: Engine,
    rules: SendRules,
    limit: int = 500,
    campaign_id: int | None = None,
    now: dt.datetime | None = None,
) -> Released:
    """Check the due deliveries (of one campaign, or all) and queue the ones the patron's say allows.

    At most `limit` are looked at, and no more than each channel can send in LOOKAHEAD_SECONDS beyond
    what already waits. Several processes may call this at once: on PostgreSQL rows are locked with
    SKIP LOCKED, and everywhere a delivery moves on only from 'pending' (a conditional update).
    """
    now = now or utcnow()
    released = Released()
    with session_scope(engine) as session:
        backlog = campaign_backlog(session=session)
        room = {
            channel: int(rate * LOOKAHEAD_SECONDS) - backlog.get(channel, 0)
            for channel, rate in rules.rates.items()
        }
        active = select(Campaign.id).where(Campaign.status.in_(("scheduled", "running")))
        if campaign_id is not None:
            active = active.where(Campaign.id == campaign_id)
        query = (
            select(Delivery)
            .where(
                Delivery.state == "pending",
                Delivery.scheduled_at <= now,
                Delivery.campaign_id.in_(active.scalar_subquery()),
                # A question being asked through Rasa by another releaser right now is left to it.
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until <= now),
            )
            .order_by(Delivery.scheduled_at, Delivery.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Delivery)
        deliveries = list(session.execute(query).scalars())
        if not deliveries:
            return released
        patron_ids = sorted({int(d.patron_id) for d in deliveries if d.patron_id is not None})
        patrons = {
            int(p.id): p for p in session.execute(select(Patron).where(Patron.id.in_(patron_ids))).scalars()
        }
        consents = _latest_consents(session, patron_ids)
        conversations = _latest_conversations(session, patron_ids)
        recent = _recent_counts(session, patron_ids, now - dt.timedelta(days=CAP_DAYS))
        campaigns = {
            int(c.id): c
            for c in session.execute(
                select(Campaign).where(Campaign.id.in_({int(d.campaign_id) for d in deliveries}))
            ).scalars()
        }
        asks: list[Ask] = []
        for delivery in deliveries:
            outcome = _decide(
                delivery=delivery,
                campaign=campaigns[int(delivery.campaign_id)],
                patron=patrons.get(int(delivery.patron_id or 0)),
                consents=consents,
                conversation=conversations.get(int(delivery.patron_id or 0)),
                recent=recent,
                room=room,
                rules=rules,
                session=session,
                now=now,
            )
            if outcome is None:
                continue  # its channel is full for now: it stays pending for the next look
            if outcome.kind == "queue" and campaigns[int(delivery.campaign_id)].kind == "question":
                ask = _claim_question(session=session, delivery=delivery, outcome=outcome, now=now)
                if ask is not None:
                    asks.append(ask)
                    recent[ask.patron_id] = recent.get(ask.patron_id, 0) + 1
                continue
            _apply(
                session=session, delivery=delivery, outcome=outcome, now=now, released=released, recent=recent
            )
    if asks:  # asked once the claims are committed: no transaction waits on Rasa
        api = rules.rasa or api_from_settings(get_settings())
        asked = ask_questions(engine=engine, asks=asks, api=api, now=now)
        released.queued += asked.queued
        released.waiting += asked.waiting
        if asked.skipped:
            released.skipped["not_asked"] += asked.skipped
    return released


def _claim_question(
    *, session: Session, delivery: Delivery, outcome: _Outcome, now: dt.datetime
) -> Ask | None:
    conversation = outcome.conversation
    assert conversation is not None
    until = claim(session=session, delivery=delivery, now=now)
    if until is None:
        return None
    patron = session.get(Patron, conversation.patron_id)
    return Ask(
        delivery_id=int(delivery.id),
        campaign_id=int(delivery.campaign_id),
        patron_id=int(conversation.patron_id),
        channel=str(conversation.channel),
        recipient=str(conversation.rasa_sender_id),
        language=patron.language if patron is not None else None,
        claimed_until=until,
    )


@dataclass(frozen=True)
class _Outcome:
    kind: str  # "queue", "skip", "wait"
    reason: str = ""
    until: dt.datetime | None = None
    conversation: Conversation | None = None
    text: str = ""
    buttons: tuple[tuple[str, str], ...] = ()  # (title, payload) in the patron's language


def _patron_says_no(patron: Patron | None, consent: bool | None, now: dt.datetime) -> str | None:
    """Why the patron is not to get campaign messages now, if they are not."""
    if patron is None:
        return "erased"
    if consent is None:
        return "no_consent"
    if not consent:
        return "opted_out"
    if patron.paused_until is not None and patron.paused_until > now:
        return "paused"
    if not patron.reachable:
        return "unreachable"
    return None


def _channel_closed(
    conversation: Conversation | None, rules: SendRules, session: Session, now: dt.datetime
) -> str | None:
    """Why the patron's channel cannot take a campaign message now, if it cannot."""
    if conversation is None:
        return "no_channel"
    if str(conversation.channel) in WINDOWED and not rules.wechat_template:
        last = _last_inbound(session, str(conversation.rasa_sender_id))
        if last is None or now - last >= WECHAT_WINDOW:
            return "window_closed"
    return None


def _decide(
    *,
    delivery: Delivery,
    campaign: Campaign,
    patron: Patron | None,
    consents: Mapping[tuple[int, str], bool],
    conversation: Conversation | None,
    recent: Mapping[int, int],
    room: dict[str, int],
    rules: SendRules,
    session: Session,
    now: dt.datetime,
) -> _Outcome | None:
    consent = consents.get((int(patron.id), str(campaign.purpose))) if patron is not None else None
    refused = _patron_says_no(patron, consent, now)
    if refused is not None or patron is None:
        return _Outcome("skip", refused or "erased")
    closed = _channel_closed(conversation, rules, session, now)
    if closed is not None or conversation is None:
        return _Outcome("skip", closed or "no_channel")
    channel = str(conversation.channel)
    if rules.quiet_hours is not None:
        local = now.astimezone(_zone(patron.time_zone, rules.library_zone))
        after = rules.quiet_hours.ends_after(local)
        if after != local:
            return _Outcome("wait", "quiet_hours", until=after.astimezone(dt.UTC))
    if recent.get(int(patron.id), 0) >= rules.cap:
        return _Outcome("skip", "cap")
    if channel in room:
        if room[channel] <= 0:
            return None
        room[channel] -= 1
    text = _text(campaign, patron) if campaign.kind != "question" else ""  # a question: Rasa words it
    offered = campaign.buttons if isinstance(campaign.buttons, list) else []
    buttons = tuple((b["title"], b["payload"]) for b in button_titles(offered, patron.language or "zh"))
    return _Outcome("queue", conversation=conversation, text=text, buttons=buttons)


def _text(campaign: Campaign, patron: Patron) -> str:
    message = campaign.message if isinstance(campaign.message, dict) else {}
    _, text = campaign_text(campaign_message=message, language=patron.language, fields=patron_fields(patron))
    return text


def _apply(
    *,
    session: Session,
    delivery: Delivery,
    outcome: _Outcome,
    now: dt.datetime,
    released: Released,
    recent: dict[int, int],
) -> None:
    pending = and_(Delivery.id == delivery.id, Delivery.state == "pending")
    if outcome.kind == "wait":
        session.execute(
            update(Delivery).where(pending).values(scheduled_at=outcome.until, reason=outcome.reason)
        )
        released.waiting += 1
        return
    if outcome.kind == "skip":
        moved = session.execute(
            update(Delivery).where(pending).values(state="skipped", reason=outcome.reason)
        )
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            released.skipped[outcome.reason] += 1
        return
    conversation = outcome.conversation
    assert conversation is not None
    moved = session.execute(
        update(Delivery)
        .where(pending)
        .values(state="queued", reason=None, queued_at=now, channel=conversation.channel)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return  # another sender took it
    outbox_id = send(
        session=session,
        channel=str(conversation.channel),
        recipient=str(conversation.rasa_sender_id),
        text=outcome.text,
        buttons=[{"title": title, "payload": payload} for title, payload in outcome.buttons],
        produced_by=f"campaign:{delivery.campaign_id}",
        patron_id=int(conversation.patron_id),
    )
    session.execute(update(Delivery).where(Delivery.id == delivery.id).values(outbox_id=outbox_id))
    recent[int(conversation.patron_id)] = recent.get(int(conversation.patron_id), 0) + 1
    released.queued += 1


def pending_count(*, engine: Engine, campaign_ids: Iterable[int]) -> int:
    """Deliveries of the campaigns not yet queued or skipped (including those waiting for the morning)."""
    with session_scope(engine) as session:
        query = select(func.count()).where(
            Delivery.campaign_id.in_(list(campaign_ids)), Delivery.state == "pending"
        )
        return int(session.execute(query).scalar_one())
