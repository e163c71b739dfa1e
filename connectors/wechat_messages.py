"""WeChat's pushes read safely (signature, freshness, XML without DTDs) and the bot's replies written."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import defusedxml
import defusedxml.ElementTree
from wechatpy import parse_message
from wechatpy.replies import TextReply
from wechatpy.utils import WeChatSigner

from bot.language import is_payload
from connectors.replies import text_only
from connectors.rest import MAX_SOURCE_CHARS, BadRequestError, TooLargeError, clean_text

# WeChat's pushes are small (a text message holds at most 2048 bytes): anything far larger is not one.
MAX_BODY_BYTES = 64 * 1024
# A push signed longer ago than this (or this far in the future) is refused as a replay.
MAX_CLOCK_SKEW = 300
# An openid is 28 characters of [A-Za-z0-9_-]; a little room is left, nothing else is accepted.
_OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,20}")

# The answer to a message the bot cannot read (an image, a location): it says so in both languages,
# since WeChat tells nothing of the patron's language and there are no words to tell it by.
ONLY_TEXT = text_only(None)
# The greeting turn a new follower (or a poster's QR code scanned) starts.
GREETING = "/greet"
# WeChat's answer that there is nothing to reply passively.
SUCCESS = "success"


@dataclass(frozen=True)
class Inbound:
    """A checked push from WeChat and what the channel does with it.

    kind: "turn" (a Rasa turn on `text`), "unsupported" (answered with ONLY_TEXT), "unsubscribe" (the
    patron left: marked unreachable), "ignored" (answered `success`, nothing stored).
    key: the once-only key of the push (MsgId, or openid:CreateTime:Event for an event).
    """

    kind: str
    openid: str
    account: str
    key: str | None
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    subscribes: bool = False  # a follow (or a follow by QR code): the patron is reachable again

    @property
    def sender(self) -> str:
        return f"wechat:{self.openid}"


def signature_valid(*, token: str, signature: str, timestamp: str, nonce: str) -> bool:
    """WeChat's signature of a push (SHA-1 of the sorted token, timestamp and nonce), compared in
    constant time (wechatpy's check_signature compares with `!=`)."""
    signer = WeChatSigner()
    signer.add_data(token, timestamp, nonce)
    return hmac.compare_digest(signer.signature.encode(), signature.encode("utf-8", "replace"))


def fresh(timestamp: str, *, now: float) -> bool:
    """Whether a push's timestamp is within MAX_CLOCK_SKEW of now (older ones are replays)."""
    if not _DIGITS.fullmatch(timestamp):
        return False
    return abs(now - int(timestamp)) <= MAX_CLOCK_SKEW


def parse_push(body: bytes, *, max_chars: int) -> Inbound:
    """Check and read a push's XML body; BadRequestError (400) or TooLargeError (413) says why not."""
    if len(body or b"") > MAX_BODY_BYTES:
        raise TooLargeError(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        text = (body or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestError("the body must be UTF-8 XML") from None
    fields = _fields(text)
    openid = fields.get("FromUserName", "").strip()
    if not openid:
        if "Encrypt" in fields:
            raise BadRequestError("encrypted (safe) mode is not supported: set the server to plain-text mode")
        raise BadRequestError("'FromUserName' is required: the patron's openid")
    if not _OPENID.fullmatch(openid):
        raise BadRequestError("'FromUserName' is not an openid")
    account = fields.get("ToUserName", "").strip()
    if not account:
        raise BadRequestError("'ToUserName' is required: the Official Account's id")
    kind = fields.get("MsgType", "").strip().lower()
    if not kind:
        raise BadRequestError("'MsgType' is required")
    try:
        message = parse_message(text)
    except Exception:  # defusedxml let it through, so it is well formed: a field wechatpy cannot read
        raise BadRequestError("the XML is not a WeChat message") from None
    if kind == "event":
        return _event(fields, openid=openid, account=account)
    return _message(fields, message, openid=openid, account=account, max_chars=max_chars)


def _message(
    fields: Mapping[str, str], message: Any, *, openid: str, account: str, max_chars: int
) -> Inbound:
    kind = fields.get("MsgType", "").strip().lower()
    msg_id = fields.get("MsgId", "").strip()
    if not _DIGITS.fullmatch(msg_id):
        raise BadRequestError("'MsgId' is required: the message's number")
    said = ""
    if kind == "text":
        said = clean_text(str(getattr(message, "content", "") or ""))
        if not said.strip():
            raise BadRequestError("'Content' is empty: there is nothing to answer")
    elif kind == "voice":
        said = clean_text(str(getattr(message, "recognition", "") or ""))
    if not said.strip():
        return Inbound(kind="unsupported", openid=openid, account=account, key=msg_id)
    if len(said) > max_chars:
        raise BadRequestError(f"'Content' is longer than {max_chars} characters")
    return Inbound(kind="turn", openid=openid, account=account, key=msg_id, text=said)


def _fields(text: str) -> dict[str, str]:
    """The push's top-level fields; any DTD or entity declaration is refused before anything is read."""
    try:
        root = defusedxml.ElementTree.fromstring(
            text, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException:
        raise BadRequestError("XML with a DTD or entity declarations is refused") from None
    except (ElementTree.ParseError, ValueError):
        raise BadRequestError("the body is not well-formed XML") from None
    if root.tag != "xml":
        raise BadRequestError("the body must be a WeChat message: <xml>...</xml>")
    fields: dict[str, str] = {}
    for child in root:
        if not isinstance(child.tag, str):
            continue
        if child.tag in fields:
            raise BadRequestError(f"'{child.tag[:40]}' is given twice")
        fields[child.tag] = "" if len(child) else (child.text or "")
    return fields


def _event(fields: Mapping[str, str], *, openid: str, account: str) -> Inbound:
    event = fields.get("Event", "").strip()
    created = fields.get("CreateTime", "").strip()
    if not _DIGITS.fullmatch(created):
        raise BadRequestError("'CreateTime' is required: when the event happened")
    key = f"{openid}:{created}:{event[:32]}"
    name = event.lower()
    event_key = clean_text(fields.get("EventKey", "")).strip()
    if name == "unsubscribe":
        return Inbound(kind="unsubscribe", openid=openid, account=account, key=None)
    if name in ("subscribe", "scan"):
        scene = event_key.removeprefix("qrscene_") if name == "subscribe" else event_key
        if name == "subscribe" and not event_key.startswith("qrscene_"):
            scene = ""
        if len(scene) > MAX_SOURCE_CHARS:
            raise BadRequestError(f"'EventKey' is longer than {MAX_SOURCE_CHARS} characters")
        metadata = {"source": scene} if scene else {}
        return Inbound(
            kind="turn",
            openid=openid,
            account=account,
            key=key,
            text=GREETING,
            metadata=metadata,
            subscribes=name == "subscribe",
        )
    if name == "click" and event_key:
        if len(event_key) > MAX_SOURCE_CHARS:
            raise BadRequestError(f"'EventKey' is longer than {MAX_SOURCE_CHARS} characters")
        # A menu key that is a Rasa payload ("/ask_hours") is one; any other is read as if typed.
        text = event_key if is_payload(event_key) else event_key.lstrip("/").strip()
        if text:
            return Inbound(kind="turn", openid=openid, account=account, key=key, text=text)
    return Inbound(kind="ignored", openid=openid, account=account, key=None)


def reply_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The bot's messages of one turn as one WeChat text: joined, each button a numbered option the
    patron can type (its number or its title)."""
    parts: list[str] = []
    number = 0
    for message in messages:
        lines = [str(message["text"]).strip()] if message.get("text") else []
        if message.get("image"):
            lines.append(str(message["image"]))
        for button in message.get("buttons") or []:
            if isinstance(button, Mapping) and button.get("title"):
                number += 1
                lines.append(f"{number}. {button['title']}")
        if lines:
            parts.append("\n".join(line for line in lines if line))
    return "\n\n".join(part for part in parts if part)


def numbered_payload(text: str, buttons: list[Mapping[str, Any]]) -> str | None:
    """The payload of the option whose number the patron typed ("2", "２"); None if it is not one."""
    typed = text.strip().rstrip(".。").translate(_FULL_WIDTH_DIGITS)
    if not typed.isascii() or not typed.isdigit() or len(typed) > 2:
        return None
    offered = [button for button in buttons if button.get("title")]
    index = int(typed) - 1
    if 0 <= index < len(offered) and offered[index].get("payload"):
        return str(offered[index]["payload"])
    return None


_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")


def passive_reply(inbound: Inbound, text: str, *, now: float) -> str:
    """The XML WeChat shows the patron as the answer to its push."""
    # A "]]>" inside the text would end wechatpy's CDATA section early: split it across two.
    safe = text.replace("]]>", "]]]]><![CDATA[>")
    reply = TextReply(source=inbound.account, target=inbound.openid, content=safe, time=int(now))
    return str(reply.render())


def turn_id(key: str) -> str:
    """The Rasa message id of a push's user event: how a taken-over push finds its turn."""
    return f"wechat:{key}"
