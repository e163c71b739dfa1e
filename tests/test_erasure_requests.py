"""Erasure asked for in the chat: noted once, for the turn that asked, against the patron who asked."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from rasa.shared.core.events import ActionExecuted, SessionStarted, SlotSet
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import ChannelIdentity, Patron
from bot.crm.rasa_events import RasaEventStore
from bot.ingest.events import BrokerEvent, IngestState, ingest_events
from bot.privacy.requests import carry_out, pending_patrons
from tests.factories import bot_event, user_event


def raw(sender: str, event: object) -> BrokerEvent:
    data = event.as_dict()  # type: ignore[attr-defined]
    return BrokerEvent(sender_id=sender, data={"sender_id": sender, **data})


def asked(sender: str, at: float, channel: str = "rest") -> list[BrokerEvent]:
    """The turn in which the patron confirmed: their words, and the bot's reply that schedules it."""
    return [
        user_event(sender, "确认删除", language="zh", timestamp=at, channel=channel),
        raw(sender, ActionExecuted("action_erase_my_data", timestamp=at + 0.1)),
        bot_event(
            sender, "好的。您的信息将被删除。", utter_action="utter_delete_scheduled", timestamp=at + 0.2
        ),
        raw(sender, SlotSet("delete_confirmation", None, timestamp=at + 0.3)),
    ]


def ingest(crm: Engine, events: list[BrokerEvent]) -> None:
    with session_scope(crm) as session:
        ingest_events(session=session, events=events, state=IngestState())


def pending(crm: Engine) -> list[int]:
    with Session(crm, future=True) as session:
        return pending_patrons(session=session)


def patrons(crm: Engine) -> list[tuple[str, str]]:
    with Session(crm, future=True) as session:
        query = select(ChannelIdentity.channel, ChannelIdentity.external_id).join(Patron)
        return [tuple(row) for row in session.execute(query).all()]  # type: ignore[misc]


def test_an_erasure_is_carried_out_once_and_not_again_at_every_new_session(crm: Engine, crm_url: str) -> None:
    """With a tracker store erasure cannot reach (memory), Rasa copies every slot event of the old
    session into each new one; a request must not come back with them."""
    sender = "rest:mia"
    ingest(crm, asked(sender, time.time() - 60))
    assert len(pending(crm)) == 1
    assert carry_out(crm=crm, crm_url=crm_url, rasa_stores=[], settle=dt.timedelta(0)).erased == 1
    assert patrons(crm) == []

    # The patron writes again later: a new session, with the old session's slot events copied (as an
    # older bot set them too), then a new message.
    later = time.time() + 1
    new_session = [
        raw(sender, ActionExecuted("action_session_start", timestamp=later)),
        raw(sender, SessionStarted(timestamp=later + 0.01)),
        raw(sender, SlotSet("delete_confirmation", None, timestamp=later + 0.02)),
        raw(sender, SlotSet("erasure_requested", True, timestamp=later + 0.03)),
        raw(sender, ActionExecuted("action_listen", timestamp=later + 0.04)),
        user_event(sender, "hello again", language="en", timestamp=later + 1),
        bot_event(sender, "Hello!", utter_action="utter_greet", timestamp=later + 1.1),
    ]
    ingest(crm, new_session)
    assert patrons(crm) == [("rest", "mia")]  # a new record, as promised
    assert pending(crm) == []
    assert carry_out(crm=crm, crm_url=crm_url, rasa_stores=[], settle=dt.timedelta(0)).erased == 0
    assert patrons(crm) == [("rest", "mia")]


def test_a_request_is_noted_against_the_patron_its_messages_were_keyed_to(crm: Engine) -> None:
    """A conversation id without a channel prefix is keyed by the channel of its messages; the request
    must find that same patron (it was looked up under channel 'unknown' and never noted)."""
    ingest(crm, asked("kiosk-7", time.time(), channel="rest"))
    assert patrons(crm) == [("rest", "kiosk-7")]
    with Session(crm, future=True) as session:
        patron_id = session.execute(select(ChannelIdentity.patron_id)).scalar_one()
    assert pending(crm) == [patron_id]


