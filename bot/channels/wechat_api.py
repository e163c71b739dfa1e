"""WeChat's API through wechatpy: customer-service and template messages, each outcome as an `Attempt`."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import requests
import urllib3.exceptions
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

from bot.channels.wechat_token import SharedToken
from bot.crm.database import session_scope
from bot.crm.models import ChannelUpdate, OutboxMessage, utcnow
from bot.outbound.dispatcher import SENT, Attempt
from bot.outbound.outbox import buttons_of

log = logging.getLogger(__name__)

CHANNEL = "wechat"
# Customer-service messages may go only this long after the patron's last message or menu tap; a
# minute is kept in hand for the clocks of this machine and WeChat's.
WINDOW = dt.timedelta(hours=48) - dt.timedelta(minutes=1)
# (connect, read) seconds; a read timeout means the request went out and its outcome is unknown.
TIMEOUT = (5.0, 15.0)

# WeChat's answers that say the token is not (or no longer) valid: renewed once, then retried.
TOKEN_REFUSED = {40001, 40014, 42001}
# errcode -> what came of the attempt.
OUTCOMES: dict[int, Attempt] = {
    45015: Attempt("skipped", reason="window_closed"),  # over 48 h since the patron's last message
    43004: Attempt("blocked", reason="unsubscribed"),  # the patron no longer follows the account
    43019: Attempt("blocked", reason="blacklisted"),  # the account put the patron on its blacklist
    43101: Attempt("blocked", reason="refused"),  # the patron refused the account's messages
    40003: Attempt("failed", reason="invalid_openid"),
    40037: Attempt("failed", reason="invalid_template"),
    45047: Attempt("retry", reason="quota_45047", retry_after=600),  # too many messages to the patron
    45009: Attempt("retry", reason="quota_45009", retry_after=3600),  # the account's daily quota
    45011: Attempt("retry", reason="quota_45011", retry_after=60),  # too many calls a minute
    -1: Attempt("retry", reason="system_busy", retry_after=5),
}


class WeChatApi:
    """One Official Account's API client (wechatpy's), its base URL from the settings and its access
    token shared through the CRM."""

    def __init__(
        self,
        *,
        engine: Engine,
        appid: str,
        secret: str,
        base_url: str,
        timeout: tuple[float, float] = TIMEOUT,
    ) -> None:
        self.appid = appid
        self.timeout = timeout
        root = base_url.rstrip("/")
        self.client = WeChatClient(
            appid, secret, session=None, timeout=timeout, auto_retry=False
        )  # auto_retry off: wechatpy would fetch a token per refusal, without limit
        self.client.API_BASE_URL = f"{root}/cgi-bin/"
        self.token_url = f"{root}/cgi-bin/token"
        self.tokens = SharedToken(engine=engine, name=f"{CHANNEL}:{appid}", fetch=self._fetch_token)
        self.client.session = self.tokens
        # wechatpy fetches from the public URL and without a timeout: ours goes through the shared row.
        self.client.fetch_access_token = lambda: self.tokens.refresh(stale=self.tokens.get(""))

    def _fetch_token(self) -> tuple[str, int]:
        """Ask WeChat for a new token (called by one process at a time, holding the token's row)."""
        answer = self.client._http.get(
            self.token_url,
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.client.secret},
            timeout=self.timeout,
        )
        answer.raise_for_status()
        result = answer.json()
        if not isinstance(result, dict) or not result.get("access_token"):
            code = result.get("errcode") if isinstance(result, dict) else None
            raise WeChatClientException(code, "no access token in WeChat's answer")
        return str(result["access_token"]), int(result.get("expires_in") or 7200)

    def send_text(self, *, openid: str, text: str) -> Attempt:
        """A customer-service text message (only within 48 hours of the patron's last message)."""
        return self._call(
            "message/custom/send", {"touser": openid, "msgtype": "text", "text": {"content": text}}
        )

    def send_template(self, *, openid: str, template_id: str, text: str) -> Attempt:
        """An approved template message whose `content` field carries the text (outside the window)."""
        data = {"content": {"value": text}}
        return self._call(
            "message/template/send", {"touser": openid, "template_id": template_id, "data": data}
        )

    def _call(self, endpoint: str, data: dict[str, Any]) -> Attempt:
        """POST to the API; a refused token is renewed once (unless another process did) and the call
        retried once."""
        for attempt in range(2):
            try:
                token = self.tokens.current()
            except Exception as error:
                return _not_sent(error, "token")
            try:
                self.client.post(endpoint, data=dict(data), params={"access_token": token})
                return SENT
            except WeChatClientException as error:
                if error.errcode in TOKEN_REFUSED:
                    if attempt > 0:
                        break
                    try:
                        self.tokens.refresh(stale=token)
                    except Exception as refresh_error:
                        return _not_sent(refresh_error, "token")
                    continue
                return _outcome(error)
            except requests.RequestException as error:
                return _transport_outcome(error)
        return Attempt("retry", reason="token_refused")


