"""The WeChat Official Account channel: /webhooks/wechat/webhook, each push handled once, answered
within WeChat's 5 seconds (passively when the turn is quick, else through the customer-service API).

Plain-text mode only (encrypted "safe" mode may come later). Staff replies go out through the outbox
dispatcher, within the 48-hour window or as a template message (bot/channels/wechat_api.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.engine import Engine

from bot.channels.quiet import spoken
from bot.channels.reachability import set_reachable
from bot.channels.updates import claim_abandoned, forget_old, mark_handled, record_update, renew_claims
from bot.channels.wechat_api import CHANNEL, WeChatApi, WeChatSender
from bot.language import detect_language
from bot.pseudonyms import fingerprint
from bot.redaction import describe_failure, failure_stack
from bot.settings import Settings, get_settings
from connectors.outbound import dispatcher
from connectors.replies import APOLOGY
from connectors.rest import BadRequestError, crm_engine
from connectors.turn_replay import replies_of_turn
from connectors.wechat_messages import (
    ONLY_TEXT,
    SUCCESS,
    Inbound,
    fresh,
    parse_push,
    passive_reply,
    reply_text,
    signature_valid,
    turn_id,
)
from connectors.wechat_options import as_tapped

log = logging.getLogger(__name__)


# WeChat waits 5 seconds for an answer, then asks again: a turn done within this is answered in the
# response itself; a slower one is answered `success` and its replies go through the API.
PASSIVE_WITHIN = 4.5
# Replies pushed through the API after a slow turn: tries, and the longest wait between two.
PUSH_TRIES = 4
PUSH_MAX_WAIT = 30.0
# How often this process renews its claims on the pushes it is handling (under the 60 s lease) and
# looks for pushes a process that died left unhandled.
SWEEP_EVERY = 30.0
FORGET_EVERY = 3600.0
# How long a stopping server waits for turns in flight to answer their patrons.
STOP_WAIT = 10.0

NewMessage = Callable[[UserMessage], Awaitable[Any]]


class WeChatInput(InputChannel):  # type: ignore[misc]
    """WeChat's server pushes in, the bot's replies out; the sender id is ``wechat:<openid>``."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> WeChatInput:
        # No secret is in Rasa's credentials file: the channel reads PATRONBOT_WECHAT_* itself.
        return cls(get_settings())

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        if not self.settings.wechat_on:
            raise ValueError(
                "the WeChat channel needs PATRONBOT_WECHAT_TOKEN, PATRONBOT_WECHAT_APPID and"
                " PATRONBOT_WECHAT_SECRET"
            )
        self.token = self.settings.wechat_token.get_secret_value() if self.settings.wechat_token else ""
        self._api: WeChatApi | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._in_flight: set[str] = set()  # keys of the pushes this process is handling
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def engine(self) -> Engine:
        return crm_engine(self.settings.crm_database_url)

    @property
    def api(self) -> WeChatApi:
        if self._api is None:
            secret = self.settings.wechat_secret.get_secret_value() if self.settings.wechat_secret else ""
            self._api = WeChatApi(
                engine=self.engine,
                appid=self.settings.wechat_appid,
                secret=secret,
                base_url=self.settings.wechat_api_url,
            )
        return self._api

    def blueprint(self, on_new_message: NewMessage) -> Blueprint:
        webhook = Blueprint("patronbot_wechat_webhook", __name__)

        @webhook.listener("after_server_start")
        async def start(app: Any, _loop: Any) -> None:
            sender = WeChatSender(
                api=self.api, engine=self.engine, template_id=self.settings.wechat_template_id
            )
            outbox = dispatcher(app)
            outbox.register(CHANNEL, sender.send)
            outbox.start()
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(app, on_new_message))

        @webhook.listener("before_server_stop")
        async def stop(app: Any, _loop: Any) -> None:
            if self._sweeper is not None:
                self._sweeper.cancel()
                await asyncio.gather(self._sweeper, return_exceptions=True)
            if self._running:
                await asyncio.wait(set(self._running), timeout=STOP_WAIT)
            await dispatcher(app).stop()

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["GET"])
        async def handshake(request: Request) -> HTTPResponse:
            """WeChat checks the server URL: the echostr comes back only under a valid signature."""
            if not self._signed(request):
                return response.text("invalid signature", status=403)
            return response.text(str(request.args.get("echostr") or ""))

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse | None:
            return await self._receive(request, on_new_message)

        return webhook

    def _signed(self, request: Request) -> bool:
        return signature_valid(
            token=self.token,
            signature=str(request.args.get("signature") or ""),
            timestamp=str(request.args.get("timestamp") or ""),
            nonce=str(request.args.get("nonce") or ""),
        )

    def _check(self, request: Request) -> Inbound | HTTPResponse:
        """The push, or the 4xx that refuses it: signature first, then freshness, then its body."""
        if not self._signed(request):
            return response.text("invalid signature", status=403)
        if not fresh(str(request.args.get("timestamp") or ""), now=time.time()):
            return response.text("timestamp more than 5 minutes away: refused as a replay", status=403)
        try:
            return parse_push(request.body, max_chars=self.settings.max_message_chars)
        except BadRequestError as error:
            return response.text(str(error), status=error.status)

    async def _record(self, inbound: Inbound, body: bytes) -> HTTPResponse | None:
        """Record the push once (None: new, to be handled here), or the answer that ends it now."""
        if inbound.kind == "ignored" or inbound.key is None:
            if inbound.kind == "unsubscribe":
                await self._in_thread(
                    set_reachable,
                    engine=self.engine,
                    channel=CHANNEL,
                    external_id=inbound.openid,
                    reachable=False,
                )
            return response.text(SUCCESS)
        try:
            new = await asyncio.to_thread(
                record_update,
                engine=self.engine,
                channel=CHANNEL,
                key=inbound.key,
                sender=inbound.sender,
                body=body.decode("utf-8"),
            )
        except Exception as error:  # the CRM is down: WeChat asks again
            log.error("wechat: a push could not be recorded (%s)", describe_failure(error))
            return response.text("the bot cannot record messages right now", status=503)
        # Not new: a redelivery, or the same push being handled now; answered once, by the first.
        return None if new else response.text(SUCCESS)

    async def _receive(self, request: Request, on_new_message: NewMessage) -> HTTPResponse | None:
        began = time.monotonic()
        checked = self._check(request)
        if isinstance(checked, HTTPResponse):
            return checked
        inbound = checked
        refused = await self._record(inbound, request.body)
        if refused is not None:
            return refused
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        handoff: asyncio.Future[bool] = loop.create_future()
        self._spawn(self._handle(request.app, on_new_message, inbound, ready=ready, handoff=handoff))
        try:
            text = await asyncio.wait_for(asyncio.shield(ready), PASSIVE_WITHIN - (time.monotonic() - began))
        except TimeoutError:
            handoff.set_result(False)  # the replies go through the API once the turn is done
            return response.text(SUCCESS)
        except BaseException:
            if not handoff.done():
                handoff.set_result(False)
            raise
        await self._answer(request, inbound, text, handoff)
        return None

    async def _answer(
        self, request: Request, inbound: Inbound, text: str, handoff: asyncio.Future[bool]
    ) -> None:
        """Write the passive reply; if the connection is gone (Sanic cancels the request, or the write
        fails), the replies go through the API instead."""
        body = passive_reply(inbound, text, now=time.time()) if text else SUCCESS
        try:
            answer = await request.respond(content_type="application/xml" if text else "text/plain")
            await answer.send(body.encode("utf-8"), end_stream=True)
        except BaseException:
            if not handoff.done():
                handoff.set_result(False)
            raise
        if not handoff.done():
            handoff.set_result(True)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _handle(
        self,
        app: Any,
        on_new_message: NewMessage,
        inbound: Inbound,
        *,
        ready: asyncio.Future[str] | None,
        handoff: asyncio.Future[bool] | None,
        taken_over: bool = False,
    ) -> None:
        """One push's turn, detached from its request: the replies are handed to the request while it
        waits, else pushed through the API; then the push is marked handled. A push taken over from a
        dead process whose turn already happened gets that turn's replies; the turn is not run again."""
        if inbound.key is not None:
            self._in_flight.add(inbound.key)
        try:
            if inbound.subscribes:
                await self._in_thread(
                    set_reachable,
                    engine=self.engine,
                    channel=CHANNEL,
                    external_id=inbound.openid,
                    reachable=True,
                )
            made = None
            if taken_over and inbound.key is not None:
                agent = getattr(app.ctx, "agent", None)
                made = await replies_of_turn(agent, inbound.sender, turn_id(inbound.key))
            if made is not None:
                text = reply_text(spoken(made))
            elif inbound.kind == "unsupported":
                text = ONLY_TEXT
            else:
                text = reply_text(await self._turn(app, on_new_message, inbound))
            if ready is not None and not ready.done():
                ready.set_result(text)
            passive = await handoff if handoff is not None else False
            if not passive and text:
                await self._push(inbound, text)
        except Exception as error:
            log.error(
                "wechat: handling a push from %s failed (%s)\n%s",
                fingerprint(inbound.sender),
                describe_failure(error),
                failure_stack(error),
            )
        finally:
            if ready is not None and not ready.done():
                ready.set_result("")
            if inbound.key is not None:
                await self._in_thread(mark_handled, engine=self.engine, channel=CHANNEL, key=inbound.key)
                self._in_flight.discard(inbound.key)

    async def _turn(self, app: Any, on_new_message: NewMessage, inbound: Inbound) -> list[dict[str, Any]]:
        """The Rasa turn; an apology (in the patron's language) when it failed or said nothing."""
        text, metadata = await as_tapped(getattr(app.ctx, "agent", None), self.engine, inbound)
        collector = CollectingOutputChannel()
        try:
            await on_new_message(
                UserMessage(
                    text,
                    collector,
                    inbound.sender,
                    input_channel=CHANNEL,
                    message_id=turn_id(inbound.key) if inbound.key is not None else None,
                    metadata=metadata,
                )
            )
        except Exception as error:
            log.error(
                "wechat: handling a message from %s failed (%s)\n%s",
                fingerprint(inbound.sender),
                describe_failure(error),
                failure_stack(error),
            )
        if not collector.messages:
            collector.messages.append({"text": APOLOGY[detect_language(inbound.text) or "zh"]})
        return spoken(collector.messages)  # a librarian has it: silence is the answer

    async def _push(self, inbound: Inbound, text: str) -> None:
        """A slow turn's replies through the customer-service API (the patron just wrote, so the window
        is open); sent again only when WeChat surely did not take them."""
        wait = 1.0
        for _ in range(PUSH_TRIES):
            attempt = await asyncio.to_thread(self.api.send_text, openid=inbound.openid, text=text)
            if attempt.outcome != "retry":
                break
            await asyncio.sleep(min(attempt.retry_after or wait, PUSH_MAX_WAIT))
            wait *= 2
        if attempt.outcome != "sent":
            log.warning(
                "wechat: the replies to %s were not sent (%s: %s)",
                fingerprint(inbound.sender),
                attempt.outcome,
                attempt.reason,
            )

    async def _sweep(self, app: Any, on_new_message: NewMessage) -> None:
        """Take over pushes a process recorded and never handled (it died): their turns run here and
        their replies go through the API; hourly, forget what no turn needs again."""
        forgotten_at = 0.0
        while True:
            try:
                if time.monotonic() - forgotten_at > FORGET_EVERY:
                    await asyncio.to_thread(forget_old, engine=self.engine)
                    forgotten_at = time.monotonic()
                # Pushes this process is still handling (a queue of slow turns) are held on to first.
                await asyncio.to_thread(
                    renew_claims, engine=self.engine, channel=CHANNEL, keys=sorted(self._in_flight)
                )
                for key, body in await asyncio.to_thread(
                    claim_abandoned, engine=self.engine, channel=CHANNEL
                ):
                    if key in self._in_flight:  # its own, renewed just now
                        continue
                    try:
                        inbound = parse_push(body.encode("utf-8"), max_chars=self.settings.max_message_chars)
                    except BadRequestError:
                        await asyncio.to_thread(mark_handled, engine=self.engine, channel=CHANNEL, key=key)
                        continue
                    self._spawn(
                        self._handle(app, on_new_message, inbound, ready=None, handoff=None, taken_over=True)
                    )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.error(
                    "wechat: pushes left unhandled could not be taken over (%s)", describe_failure(error)
                )
            await asyncio.sleep(SWEEP_EVERY)

    async def _in_thread(self, work: Callable[..., Any], **options: Any) -> None:
        """CRM work off the event loop; a failure is logged (without patron data), not raised."""
        try:
            await asyncio.to_thread(work, **options)
        except Exception as error:
            log.error(
                "wechat: %s failed (%s)", getattr(work, "__name__", "a CRM update"), describe_failure(error)
            )
