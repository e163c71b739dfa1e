"""The REST channel's request checks: every bad request gets a 400 reason, good ones pass whole."""

from __future__ import annotations

import json

import pytest

from connectors.rest import BadRequestError, parse_request


def body(payload: object) -> bytes:
    return json.dumps(payload).encode("utf-8")


def test_good_request_is_kept_exactly() -> None:
    text = "图书馆 wifi 密码? <script>alert(1)</script> ' OR 1=1 --"
    message = parse_request(body({"sender": "abc", "message": text, "metadata": {"k": 1}}), max_chars=100)
    assert (message.sender, message.text, message.metadata) == ("abc", text, {"k": 1})


def test_numeric_sender_is_accepted_as_text() -> None:
    assert parse_request(body({"sender": 4242, "message": "hi"}), max_chars=100).sender == "4242"


def test_nul_characters_are_removed_because_no_database_stores_them() -> None:
    assert parse_request(body({"sender": "a", "message": "hi\u0000there"}), max_chars=100).text == "hithere"


def test_ten_thousand_characters_are_accepted_under_the_default_limit() -> None:
    text = "书" * 10_000
    assert parse_request(body({"sender": "a", "message": text}), max_chars=20_000).text == text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "the body must be JSON"),
        (b"", "the body must be JSON"),
        (b"\xff\xfe", "the body must be JSON"),
        (body(["sender", "message"]), "must be a JSON object"),
        (body({"message": "hi"}), "'sender' is required"),
        (body({"sender": "", "message": "hi"}), "'sender' is required"),
        (body({"sender": True, "message": "hi"}), "'sender' is required"),
        (body({"sender": "x" * 201, "message": "hi"}), "'sender' is longer than 200"),
        (body({"sender": "a"}), "'message' is required"),
        (body({"sender": "a", "message": 5}), "'message' is required"),
        (body({"sender": "a", "message": "   "}), "'message' is empty"),
        (body({"sender": "a", "message": "\u0000"}), "'message' is empty"),
        (body({"sender": "a", "message": "x" * 101}), "'message' is longer than 100"),
        (body({"sender": "a", "message": "hi", "metadata": [1]}), "'metadata', when given, must be"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason):
        parse_request(raw, max_chars=100)
