"""Telegram updates handled once: recorded before Telegram is answered, then each one's turn run in the
background, its replies sent, and the update marked handled; updates a dead process left are taken over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from sqlalchemy import update as update_rows
from sqlalchemy.engine import Engine
from telegram.error import TelegramError
from telegram.ext import ExtBot

from bot.channels.quiet import spoken
from bot.channels.updates import claim_abandoned, forget_old, mark_handled, record_update, renew_claims
from bot.crm.database import session_scope
from bot.crm.models import ChannelUpdate
from bot.pseudonyms import fingerprint
from bot.redaction import describe_failure, failure_stack
from connectors.replies import APOLOGY, text_only
from connectors.telegram_send import mark_unreachable, send_replies
from connectors.telegram_updates import (
    COMMAND_INTENTS,
    Incoming,
    is_callback_key,
    parse_body,
    payload_of_key,
    read_update,
)
from connectors.turn_replay import replies_of_turn, tracker_of

log = logging.getLogger(__name__)

CHANNEL = "telegram"
# How often this process renews its claims and takes over updates whose process died (and at start).
TAKEOVER_SECONDS = 10.0
# How often handled updates older than two days are forgotten.
FORGET_SECONDS = 3600.0
# Turns run at once by this process; the others wait their turn. Rasa's model holds the event loop while
# it reads a message, so with every queued update's turn running at once the webhook's own steps (the
# record, the 200) waited behind all of them: seconds at 50 updates/s.
TURNS_AT_ONCE = 2
# On stop, how long turns under way may finish before they are cancelled (then taken over later).
DRAIN_SECONDS = 5.0

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


@dataclass(frozen=True)
class Job:
    """One recorded update to handle: as Telegram sent it, what it asks, whether a dead process left it,
    and how many of its reply messages went before."""

    key: str
    update: dict[str, Any]
    incoming: Incoming
    taken_over: bool = False
    sent: int = 0


# How many messages of an update's replies went, kept in its recorded body (not a Telegram field), so
# that a process taking it over sends only the rest. A message whose request was under way when the
# process died is sent again (at least once: a patron may see it twice, never not at all).
SENT_KEY = "_patronbot_sent"


def note_sent(*, engine: Engine, key: str, update: dict[str, Any], sent: int) -> None:
    """Record that the first `sent` messages of the update's replies went."""
    with session_scope(engine) as session:
        session.execute(
            update_rows(ChannelUpdate)
            .where(
                ChannelUpdate.channel == CHANNEL,
                ChannelUpdate.update_key == key,
                ChannelUpdate.handled_at.is_(None),
            )
            .values(body=json.dumps(update | {SENT_KEY: sent}, ensure_ascii=False))
            .execution_options(synchronize_session=False)
        )


def message_id(key: str) -> str:
    """The Rasa message id of an update's user event: how a taken-over update finds its turn."""
    return f"{CHANNEL}:{key}"


