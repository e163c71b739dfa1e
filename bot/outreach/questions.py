"""Follow-up questions: a campaign's question asked in the patron's own Rasa conversation, and their answer.

A question delivery passes the same send-time checks as an announcement (bot/outreach/sender.py); then,
instead of going straight to the outbox, it is asked through Rasa's HTTP API: `trigger_intent` with the
intent `followup_question` and the delivery's id, with no output channel, so Rasa runs
`action_ask_followup` (actions/outreach.py) in the patron's conversation and returns what it said.
Those messages go to the outbox of the patron's channel (its rate limit and crash handling apply) and
the delivery is queued with their outbox id. The conversation now knows the question was asked (the
action sets the `followup_delivery` slot), so the patron's next message ("4", "not really, the book
never came") is read as its answer (nlu/answers.py) and recorded here, against the delivery.

The HTTP call happens outside any database transaction: the delivery is claimed first (claimed_until),
then asked, then queued in a transaction of its own. A Rasa server that does not answer leaves the
delivery pending, to be asked again RETRY later; it is never marked sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import Campaign, Delivery, Feedback, Interaction, OutboxMessage, Patron, utcnow
from bot.engagement.feedback import is_affirmation, parse_csat, parse_nps, rating_correction, record_feedback
from bot.outreach.messages import button_titles, campaign_text, patron_fields
from bot.pseudonyms import keyed_digest, load_key
from bot.redaction import describe_failure
from bot.settings import Settings

log = logging.getLogger(__name__)

TRIGGER_INTENT = "followup_question"
# The entity that carries the delivery's id (with the question's trigger, and in its buttons' payloads).
DELIVERY_ENTITY = "followup"
# How long a releaser holds a question delivery while Rasa asks it; after that another may take it.
CLAIM = dt.timedelta(minutes=2)
# Rasa did not answer: the question is asked again this much later.
RETRY = dt.timedelta(minutes=1)
# The patron is in the middle of a form, or a librarian has the conversation: asked again later.
BUSY_RETRY = dt.timedelta(minutes=15)
# A comment or answer longer than this is cut (the whole text stays in the conversation's record).
MAX_TEXT = 4000


@dataclass(frozen=True)
class RasaApi:
    """Where the Rasa server's HTTP API is, and its token (Rasa's --auth-token)."""

    url: str
    token: str | None = None
    timeout: float = 30.0


def rasa_api_token(settings: Settings) -> str:
    """The token of the Rasa server's HTTP API: derived from the installation's secret, so every
    process of one installation knows it and nothing else does."""
    return keyed_digest("rasa-http-api", key=load_key(settings=settings))


def api_from_settings(settings: Settings) -> RasaApi:
    return RasaApi(url=settings.rasa_url, token=rasa_api_token(settings))


@dataclass(frozen=True)
class Ask:
    """A question delivery that passed the send-time checks and is claimed until `claimed_until`."""

    delivery_id: int
    campaign_id: int
    patron_id: int
    channel: str
    recipient: str  # the Rasa conversation (sender id) of the patron's channel
    language: str | None
    claimed_until: dt.datetime


@dataclass
class Asked:
    """What asking the claimed questions did."""

    queued: int = 0
    waiting: int = 0  # to be asked again: Rasa did not answer, or the patron was busy
    skipped: int = 0  # the conversation would not ask it (the delivery or its patron is gone)


def patron_wrote() -> Any:
    """A condition on Interaction: an inbound row the patron wrote, not the trigger of a follow-up question
    (Rasa records the trigger as a user message, "EXTERNAL: followup_question", which the ingester
    copies): the trigger does not open WeChat's window or count as a reply."""
    return or_(Interaction.intent.is_(None), Interaction.intent != TRIGGER_INTENT)


