"""Which channels are on: from the settings alone, written to Rasa's credentials file without secrets."""

from __future__ import annotations

import stat

import pytest
import yaml

from bot.channels.access import is_loopback, is_loopback_host
from bot.channels.credentials import (
    REST,
    TELEGRAM,
    WEBCHAT,
    WECHAT,
    channel_classes,
    channel_webhooks,
    write_credentials,
)
from bot.settings import load_settings


def test_with_no_channel_settings_only_the_rest_channel_is_on() -> None:
    settings = load_settings()
    assert channel_classes(settings) == [REST]
    assert channel_webhooks(settings) == {"REST": "http://127.0.0.1:5005/webhooks/rest/webhook"}


def test_each_channel_is_on_when_its_settings_are_all_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRONBOT_TELEGRAM_TOKEN", "123:abc")
    monkeypatch.setenv("PATRONBOT_WECHAT_TOKEN", "wx-token")
    monkeypatch.setenv("PATRONBOT_WECHAT_APPID", "wx123")
    # WeChat without its AppSecret cannot send: off.
    assert channel_classes(load_settings()) == [REST, TELEGRAM]
    assert channel_webhooks(load_settings())["Telegram"] == "polling getUpdates (no webhook secret set)"
    monkeypatch.setenv("PATRONBOT_WECHAT_SECRET", "wx-secret")
    monkeypatch.setenv("PATRONBOT_TELEGRAM_WEBHOOK_SECRET", "hook-secret")
    monkeypatch.setenv("PATRONBOT_WEBCHAT", "true")
    settings = load_settings()
    assert channel_classes(settings) == [REST, TELEGRAM, WECHAT, WEBCHAT]
    webhooks = channel_webhooks(settings)
    assert webhooks["Telegram"] == "http://127.0.0.1:5005/webhooks/telegram/webhook"
    assert webhooks["WeChat"] == "http://127.0.0.1:5005/webhooks/wechat/webhook"
    assert webhooks["web chat widget"] == "http://127.0.0.1:5005/webhooks/webchat/"


def test_the_credentials_file_names_the_channels_and_holds_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRONBOT_TELEGRAM_TOKEN", "123:very-secret-token")
    monkeypatch.setenv("PATRONBOT_TELEGRAM_WEBHOOK_SECRET", "hook-secret-value")
    path = write_credentials(load_settings())
    text = path.read_text(encoding="utf-8")
    assert yaml.safe_load(text) == {REST: None, TELEGRAM: None}
    assert "very-secret-token" not in text
    assert "hook-secret-value" not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("::ffff:10.0.0.5", False),
        ("203.0.113.9", False),
        ("", False),
        ("not-an-address", False),
    ],
)
def test_loopback_addresses(address: str, local: bool) -> None:
    assert is_loopback(address) is local


def test_a_listening_host_is_local_only_on_loopback() -> None:
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0")
    assert not is_loopback_host("::")


class _StoppedError(Exception):
    pass


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [("0.0.0.0", None, True), ("0.0.0.0", "t" * 32, False), ("127.0.0.1", None, False)],
)
def test_patronbot_run_warns_when_it_listens_beyond_this_machine_without_a_rest_token(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    host: str,
    token: str | None,
    warned: bool,
) -> None:
    from bot.runtime import runner

    def stop_here(**_: object) -> None:
        raise _StoppedError

    monkeypatch.setattr(runner, "train", stop_here)
    monkeypatch.setenv("PATRONBOT_HOST", host)
    if token:
        monkeypatch.setenv("PATRONBOT_REST_TOKEN", token)
    with caplog.at_level("WARNING", logger="patronbot"), pytest.raises(_StoppedError):
        runner._run(settings=load_settings(), train_first=True, output=None)  # type: ignore[arg-type]
    said = " ".join(record.getMessage() for record in caplog.records)
    assert ("without PATRONBOT_REST_TOKEN" in said) is warned