def test_a_redelivered_request_is_still_one_erasure(crm: Engine, crm_url: str) -> None:
    turn = asked("rest:ned", time.time() - 60)
    ingest(crm, turn)
    ingest(crm, turn)
    assert len(pending(crm)) == 1
    assert carry_out(crm=crm, crm_url=crm_url, rasa_stores=[], settle=dt.timedelta(0)).erased == 1
    ingest(crm, turn)  # delivered again after the erasure: dropped, nothing comes back
    assert patrons(crm) == []
    assert pending(crm) == []


def test_the_ingesters_memory_is_bounded_in_size_and_age() -> None:
    from bot.ingest.events import IngestState

    state = IngestState(max_senders=3, max_age=600.0)
    for number in range(5):
        state.remember_action(f"rest:p{number}", "action_answer_faq")
    assert state.senders() == {"rest:p2", "rest:p3", "rest:p4"}
    state.forget({"rest:p3", "rest:never-seen"})
    assert state.senders() == {"rest:p2", "rest:p4"}
    assert state.last_action("rest:p4") == "action_answer_faq"
    brief = IngestState(max_age=0.0)
    brief.remember_action("rest:old", "action_greet")
    assert brief.last_action("rest:old") is None
    assert brief.senders() == set()


def test_the_ingester_forgets_an_erased_patron_at_once(crm: Engine, crm_url: str, tmp_path: Path) -> None:
    import threading

    from bot.crm.database import make_engine
    from bot.ingest.events import IngestState
    from bot.ingest.sql_broker import SqlEventSource, run_ingester
    from tests.factories import broker_table, publish

    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    publish(broker, broker_table(broker), asked("rest:ola", time.time() - 60))
    state = IngestState()
    stop = threading.Event()
    options = {"crm": crm, "crm_url": crm_url, "source": SqlEventSource(broker_url), "stop": stop}
    ingester = threading.Thread(target=run_ingester, kwargs=options | {"state": state})
    ingester.start()
    try:
        seen, deadline = False, time.monotonic() + 30
        while time.monotonic() < deadline:
            present = bool(patrons(crm))
            seen |= present
            if seen and not present:
                break  # ingested, then erased about two seconds after the turn was stored
            time.sleep(0.1)
        assert patrons(crm) == []
        assert "rest:ola" not in state.senders()
    finally:
        stop.set()
        ingester.join(timeout=30)


def test_an_erasure_committing_while_an_ingest_is_in_flight_does_not_bring_the_patron_back(
    crm: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An erasure from the command line commits between the ingester's check of erased senders and its
    writes: the ingest must not write the patron's earlier messages as a new patron (PostgreSQL's READ
    COMMITTED let it; SQLite's one writer never did)."""
    import threading

    import bot.ingest.events as ingest_module
    from bot.crm.models import Interaction
    from bot.privacy.erasure import erase_patron

    sender = "rest:pia"
    ingest(crm, [user_event(sender, "hello", timestamp=time.time() - 30)])
    checked, erased = threading.Event(), threading.Event()
    original = ingest_module.erased_at

    def pausing(**options: object) -> dict[str, dt.datetime]:
        found = original(**options)  # type: ignore[arg-type]
        checked.set()
        erased.wait(timeout=3)  # an erasure that nothing holds back commits here
        return found

    monkeypatch.setattr(ingest_module, "erased_at", pausing)
    late = [user_event(sender, "my card number is 12345", timestamp=time.time() - 20)]
    ingester = threading.Thread(target=ingest, args=(crm, late))
    ingester.start()
    assert checked.wait(timeout=10)

    def erase() -> None:
        with session_scope(crm) as session:
            erase_patron(session=session, patron_ref=sender, actor="cli:test", reason="asked", rasa_stores=[])
        erased.set()

    eraser = threading.Thread(target=erase)
    eraser.start()
    ingester.join(timeout=60)
    eraser.join(timeout=60)
    assert patrons(crm) == []
    with Session(crm, future=True) as session:
        assert session.execute(select(Interaction.text)).scalars().all() == []


def _tracker(tmp_path: Path) -> RasaEventStore:
    """A tracker-store table laid out as Rasa's SQL tracker store."""
    store = RasaEventStore(name="tracker_store", url=f"sqlite:///{tmp_path / 'tracker.db'}")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE events (id INTEGER PRIMARY KEY, sender_id VARCHAR(255), type_name VARCHAR(255),"
                " timestamp FLOAT, intent_name VARCHAR(255), action_name VARCHAR(255), data TEXT)"
            )
        )
    return store