def claim(*, session: Session, delivery: Delivery, now: dt.datetime) -> dt.datetime | None:
    """Hold a pending question delivery for this releaser (in the caller's transaction); the time its
    claim runs out, or None when another took it meanwhile."""
    until = now + CLAIM
    moved = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.state == "pending")
        .values(claimed_until=until, attempts=Delivery.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return until if moved.rowcount == 1 else None  # type: ignore[attr-defined]


class RasaRefusedError(RuntimeError):
    """The Rasa server answered, but not with a conversation (an error status)."""


def _params(api: RasaApi) -> dict[str, str]:
    return {"token": api.token} if api.token else {}


def _path(sender: str) -> str:
    """The conversation id in the API's path: Rasa takes the path segment as it comes (it does not
    decode it), so the characters of our ids ("rest:abc", "telegram:42") are sent as they are."""
    return quote(sender, safe=":@!$&'()*+,;=~")


def _busy(client: httpx.Client, api: RasaApi, sender: str) -> bool:
    """Whether the conversation is in a form or with a librarian: a question now would be taken as
    the form's answer, or interrupt the librarian."""
    reply = client.get(
        f"{api.url}/conversations/{_path(sender)}/tracker",
        params={**_params(api), "include_events": "NONE"},
    )
    if reply.status_code != 200:
        raise RasaRefusedError(f"tracker: HTTP {reply.status_code}")
    tracker = reply.json()
    loop = tracker.get("active_loop") or {}
    slots = tracker.get("slots") or {}
    return bool(loop.get("name")) or bool(slots.get("handoff_active"))


def _trigger(client: httpx.Client, api: RasaApi, ask: Ask) -> list[dict[str, Any]]:
    """Trigger the question in the conversation; what the bot said (Rasa collects it when no output
    channel is named)."""
    entities = {DELIVERY_ENTITY: str(ask.delivery_id)}
    if ask.language in ("zh", "en"):
        # The patron's language for the bot's words, and for the CRM's record of this turn.
        entities["language"] = ask.language
    reply = client.post(
        f"{api.url}/conversations/{_path(ask.recipient)}/trigger_intent",
        params=_params(api),
        json={"name": TRIGGER_INTENT, "entities": entities},
    )
    if reply.status_code != 200:
        raise RasaRefusedError(f"trigger_intent: HTTP {reply.status_code}")
    messages = reply.json().get("messages") or []
    return [message for message in messages if isinstance(message, dict) and message.get("text")]


def ask_questions(
    *, engine: Engine, asks: Sequence[Ask], api: RasaApi, now: dt.datetime | None = None
) -> Asked:
    """Ask each claimed question through Rasa and queue what the bot said; see the module's docstring."""
    asked = Asked()
    if not asks:
        return asked
    now = now or utcnow()
    with httpx.Client(timeout=api.timeout) as client:
        for ask in asks:
            try:
                if _busy(client, api, ask.recipient):
                    _wait(engine, ask, until=now + BUSY_RETRY, reason="in_conversation")
                    asked.waiting += 1
                    continue
                messages = _trigger(client, api, ask)
            except (httpx.HTTPError, RasaRefusedError, ValueError) as error:
                log.warning(
                    "campaign %s: the Rasa server did not ask a follow-up question (%s); asked again later",
                    ask.campaign_id,
                    describe_failure(error),
                )
                _wait(engine, ask, until=now + RETRY, reason=None, error="the Rasa server did not answer")
                asked.waiting += 1
                continue
            outcome = _queue(engine, ask, messages, now)
            if outcome == "queued":
                asked.queued += 1
            elif outcome == "skipped":
                asked.skipped += 1
    return asked


def _held(ask: Ask) -> Any:
    return and_(
        Delivery.id == ask.delivery_id,
        Delivery.state == "pending",
        Delivery.claimed_until == ask.claimed_until,
    )


def _wait(
    engine: Engine, ask: Ask, *, until: dt.datetime, reason: str | None, error: str | None = None
) -> None:
    with session_scope(engine) as session:
        session.execute(
            update(Delivery)
            .where(_held(ask))
            .values(scheduled_at=until, claimed_until=None, reason=reason, last_error=error)
        )


def _queue(engine: Engine, ask: Ask, messages: list[dict[str, Any]], now: dt.datetime) -> str:
    """The delivery queued with the bot's messages in the outbox, in one transaction."""
    with session_scope(engine) as session:
        if not messages:
            # The action found no question to ask (the delivery or its campaign changed meanwhile).
            session.execute(
                update(Delivery)
                .where(_held(ask))
                .values(state="skipped", reason="not_asked", claimed_until=None)
            )
            return "skipped"
        moved = session.execute(
            update(Delivery)
            .where(_held(ask))
            .values(state="queued", reason=None, queued_at=now, channel=ask.channel, claimed_until=None)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            return "lost"  # its claim ran out and another releaser took it
        ids = [_outbox(session, ask, message, now) for message in messages]
        session.execute(update(Delivery).where(Delivery.id == ask.delivery_id).values(outbox_id=ids[-1]))
    return "queued"


def _outbox(session: Session, ask: Ask, message: Mapping[str, Any], now: dt.datetime) -> int:
    """An outbox row for one of the bot's messages. Not through bot.outbound.outbox.send: that also
    records the message as an interaction, and the ingester already records it from Rasa's events
    (the question is a turn of the conversation), so the history would show it twice."""
    buttons = [
        {"title": str(b.get("title") or ""), "payload": str(b.get("payload") or "")}
        for b in message.get("buttons") or []
        if isinstance(b, dict) and b.get("title")
    ]
    row = OutboxMessage(
        channel=ask.channel,
        recipient=ask.recipient,
        patron_id=ask.patron_id,
        text=str(message["text"]),
        buttons=buttons or None,
        produced_by=f"campaign:{ask.campaign_id}",
        created_at=now,
    )
    session.add(row)
    session.flush()
    return int(row.id)


# ── what the action server does with it ──────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Question:
    """A follow-up question as the patron reads it."""

    delivery_id: int
    asks: str  # csat, nps, helpful, open
    language: str
    text: str  # the campaign's message with the patron's fields and the opt-out hint
    buttons: list[dict[str, str]]  # the campaign's own buttons, titled in the patron's language


def question_for(*, session: Session, delivery_id: int, patron_id: int) -> Question | None:
    """The question of `delivery_id` for the patron of this conversation, or None when it is not one
    (no such delivery, not theirs, not a question)."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.patron_id != patron_id:
        return None
    campaign = session.get(Campaign, delivery.campaign_id)
    patron = session.get(Patron, patron_id)
    if campaign is None or patron is None or campaign.kind != "question":
        return None
    message = campaign.message if isinstance(campaign.message, dict) else {}
    language, text = campaign_text(
        campaign_message=message, language=patron.language, fields=patron_fields(patron)
    )
    buttons = button_titles(campaign.buttons if isinstance(campaign.buttons, list) else None, language)
    return Question(
        delivery_id=delivery_id,
        asks=str(campaign.asks or "open"),
        language=language,
        text=text,
        buttons=buttons,
    )


_NO = re.compile(
    r"^(?:no|nope|nah|not really|not at all|not much|no it didn'?t|it didn'?t)\b|^(?:没|不|一点也不|并没)",
    re.IGNORECASE,
)
_YES = re.compile(r"^(?:yes|yeah|yep|sure|it did|absolutely|definitely|very much)\b|^(?:有|是|对|挺有|很有)")


def yes_or_no(text: str) -> bool | None:
    """A typed answer to a yes/no question ("yes, a lot", "没有帮助"), or None when it gives neither."""
    cleaned = text.strip().lower()
    if is_affirmation(cleaned):
        return True
    if _NO.search(cleaned):
        return False
    if _YES.search(cleaned):
        return True
    return None


@dataclass(frozen=True)
class Answer:
    """An answer recorded against its delivery."""

    feedback_id: int
    asks: str
    csat: int | None = None
    nps: int | None = None
    helpful: bool | None = None
    comment: str | None = None


def read_answer(asks: str, text: str, *, tapped: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The feedback values an answer gives: a rating (csat 1-5, nps 0-10) or yes/no (helpful) when it
    gives one, and the patron's words as the comment unless they are only that rating. A csat answer
    in words alone ("not really, the book never came") is a comment with no rating: never a guessed one."""
    tapped = tapped or {}
    words = text.strip()[:MAX_TEXT]
    values: dict[str, Any] = {}
    if asks == "csat":
        values["csat"] = parse_csat(tapped["csat"]) if "csat" in tapped else parse_csat(words)
    elif asks == "nps":
        values["nps"] = parse_nps(tapped["nps"]) if "nps" in tapped else parse_nps(words)
    elif asks == "helpful":
        values["helpful"] = (
            tapped["helpful"].startswith(("yes", "true")) if "helpful" in tapped else yes_or_no(words)
        )
    rating = next((value for value in values.values() if value is not None), None)
    only_rating = bool(tapped) or (
        rating is not None and (rating_correction(words) is not None or len(words) <= 15)
    )
    values["comment"] = None if only_rating or not words else words
    return values


def record_answer(
    *,
    session: Session,
    patron_id: int,
    delivery_id: int,
    text: str,
    tapped: Mapping[str, str] | None = None,
    rasa_sender_id: str | None = None,
) -> Answer | None:
    """Record the patron's answer to the follow-up question of `delivery_id` (a feedback row with the
    delivery's id); a second answer to the same question changes the first. None when the delivery is
    not this patron's question, or the answer says nothing."""
    delivery = session.get(Delivery, delivery_id)
    campaign = session.get(Campaign, delivery.campaign_id) if delivery is not None else None
    if delivery is None or delivery.patron_id != patron_id or campaign is None or campaign.kind != "question":
        return None
    asks = str(campaign.asks or "open")
    values = read_answer(asks, text, tapped=tapped)
    if all(value is None for value in values.values()):
        return None
    row = session.execute(
        select(Feedback)
        .where(Feedback.delivery_id == delivery_id, Feedback.patron_id == patron_id)
        .order_by(Feedback.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if row is None:
        row = record_feedback(session=session, patron_id=patron_id, rasa_sender_id=rasa_sender_id, **values)
        row.delivery_id = delivery_id
    else:
        for name, value in values.items():
            if value is not None:  # a rating after a comment keeps the comment, and the other way round
                setattr(row, name, value)
    session.flush()
    return Answer(feedback_id=int(row.id), asks=asks, **values)
