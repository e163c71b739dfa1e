"""Rasa events become CRM interactions: each once, with patron, language, intent and producer."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from rasa.shared.core.events import BotUttered
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from bot.channels.quiet import QUIET
from bot.crm.database import make_engine, session_scope
from bot.crm.models import ChannelIdentity, IngestCursor, Patron
from bot.ingest.events import BrokerEvent, IngestState, ingest_events
from bot.ingest.sql_broker import SqlEventSource, held_back, ingest_once
from tests.factories import action_event, bot_event, broker_table, interactions, publish, user_event


def count(engine: Engine, model: type) -> int:
    with Session(engine, future=True) as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_user_and_bot_events_become_a_patron_and_two_interactions(crm: Engine) -> None:
    events = [
        user_event(
            "rest:alice",
            "图书馆几点开门？",
            intent="ask_hours",
            confidence=0.97,
            language="zh",
            timestamp=1_795_000_000.0,
        ),
        action_event("rest:alice", "action_opening_hours"),
        bot_event("rest:alice", "开放时间：周一至周五 08:00–22:00", timestamp=1_795_000_000.5),
    ]
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=events, state=IngestState()) == 2
    rows = interactions(crm)
    assert [(r.direction, r.text, r.intent, r.language, r.channel, r.produced_by) for r in rows] == [
        ("in", "图书馆几点开门？", "ask_hours", "zh", "rest", None),
        ("out", "开放时间：周一至周五 08:00–22:00", None, "zh", "rest", "action_opening_hours"),
    ]
    assert abs(rows[0].confidence - 0.97) < 1e-9
    assert rows[0].occurred_at.timestamp() == 1_795_000_000.0
    assert rows[0].patron_id == rows[1].patron_id
    with Session(crm, future=True) as session:
        identity = session.execute(select(ChannelIdentity)).scalar_one()
        assert (identity.channel, identity.external_id) == ("rest", "alice")
        assert session.get(Patron, identity.patron_id).language == "zh"


def test_redelivered_events_are_not_stored_twice(crm: Engine) -> None:
    events = [
        user_event("rest:bob", "hello", language="en"),
        bot_event("rest:bob", "Hi!", utter_action="utter_greet"),
    ]
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=events, state=IngestState()) == 2
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=events + events, state=IngestState()) == 0
    assert count(crm, Patron) == 1
    assert [r.produced_by for r in interactions(crm)] == [None, "utter_greet"]


def test_a_message_turned_again_after_a_kill_is_one_interaction(crm: Engine) -> None:
    """A process killed after Rasa published a turn and before it stored it: the update is taken over
    and its turn runs again (a later timestamp, the same message id). The patron said it once."""
    first, again = (
        user_event("telegram:77", "how do I renew a book", language="en", timestamp=stamp)
        for stamp in (1_795_000_000.0, 1_795_000_070.0)
    )
    other = user_event("telegram:77", "how do I renew a book", language="en", timestamp=1_795_000_100.0)
    first.data["message_id"] = again.data["message_id"] = "telegram:5001"
    other.data["message_id"] = "telegram:5002"  # the patron asked the same again: a message of its own
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=[first], state=IngestState()) == 1
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=[again, other], state=IngestState()) == 1
    assert [r.occurred_at.timestamp() for r in interactions(crm)] == [1_795_000_000.0, 1_795_000_100.0]


def test_the_bots_meant_silence_is_not_recorded_as_a_reply(crm: Engine) -> None:
    quiet = BotUttered(None, data={"custom": QUIET}, timestamp=1_795_000_001.0)  # as Rasa stores it
    events = [
        user_event("rest:eve", "are you there?", language="en"),
        BrokerEvent(sender_id="rest:eve", data={"sender_id": "rest:eve", **quiet.as_dict()}),
        bot_event("rest:eve", "Yes, this is Alice at the desk."),
    ]
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=events, state=IngestState()) == 2
    assert [(r.direction, r.text) for r in interactions(crm)] == [
        ("in", "are you there?"),
        ("out", "Yes, this is Alice at the desk."),
    ]


def test_same_id_on_two_channels_is_two_patrons(crm: Engine) -> None:
    events = [user_event("rest:4242", "hi"), user_event("telegram:4242", "hi", channel="telegram")]
    with session_scope(crm) as session:
        ingest_events(session=session, events=events, state=IngestState())
    assert count(crm, Patron) == 2
    assert sorted(r.channel for r in interactions(crm)) == ["rest", "telegram"]


def test_bot_reply_language_falls_back_to_the_patron_message(crm: Engine) -> None:
    events = [user_event("rest:carol", "续借", language="zh"), bot_event("rest:carol", "👍")]
    with session_scope(crm) as session:
        ingest_events(session=session, events=events, state=IngestState())
    assert [r.language for r in interactions(crm)] == ["zh", "zh"]


def test_ingest_from_the_sql_broker_moves_the_cursor(crm: Engine, tmp_path: Path) -> None:
    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    table = broker_table(broker)
    source = SqlEventSource(broker_url)
    state = IngestState()
    publish(broker, table, [user_event("rest:dan", "hi"), bot_event("rest:dan", "Hello!")])
    assert ingest_once(crm=crm, source=source, state=state) == 2
    assert ingest_once(crm=crm, source=source, state=state) == 0
    publish(broker, table, [user_event("rest:dan", "thanks", intent="thanks")], raw=["{not json"])
    assert ingest_once(crm=crm, source=source, state=state) == 2  # the broken row is read and skipped
    assert [r.text for r in interactions(crm)] == ["hi", "Hello!", "thanks"]


def test_missing_broker_table_means_nothing_to_ingest(crm: Engine, tmp_path: Path) -> None:
    source = SqlEventSource(f"sqlite:///{tmp_path / 'not-yet.db'}")
    assert ingest_once(crm=crm, source=source, state=IngestState()) == 0
    assert count(crm, Patron) == 0


def test_a_failing_batch_writes_nothing(crm: Engine) -> None:
    events = [user_event("rest:erin", "hi"), user_event("rest:erin", "again")]
    try:
        with session_scope(crm) as session:
            ingest_events(session=session, events=events, state=IngestState())
            raise RuntimeError("the database went away mid-batch")
    except RuntimeError:
        pass
    assert count(crm, Patron) == 0
    assert interactions(crm) == []


def test_read_only_crm_loses_nothing_and_catches_up_later(crm: Engine, crm_url: str, tmp_path: Path) -> None:
    import pytest
    from sqlalchemy.exc import SQLAlchemyError

    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    publish(broker, broker_table(broker), [user_event("rest:ro", "hi"), bot_event("rest:ro", "Hello!")])
    source = SqlEventSource(broker_url)
    if crm_url.startswith("sqlite"):
        read_only = make_engine(f"sqlite:///file:{crm_url.removeprefix('sqlite:///')}?mode=ro&uri=true")
    else:
        from sqlalchemy.engine import make_url

        url = make_url(crm_url)
        options = f"{url.query.get('options', '')} -cdefault_transaction_read_only=on".strip()
        read_only = make_engine(
            url.update_query_dict({"options": options}).render_as_string(hide_password=False)
        )
    with pytest.raises(SQLAlchemyError, match=r"readonly|read-only"):
        ingest_once(crm=read_only, source=source, state=IngestState())
    read_only.dispose()
    assert interactions(crm) == []
    assert ingest_once(crm=crm, source=source, state=IngestState()) == 2
    assert [r.text for r in interactions(crm)] == ["hi", "Hello!"]


def test_duplicate_channel_id_is_one_patron(crm: Engine) -> None:
    import pytest
    from sqlalchemy.exc import IntegrityError

    from bot.crm.models import ChannelIdentity
    from bot.crm.patrons import PatronKey, get_or_create_patron

    key = PatronKey("telegram", "4242")
    with session_scope(crm) as session:
        first = get_or_create_patron(session=session, key=key)
        assert get_or_create_patron(session=session, key=key) == first
    with pytest.raises(IntegrityError), session_scope(crm) as session:
        session.add(Patron(identities=[ChannelIdentity(channel="telegram", external_id="4242")]))
    assert count(crm, Patron) == 1


def session_started(sender: str, timestamp: float) -> BrokerEvent:
    from rasa.shared.core.events import SessionStarted

    return BrokerEvent(
        sender_id=sender, data={"sender_id": sender, **SessionStarted(timestamp=timestamp).as_dict()}
    )


def test_rasa_sessions_become_conversations(crm: Engine) -> None:
    from bot.crm.models import Conversation

    t = 1_795_000_000.0
    first = [session_started("rest:fay", t), user_event("rest:fay", "hi", timestamp=t + 1)]
    second = [session_started("rest:fay", t + 7200), user_event("rest:fay", "again", timestamp=t + 7201)]
    with session_scope(crm) as session:
        ingest_events(session=session, events=first, state=IngestState())
    with session_scope(crm) as session:
        ingest_events(session=session, events=second + second, state=IngestState())  # with a redelivery
    with Session(crm, future=True) as session:
        conversations = session.execute(select(Conversation).order_by(Conversation.id)).scalars().all()
    assert [c.status for c in conversations] == ["resolved", "open"]
    by_conversation = [r.conversation_id for r in interactions(crm)]
    assert by_conversation == [conversations[0].id, conversations[1].id]


def test_a_redelivered_batch_spanning_two_sessions_changes_no_conversation(crm: Engine) -> None:
    """RabbitMQ redelivers a batch after the CRM commit but before the ack, or Rasa's fail-safe store
    publishes a whole tracker again: every event of it is known, and nothing may change."""
    from bot.crm.models import Conversation

    t = 1_795_000_000.0
    batch = [
        session_started("rest:hal", t),
        user_event("rest:hal", "hi", timestamp=t + 1),
        session_started("rest:hal", t + 7200),
        user_event("rest:hal", "again", timestamp=t + 7201),
    ]
    with session_scope(crm) as session:
        ingest_events(session=session, events=batch, state=IngestState())

    def conversations() -> list[tuple[int, str, float]]:
        with Session(crm, future=True) as session:
            rows = session.execute(select(Conversation).order_by(Conversation.id)).scalars().all()
            return [(c.id, c.status, c.started_at.timestamp()) for c in rows]

    before = conversations()
    assert [(status, start) for _, status, start in before] == [("resolved", t), ("open", t + 7200)]
    with session_scope(crm) as session:
        ingest_events(session=session, events=batch, state=IngestState())  # the whole batch again
    assert conversations() == before
    with session_scope(crm) as session:
        later = [user_event("rest:hal", "still me", timestamp=t + 7300)]
        ingest_events(session=session, events=later, state=IngestState())
    assert conversations() == before
    assert [r.conversation_id for r in interactions(crm)] == [before[0][0], before[1][0], before[1][0]]


def test_a_conversation_with_staff_carries_on_across_sessions(crm: Engine) -> None:
    from bot.crm.models import Conversation

    t = 1_795_000_000.0
    with session_scope(crm) as session:
        ingest_events(
            session=session, events=[user_event("rest:gus", "help", timestamp=t)], state=IngestState()
        )
        session.execute(Conversation.__table__.update().values(status="with_staff"))
    with session_scope(crm) as session:
        events = [
            session_started("rest:gus", t + 7200),
            user_event("rest:gus", "still there?", timestamp=t + 7201),
        ]
        ingest_events(session=session, events=events, state=IngestState())
    assert count(crm, Conversation) == 1


def test_the_ingester_copies_what_is_pending_when_it_stops(crm: Engine, crm_url: str, tmp_path: Path) -> None:
    import threading

    from bot.ingest.sql_broker import run_ingester

    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    publish(
        broker, broker_table(broker), [user_event("rest:last", "bye"), bot_event("rest:last", "Goodbye!")]
    )
    stop = threading.Event()
    stop.set()  # asked to stop before it read anything: it still drains the broker first
    run_ingester(crm=crm, crm_url=crm_url, source=SqlEventSource(broker_url), stop=stop)
    assert [r.text for r in interactions(crm)] == ["bye", "Goodbye!"]


def test_the_ingester_keeps_running_and_picks_up_new_events(
    crm: Engine, crm_url: str, tmp_path: Path
) -> None:
    import threading
    import time

    from bot.ingest.sql_broker import run_ingester

    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    table = broker_table(broker)
    stop = threading.Event()
    worker = threading.Thread(
        target=run_ingester,
        kwargs={"crm": crm, "crm_url": crm_url, "source": SqlEventSource(broker_url), "stop": stop},
    )
    worker.start()
    try:
        publish(broker, table, [user_event("rest:live", "hello")])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not interactions(crm):
            time.sleep(0.05)
        assert [r.text for r in interactions(crm)] == ["hello"]
    finally:
        stop.set()
        worker.join(timeout=20)
    assert not worker.is_alive()


def test_a_language_typed_as_an_intent_is_checked_and_the_next_patron_still_lands(
    crm: Engine, tmp_path: Path
) -> None:
    """Rasa turns `/greet{"language":"…"}` into an intent with that entity, unchecked."""
    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    typed = '/greet{"language":"english-please"}'
    events = [
        user_event("rest:mallory", typed, language="english-please"),
        user_event("rest:nina", "图书馆几点开门？", language="zh"),
    ]
    publish(broker, broker_table(broker), events)
    source = SqlEventSource(broker_url)
    assert ingest_once(crm=crm, source=source, state=IngestState()) == 2
    # A payload says nothing of the language (its letters are no English): none is known for mallory.
    assert [(r.text, r.language) for r in interactions(crm)] == [(typed, None), ("图书馆几点开门？", "zh")]
    with Session(crm, future=True) as session:
        assert set(session.execute(select(Patron.language)).scalars()) == {None, "zh"}
        assert held_back(session=session, source=source) == []


def test_over_long_fields_are_cut_to_their_columns(crm: Engine) -> None:
    from bot.crm.models import Conversation, Interaction

    def length(model: Any, column: str) -> int:
        return int(model.__table__.c[column].type.length)

    sender = "x" * 300  # no CHANNEL: prefix, so the channel is the event's input channel
    events = [
        user_event(sender, "hi", intent="i" * 300, channel="c" * 100),
        action_event(sender, "a" * 300),
        bot_event(sender, "Hello!"),
    ]
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=events, state=IngestState()) == 2
    rows = interactions(crm)
    assert [r.text for r in rows] == ["hi", "Hello!"]
    assert [r.intent for r in rows] == ["i" * length(Interaction, "intent"), None]
    assert {r.channel for r in rows} == {"c" * length(Interaction, "channel")}
    assert rows[1].produced_by == "a" * length(Interaction, "produced_by")
    with Session(crm, future=True) as session:
        identity = session.execute(select(ChannelIdentity)).scalar_one()
        assert identity.external_id == sender[: length(ChannelIdentity, "external_id")]
        conversation = session.execute(select(Conversation)).scalar_one()
        assert conversation.rasa_sender_id == sender[: length(Conversation, "rasa_sender_id")]


def test_malformed_events_get_defaults_not_errors(crm: Engine, tmp_path: Path) -> None:
    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    odd = [
        {"event": "user", "text": 12345, "timestamp": 1e20, "parse_data": [], "input_channel": ["x"]},
        {
            "event": "user",
            "text": "hello",
            "timestamp": "yesterday",
            "parse_data": {
                "intent": "greet",
                "entities": [None, "language", {"entity": "language", "value": []}],
            },
        },
        {
            "event": "user",
            "text": "again",
            "timestamp": float("nan"),
            "parse_data": {
                "intent": {"name": {"x": 1}, "confidence": "high"},
                "entities": {"language": "zh"},
            },
        },
        {"event": "bot", "text": "ok", "timestamp": -1e300, "metadata": ["utter_x"]},
        {"event": "session_started", "timestamp": True},
    ]
    table = broker_table(broker)
    publish(broker, table, [], raw=["[1, 2]", '"a string"', "42", "null"])
    publish(
        broker, table, [BrokerEvent(sender_id="rest:odd", data={"sender_id": "rest:odd", **e}) for e in odd]
    )
    source = SqlEventSource(broker_url)
    assert ingest_once(crm=crm, source=source, state=IngestState()) == 9
    rows = interactions(crm)
    assert [(r.text, r.direction, r.language, r.confidence) for r in rows] == [
        ("12345", "in", "en", None),  # no letters: the conversation's language
        ("hello", "in", "en", None),
        ("again", "in", "en", None),
        ("ok", "out", "en", None),
    ]
    assert all(r.occurred_at.tzinfo is not None for r in rows)
    with Session(crm, future=True) as session:
        assert held_back(session=session, source=source) == []


def _poison(monkeypatch: Any, failure: Exception) -> None:
    """Make the insert of any row whose text is "my card is 1234" fail with `failure`."""
    import bot.ingest.events

    original = bot.ingest.events._insert_new

    def poisoned(*, session: Session, rows: list[dict[str, Any]]) -> int:
        if any(row["text"] == "my card is 1234" for row in rows):
            raise failure
        return original(session=session, rows=rows)

    monkeypatch.setattr(bot.ingest.events, "_insert_new", poisoned)


@pytest.mark.parametrize(
    "failure",
    [ValueError("a bug"), IntegrityError("INSERT ...", {}, Exception("refused"))],
    ids=["python-error", "database-refuses-the-row"],
)
def test_a_poisoned_event_is_held_back_and_the_rest_flow(
    crm: Engine,
    crm_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
) -> None:
    import bot.ingest.events
    from bot.ingest.sql_broker import purge_ingested, run_ingester

    original = bot.ingest.events._insert_new
    _poison(monkeypatch, failure)
    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    secret = "my card is 1234"
    events = [user_event("rest:p1", "hi"), user_event("rest:p2", secret), user_event("rest:p3", "later")]
    publish(broker, broker_table(broker), events)
    source = SqlEventSource(broker_url)
    caplog.set_level(logging.ERROR, logger="bot.ingest.events")
    assert ingest_once(crm=crm, source=source, state=IngestState()) == 3
    assert ingest_once(crm=crm, source=source, state=IngestState()) == 0  # the cursor moved past it
    assert [r.text for r in interactions(crm)] == ["hi", "later"]
    # Recorded: a marker with the broker row's id, and a log line naming no patron and no text.
    with Session(crm, future=True) as session:
        assert [m.position for m in held_back(session=session, source=source)] == [2]
    assert f"event 2 (user) in {source.name} could not be ingested ({type(failure).__name__})" in caplog.text
    assert secret not in caplog.text
    assert "p2" not in caplog.text
    # Kept: retention leaves the held-back row in the broker.
    purge_ingested(crm=crm, source=source)
    remaining = {row_id: json.loads(data).get("text") for row_id, _, data in broker_rows(broker)}
    assert remaining[2] == secret
    assert "hi" not in remaining.values()
    # With the fault gone, the next start of the ingester writes it and lets retention remove it.
    monkeypatch.setattr(bot.ingest.events, "_insert_new", original)
    stop = threading.Event()
    stop.set()
    run_ingester(crm=crm, crm_url=crm_url, source=source, stop=stop)
    assert [r.text for r in interactions(crm)] == ["hi", "later", secret]
    with Session(crm, future=True) as session:
        assert held_back(session=session, source=source) == []
    purge_ingested(crm=crm, source=source)
    assert all(json.loads(data).get("text") is None for _, _, data in broker_rows(broker))


def test_a_database_failure_holds_nothing_back_and_the_batch_is_retried(
    crm: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison(monkeypatch, OperationalError("INSERT ...", {}, Exception("disk I/O error")))
    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    events = [user_event("rest:q1", "hi"), user_event("rest:q2", "my card is 1234")]
    publish(broker, broker_table(broker), events)
    source = SqlEventSource(broker_url)
    with pytest.raises(OperationalError):
        ingest_once(crm=crm, source=source, state=IngestState())
    assert interactions(crm) == []
    with Session(crm, future=True) as session:
        assert session.get(IngestCursor, source.name) is None  # the cursor did not move
        assert held_back(session=session, source=source) == []


def broker_rows(engine: Engine) -> list[tuple[int, str, str]]:
    from bot.crm.rasa_events import EVENTS

    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(EVENTS).order_by(EVENTS.c.id))]  # type: ignore[misc]


def test_a_broker_database_of_the_same_name_on_another_server_has_a_cursor_of_its_own() -> None:
    """The cursor was named by backend and database only: a new broker database of the same name on
    another host (or in another schema) took over the old cursor and skipped its first rows."""
    old = SqlEventSource("postgresql://rasa:secret@db-old:5432/events")
    new = SqlEventSource("postgresql://rasa:secret@db-new:5432/events")
    schema = SqlEventSource("postgresql://rasa:secret@db-old:5432/events?options=-csearch_path%3Dtwo")
    assert len({old.name, new.name, schema.name}) == 3
    assert "secret" not in old.name
    assert "@" not in old.name  # no user either
    sqlite = SqlEventSource("sqlite:////var/lib/patronbot/rasa-events.db")
    assert sqlite.name == "sql-broker:sqlite//var/lib/patronbot/rasa-events.db"  # unchanged for SQLite files


def test_an_upgrade_keeps_the_cursor_and_held_rows_kept_under_the_former_name(crm: Engine) -> None:
    from bot.ingest.sql_broker import _held_prefix, adopt_legacy_cursor

    source = SqlEventSource("postgresql://rasa@db:5432/events")
    legacy = SqlEventSource(source.url, name="sql-broker:postgresql/events")
    with session_scope(crm) as session:
        session.add(IngestCursor(source=legacy.name, position=120))
        session.add(IngestCursor(source=f"{_held_prefix(legacy)}97", position=97))
    assert adopt_legacy_cursor(crm=crm, source=source)
    assert not adopt_legacy_cursor(crm=crm, source=source)  # once
    with Session(crm, future=True) as session:
        assert session.get(IngestCursor, source.name).position == 120  # type: ignore[union-attr]
        assert session.get(IngestCursor, legacy.name) is None
        assert [marker.position for marker in held_back(session=session, source=source)] == [97]


def test_a_tap_is_stored_in_the_conversations_language_and_leaves_the_patrons_alone(crm: Engine) -> None:
    """Every tap was stored as English (its payload is Latin letters), and a Chinese patron whose last
    message was a tap became English."""
    with session_scope(crm) as session:
        first = [user_event("rest:lin", "我要评价", language="zh", timestamp=1_795_000_000.0)]
        ingest_events(session=session, events=first, state=IngestState())
    tap = user_event("rest:lin", '/give_feedback{"csat": "4"}', timestamp=1_795_000_010.0)
    tap.data["parse_data"]["entities"] = [{"entity": "csat", "value": "4"}]
    with session_scope(crm) as session:  # another batch: the language comes from the patron's record
        ingest_events(session=session, events=[tap], state=IngestState())
    assert [r.language for r in interactions(crm)] == ["zh", "zh"]
    with Session(crm, future=True) as session:
        assert session.execute(select(Patron.language)).scalar_one() == "zh"


def test_a_typed_button_title_is_stored_as_the_patron_typed_it(crm: Engine) -> None:
    event = user_event("rest:mo", "/unsubscribe", timestamp=1_795_000_000.0)
    event.data["metadata"] = {"typed": "不用了"}
    with session_scope(crm) as session:
        ingest_events(session=session, events=[event], state=IngestState())
    assert [r.text for r in interactions(crm)] == ["不用了"]


def test_a_message_sent_before_the_patron_was_ingested_still_updates_their_language(crm: Engine) -> None:
    """A patron created by one batch was 'last seen' when it was ingested, so their next message, sent
    before that (ingested in the next batch), could not change their language."""
    import time

    now = time.time()
    with session_scope(crm) as session:
        first = [user_event("rest:quick", "图书馆几点开门", language="zh", timestamp=now - 2)]
        ingest_events(session=session, events=first, state=IngestState())
    with session_scope(crm) as session:
        second = [user_event("rest:quick", "please answer in English", language="en", timestamp=now - 1)]
        ingest_events(session=session, events=second, state=IngestState())
    with Session(crm, future=True) as session:
        assert session.execute(select(Patron.language)).scalar_one() == "en"


def test_how_a_patron_arrived_is_kept_from_their_first_message_that_says_so(crm: Engine) -> None:
    """A channel puts the deep link's payload or QR scene in the message's metadata as `source`: the
    identity keeps the first one, whether the patron is new in that batch or known from an earlier one."""
    plain = user_event("telegram:7", "hello", timestamp=1_795_000_000.0)
    poster = user_event("telegram:7", "/greet", timestamp=1_795_000_001.0)
    poster.data["metadata"] = {"source": "poster-east"}
    later = user_event("telegram:7", "/greet", timestamp=1_795_000_002.0)
    later.data["metadata"] = {"source": "campaign-2027"}
    fresh = user_event("telegram:8", "/greet", timestamp=1_795_000_003.0)
    fresh.data["metadata"] = {"source": "website", "other": 1}
    odd = user_event("telegram:9", "hi", timestamp=1_795_000_004.0)
    odd.data["metadata"] = {"source": 42}
    with session_scope(crm) as session:
        ingest_events(session=session, events=[plain], state=IngestState())
    with session_scope(crm) as session:
        ingest_events(session=session, events=[poster, later, fresh, odd], state=IngestState())
    with Session(crm, future=True) as session:
        sources = dict(session.execute(select(ChannelIdentity.external_id, ChannelIdentity.source)).all())
    assert sources == {"7": "poster-east", "8": "website", "9": None}


def test_an_intent_the_library_triggered_is_no_message_from_the_patron(crm: Engine) -> None:
    """A follow-up question is asked by triggering an intent through Rasa's API ("EXTERNAL: ..."): the
    question the bot then asks is stored, the trigger is not, and the patron is not made active by it."""
    triggered = user_event("rest:amy", "EXTERNAL: followup_question", intent="followup_question")
    triggered.data["metadata"] = {"is_external": True}
    events = [
        triggered,
        bot_event("rest:amy", "How satisfied were you with the help you got?", timestamp=1_795_000_001.0),
        user_event("rest:amy", "4", intent="answer_followup", timestamp=1_795_000_060.0),
    ]
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=events, state=IngestState()) == 2
    assert [(r.direction, r.text) for r in interactions(crm)] == [
        ("out", "How satisfied were you with the help you got?"),
        ("in", "4"),
    ]