def _outcome(error: WeChatClientException) -> Attempt:
    if error.errcode is None:  # an HTTP error status
        status = getattr(error.response, "status_code", 0) or 0
        if status >= 500 or status == 429:
            return Attempt("retry", reason=f"http_{status}")
        return Attempt("failed", reason=f"http_{status}")
    return OUTCOMES.get(int(error.errcode), Attempt("failed", reason=f"errcode_{error.errcode}"))


def _transport_outcome(error: requests.RequestException) -> Attempt:
    """A request that surely never reached WeChat is retried; one that may have is not sent again."""
    if isinstance(error, requests.ConnectTimeout) or _never_connected(error):
        return Attempt("retry", reason="unreachable")
    if isinstance(error, requests.Timeout | requests.ConnectionError):
        return Attempt("unknown", reason="timeout")
    return Attempt("retry", reason=type(error).__name__)


def _never_connected(error: requests.RequestException) -> bool:
    cause = error.args[0] if error.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


def _not_sent(error: Exception, stage: str) -> Attempt:
    """No token could be had: nothing was sent, so it is tried again later."""
    if isinstance(error, WeChatClientException) and error.errcode not in (None, -1):
        # A wrong AppID/AppSecret or this machine's address not on the allow-list (40164): the operator
        # must act; retried with back-off meanwhile.
        return Attempt("retry", reason=f"{stage}_errcode_{error.errcode}")
    return Attempt("retry", reason=f"{stage}_{type(error).__name__}")


def last_inbound_at(*, engine: Engine, sender: str) -> dt.datetime | None:
    """When the patron (Rasa sender id "wechat:<openid>") last wrote or tapped the menu, as every
    process of the bot recorded it in `channel_update`."""
    with session_scope(engine) as session:
        found = session.execute(
            select(func.max(ChannelUpdate.received_at)).where(
                ChannelUpdate.channel == CHANNEL, ChannelUpdate.sender == sender
            )
        ).scalar_one_or_none()
    if not isinstance(found, dt.datetime):
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=dt.UTC)


def window_open(*, engine: Engine, sender: str, now: dt.datetime | None = None) -> bool:
    """Whether a customer-service message may go to the patron now."""
    last = last_inbound_at(engine=engine, sender=sender)
    return last is not None and (now or utcnow()) - last < WINDOW


def with_options(text: str, titles: list[str]) -> str:
    """A message's buttons as numbered lines under its text: WeChat's text messages have no buttons,
    so the patron types the number or the title (connectors/wechat.py maps it back)."""
    return "\n".join([text, *(f"{number}. {title}" for number, title in enumerate(titles, start=1))])


class WeChatSender:
    """The outbox's WeChat sender (registered with the dispatcher as "wechat"): a customer-service
    message within the 48-hour window; outside it a template message when a template is set, else
    skipped as `window_closed` and never attempted. Never a mass push: those are 4 a month."""

    def __init__(self, *, api: WeChatApi, engine: Engine, template_id: str = "") -> None:
        self.api = api
        self.engine = engine
        self.template_id = template_id

    async def send(self, message: OutboxMessage) -> Attempt:
        return await asyncio.to_thread(self.deliver, message)

    def deliver(self, message: OutboxMessage) -> Attempt:
        sender = str(message.recipient)
        channel, _, openid = sender.partition(":")
        if channel != CHANNEL or not openid:
            return Attempt("failed", reason="not_a_wechat_recipient")
        text = with_options(str(message.text), [button["title"] for button in buttons_of(message)])
        if window_open(engine=self.engine, sender=sender):
            attempt = self.api.send_text(openid=openid, text=text)
            if attempt.reason != "window_closed" or not self.template_id:
                return attempt
        if self.template_id:
            return self.api.send_template(openid=openid, template_id=self.template_id, text=text)
        return Attempt("skipped", reason="window_closed")
