"""The bot on a deployment's stores: CRM and Rasa tracker in PostgreSQL, locks in Redis, events via
RabbitMQ; then a patron's export and erasure through the command line reach the tracker store."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.crm.database import make_engine
from bot.runtime.endpoints import PIKA_BROKER_CLASS
from tests.e2e.conftest import PATRONBOT, RunningBot, start_bot, stop_bot

pytestmark = pytest.mark.rasa

POSTGRES_URL = os.environ.get("PATRONBOT_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("PATRONBOT_TEST_REDIS_URL", "")
AMQP_URL = os.environ.get("PATRONBOT_TEST_AMQP_URL", "")


@pytest.fixture(scope="module")
def deployed_bot(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    if not (POSTGRES_URL and REDIS_URL):
        pytest.skip("PATRONBOT_TEST_POSTGRES_URL and PATRONBOT_TEST_REDIS_URL are not set (CI sets them)")
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    database_url = url.render_as_string(hide_password=False)
    extra = {
        "PATRONBOT_DATABASE_URL": database_url,
        "PATRONBOT_TRACKER_STORE_URL": database_url,
        "PATRONBOT_LOCK_STORE_URL": REDIS_URL,
    }
    if AMQP_URL:
        extra |= {"PATRONBOT_EVENT_BROKER_URL": AMQP_URL, "PATRONBOT_EVENT_QUEUE": f"patronbot_{schema}"}
    bot = start_bot(tmp_path_factory.mktemp("deployed"), trained_model, extra)
    bot.crm_url = database_url
    try:
        yield bot
    finally:
        code = stop_bot(bot)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        assert code == 0, bot.log.read_text(errors="replace")[-3000:]


def scalar(bot: RunningBot, sql: str, **params: object) -> object:
    engine = make_engine(bot.crm_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql), params).scalar_one()
    finally:
        engine.dispose()


def wait_for(bot: RunningBot, sql: str, expected: int, **params: object) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if scalar(bot, sql, **params) == expected:
            return
        time.sleep(0.2)
    pytest.fail(f"{sql} never reached {expected}; it is {scalar(bot, sql, **params)}")


def patronbot(bot: RunningBot, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATRONBOT, *args], env=bot.env, capture_output=True, text=True, timeout=120, check=False
    )


def test_conversation_export_and_erasure_on_deployment_stores(deployed_bot: RunningBot) -> None:
    endpoints = (deployed_bot.data_dir / "endpoints.yml").read_text()
    assert "type: redis" in endpoints
    assert "dialect: postgresql" in endpoints
    if AMQP_URL:
        assert f"type: {PIKA_BROKER_CLASS}" in endpoints  # Rasa's RabbitMQ broker, logging no events
    patron = f"dep-{uuid.uuid4().hex[:8]}"
    sender_id = f"rest:{patron}"
    assert deployed_bot.say(patron, "图书馆几点开门？")
    assert deployed_bot.say(patron, "When do you open on Saturday?")
    count_crm = (
        "SELECT count(*) FROM interaction i JOIN channel_identity c ON c.patron_id = i.patron_id"
        " WHERE c.channel = 'rest' AND c.external_id = :patron"
    )
    wait_for(deployed_bot, count_crm, 4, patron=patron)
    tracker_events = "SELECT count(*) FROM events WHERE sender_id = :sender"
    assert int(scalar(deployed_bot, tracker_events, sender=sender_id)) > 4  # type: ignore[call-overload]

    exported = patronbot(deployed_bot, "patron", "export", sender_id)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert [row["text"] for row in document["tables"]["interaction"] if row["direction"] == "in"] == [
        "图书馆几点开门？",
        "When do you open on Saturday?",
    ]
    tracker_texts = [e.get("text") for e in document["rasa"]["tracker_store"] if e.get("event") == "user"]
    assert tracker_texts == ["图书馆几点开门？", "When do you open on Saturday?"]

    refused = patronbot(deployed_bot, "patron", "erase", sender_id)  # no terminal, no --yes
    assert refused.returncode == 2
    assert "needs --yes" in refused.stderr

    erased = patronbot(deployed_bot, "patron", "erase", sender_id, "--yes")
    assert erased.returncode == 0, erased.stderr
    assert scalar(deployed_bot, tracker_events, sender=sender_id) == 0
    assert scalar(deployed_bot, count_crm, patron=patron) == 0
    assert scalar(deployed_bot, "SELECT count(*) FROM channel_identity WHERE external_id = :p", p=patron) == 0
    assert int(scalar(deployed_bot, "SELECT coalesce(sum(count), 0) FROM interaction_stat")) >= 4  # type: ignore[call-overload]

    missing = patronbot(deployed_bot, "patron", "export", sender_id)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"patronbot: no patron '{sender_id}'"