def _store_turn(store: RasaEventStore, sender: str, at: float) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            text("INSERT INTO events (sender_id, timestamp, data) VALUES (:sender, :at, '{}')"),
            {"sender": sender, "at": at},
        )


def test_an_erasure_waits_until_the_tracker_store_holds_the_turn_that_asked(
    crm: Engine, crm_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa writes a turn to its broker before its tracker store, and a locked SQLite tracker store
    waits up to 30 s: erasing before the turn lands would leave the request itself behind."""
    import bot.privacy.requests as requests

    monkeypatch.setattr(requests, "SETTLE", dt.timedelta(0))
    tracker = _tracker(tmp_path)
    sender, at = "rest:quinn", time.time() - 5
    ingest(crm, asked(sender, at))
    _store_turn(tracker, sender, at - 100)  # an earlier session: not the turn that asked
    assert carry_out(crm=crm, crm_url=crm_url, rasa_stores=[tracker]).erased == 0
    assert len(pending(crm)) == 1
    _store_turn(tracker, sender, at + 0.2)  # the turn lands: the bot's reply is in the tracker store
    assert carry_out(crm=crm, crm_url=crm_url, rasa_stores=[tracker]).erased == 1
    assert patrons(crm) == []
    with tracker.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM events")).scalar_one() == 0


def test_an_erasure_is_not_held_back_for_ever_by_a_tracker_store_that_never_gets_the_turn(
    crm: Engine, crm_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.privacy.requests as requests

    monkeypatch.setattr(requests, "SETTLE", dt.timedelta(0))
    monkeypatch.setattr(requests, "MAX_SETTLE", dt.timedelta(0))
    ingest(crm, asked("rest:rae", time.time() - 5))
    assert carry_out(crm=crm, crm_url=crm_url, rasa_stores=[_tracker(tmp_path)]).erased == 1


def test_a_turn_in_flight_during_an_erasure_is_swept_from_the_tracker_store(tmp_path: Path) -> None:
    from bot.privacy.requests import ErasureRound, ResidueSweeps

    tracker = _tracker(tmp_path)
    erased_at = time.time()
    _store_turn(tracker, "rest:sam", erased_at - 1)  # landed after the erasure, from before it
    _store_turn(tracker, "rest:sam", erased_at + 5)  # the patron writing again: a new record
    _store_turn(tracker, "rest:other", erased_at - 1)
    sweeps = ResidueSweeps(delay=dt.timedelta(0))
    sweeps.add(ErasureRound(erased=1, waiting=False, senders=frozenset({"rest:sam"}), at=erased_at))
    assert sweeps.run_due([tracker]) == 1
    with tracker.engine.connect() as connection:
        left = connection.execute(text("SELECT sender_id, timestamp FROM events ORDER BY id")).all()
    assert [(sender, stamp > erased_at) for sender, stamp in left] == [
        ("rest:sam", True),
        ("rest:other", False),
    ]
    assert sweeps.run_due([tracker]) == 0  # swept once