class UpdateHandler:
    """Records each update once and handles it in the background (see the module's docstring)."""

    def __init__(
        self, *, engine: Engine, bot: ExtBot[int], on_new_message: OnNewMessage, agent: Callable[[], Any]
    ) -> None:
        self.engine = engine
        self.bot = bot
        self.on_new_message = on_new_message
        self.agent = agent
        self.in_flight: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.turns = asyncio.Semaphore(TURNS_AT_ONCE)

    async def accept(self, update: dict[str, Any], body: str) -> bool:
        """Record an update (committed on return: Telegram may be answered 200) and start handling it;
        False for an update ignored by rule or recorded before (a redelivery)."""
        incoming = read_update(update)
        if incoming.kind == "ignored":
            return False
        key = str(update["update_id"])
        new = await asyncio.to_thread(
            record_update, engine=self.engine, channel=CHANNEL, key=key, sender=incoming.sender, body=body
        )
        if new:
            self._schedule(Job(key=key, update=update, incoming=incoming))
        return new

    def _schedule(self, job: Job) -> None:
        self.in_flight.add(job.key)
        task = asyncio.get_running_loop().create_task(self._handle(job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, job: Job) -> None:
        async with self.turns:
            await self._handle_now(job)

    async def _handle_now(self, job: Job) -> None:
        key, incoming = job.key, job.incoming
        try:
            if incoming.kind == "turn":
                await self._turn(job)
            elif incoming.kind == "media":
                await self._send(job, [{"text": text_only(incoming.language)}])
            elif incoming.kind == "kicked" and incoming.chat_id is not None:
                await asyncio.to_thread(mark_unreachable, engine=self.engine, chat_id=incoming.chat_id)
            await asyncio.to_thread(mark_handled, engine=self.engine, channel=CHANNEL, key=key)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the CRM is down, say: the update waits and is taken over later
            log.error(
                "telegram: update %s of %s not finished (%s)\n%s",
                key,
                fingerprint(incoming.sender or "-"),
                describe_failure(error),
                failure_stack(error),
            )
        finally:
            self.in_flight.discard(key)

    async def _turn(self, job: Job) -> None:
        key, incoming = job.key, job.incoming
        sender = str(incoming.sender)
        if incoming.callback_query_id is not None:
            await self._answer_callback(incoming.callback_query_id)
        if job.taken_over:
            replies = await replies_of_turn(self.agent(), sender, message_id(key))
            if replies is not None:  # the turn happened before the process died: only its replies go
                await self._send(job, replies)
                return
        text = await self._rasa_text(sender, incoming)
        if text is None:
            return
        collector = CollectingOutputChannel()
        try:
            await self.on_new_message(
                UserMessage(
                    text,
                    collector,
                    sender,
                    input_channel=CHANNEL,
                    message_id=message_id(key),
                    metadata=incoming.metadata,
                )
            )
        except Exception as error:  # the patron gets an apology; the log names the failure, not the text
            log.error(
                "telegram: handling a message from %s failed (%s)\n%s",
                fingerprint(sender),
                describe_failure(error),
                failure_stack(error),
            )
        # Nothing at all: the turn failed, and the patron is told. The quiet marker: silence meant.
        apology = [{"text": APOLOGY[incoming.language or "zh"]}]
        replies = spoken(collector.messages) if collector.messages else apology
        await self._send(job, replies)

    async def _send(self, job: Job, replies: list[dict[str, Any]]) -> None:
        """The replies not yet sent, each one noted once it went."""
        if job.incoming.chat_id is None:
            return

        async def sent(count: int) -> None:
            await asyncio.to_thread(note_sent, engine=self.engine, key=job.key, update=job.update, sent=count)

        await send_replies(
            bot=self.bot,
            engine=self.engine,
            chat_id=job.incoming.chat_id,
            replies=replies,
            skip=job.sent,
            on_sent=sent,
        )

    async def _answer_callback(self, query_id: str) -> None:
        """Telegram shows a spinner on a tapped button until the tap is answered: answered at once."""
        try:
            await self.bot.answer_callback_query(query_id)
        except TelegramError as error:  # too late (over 15 minutes) or the network: the turn still runs
            log.info("telegram: a button tap was not acknowledged (%s)", describe_failure(error))

    async def _tracker(self, sender: str, *, full: bool) -> Any:
        return await tracker_of(self.agent(), sender, full=full)

    async def _rasa_text(self, sender: str, incoming: Incoming) -> str | None:
        """What Rasa gets: a tapped button's payload (a long one mapped back from the bot's buttons), a
        command's intent with the patron's app language as the language of a first conversation, or
        the text."""
        text = incoming.text
        if incoming.callback_data is not None and is_callback_key(incoming.callback_data):
            tracker = await self._tracker(sender, full=True)
            payloads = [
                str(button.get("payload"))
                for event in (tracker.events if tracker is not None else [])
                if getattr(event, "type_name", None) == "bot"
                for button in ((getattr(event, "data", None) or {}).get("buttons") or [])
                if isinstance(button, dict) and button.get("payload")
            ]
            found = payload_of_key(incoming.callback_data, payloads)
            if found is None:
                log.info("telegram: a tap from %s on a button no longer known", fingerprint(sender))
            return found
        if incoming.command in COMMAND_INTENTS and incoming.language is not None:
            tracker = await self._tracker(sender, full=False)
            if tracker is None or tracker.get_slot("language") is None:
                # The language slot is filled from the `language` entity (domain.yml).
                return f"{text}{json.dumps({'language': incoming.language})}"
        return text

    async def take_over_abandoned(self) -> int:
        """Claim updates recorded but not handled whose process died, and handle them; how many."""
        taken = 0
        while True:
            claimed = await asyncio.to_thread(claim_abandoned, engine=self.engine, channel=CHANNEL)
            for key, body in claimed:
                if key in self.in_flight:  # this process's own, still queued: the claim renewed it
                    continue
                try:
                    update = parse_body(body.encode("utf-8"))
                except ValueError:
                    update = {}
                sent = update.pop(SENT_KEY, 0)
                incoming = read_update(update)
                if incoming.kind == "ignored":
                    await asyncio.to_thread(mark_handled, engine=self.engine, channel=CHANNEL, key=key)
                    continue
                sent = sent if isinstance(sent, int) and not isinstance(sent, bool) else 0
                self._schedule(Job(key=key, update=update, incoming=incoming, taken_over=True, sent=sent))
                taken += 1
            if len(claimed) < 50:
                return taken

    async def maintain(self) -> None:
        """Every TAKEOVER_SECONDS: hold this process's updates, take over abandoned ones; hourly, forget
        what no turn needs again (bot/channels/updates.py forget_old)."""
        forgotten_at = 0.0
        while True:
            try:
                await asyncio.to_thread(
                    renew_claims, engine=self.engine, channel=CHANNEL, keys=sorted(self.in_flight)
                )
                taken = await self.take_over_abandoned()
                if taken:
                    log.info("telegram: took over %d update(s) left unhandled", taken)
                if time.monotonic() - forgotten_at > FORGET_SECONDS:
                    await asyncio.to_thread(forget_old, engine=self.engine)
                    forgotten_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.error("telegram: taking over updates failed (%s)", describe_failure(error))
            await asyncio.sleep(TAKEOVER_SECONDS)

    async def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Let turns under way finish (for at most `timeout` seconds), then cancel the rest: they were
        recorded, so this or another process takes them over."""
        pending = list(self.tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*late, return_exceptions=True)
