"""Platform updates handled once: recorded before the 200, a redelivery recognised, an orphan taken over."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.channels.updates import claim_abandoned, forget_handled, mark_handled, record_update
from bot.crm.database import session_scope
from bot.crm.models import ChannelIdentity, ChannelUpdate, Patron, utcnow
from bot.privacy.erasure import erase_patron


def _row(crm: Engine, key: str) -> ChannelUpdate:
    with Session(crm, future=True) as session:
        row = session.get(ChannelUpdate, ("telegram", key))
        assert row is not None
        session.expunge(row)
        return row


def test_an_update_is_recorded_once_however_often_and_however_concurrently_it_comes(crm: Engine) -> None:
    assert record_update(engine=crm, channel="telegram", key="1", sender="telegram:9", body="{}") is True
    assert record_update(engine=crm, channel="telegram", key="1", sender="telegram:9", body="{}") is False
    # The same key on another channel is another update.
    assert record_update(engine=crm, channel="wechat", key="1", sender="wechat:x", body="<xml/>") is True
    wins: list[bool] = []
    lock = threading.Lock()

    def deliver() -> None:
        won = record_update(engine=crm, channel="telegram", key="2", sender="telegram:9", body="{}")
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 5 + [True]


def test_handled_keeps_the_key_not_the_message_and_old_keys_are_forgotten(crm: Engine) -> None:
    record_update(engine=crm, channel="telegram", key="5", sender="telegram:9", body='{"text": "hi"}')
    assert _row(crm, "5").body == '{"text": "hi"}'
    mark_handled(engine=crm, channel="telegram", key="5")
    row = _row(crm, "5")
    assert row.body is None
    assert row.handled_at is not None
    assert record_update(engine=crm, channel="telegram", key="5", sender="telegram:9", body="{}") is False
    assert forget_handled(engine=crm) == 0  # remembered for 48 hours
    with session_scope(crm) as session:
        session.execute(update(ChannelUpdate).values(received_at=utcnow() - dt.timedelta(hours=49)))
    assert forget_handled(engine=crm) == 1


def test_an_update_whose_process_died_is_taken_over_once_its_lease_ran_out(crm: Engine) -> None:
    record_update(engine=crm, channel="telegram", key="7", sender="telegram:9", body="seven")
    record_update(engine=crm, channel="telegram", key="8", sender="telegram:9", body="eight")
    mark_handled(engine=crm, channel="telegram", key="8")
    assert claim_abandoned(engine=crm, channel="telegram") == []  # its holder may still be at it
    with session_scope(crm) as session:
        session.execute(update(ChannelUpdate).values(claimed_until=utcnow() - dt.timedelta(seconds=1)))
    assert claim_abandoned(engine=crm, channel="telegram") == [("7", "seven")]
    assert claim_abandoned(engine=crm, channel="telegram") == []  # now held by the first taker


def test_erasure_blanks_the_patrons_updates_but_keeps_their_keys(crm: Engine) -> None:
    with session_scope(crm) as session:
        patron = Patron(language="en")
        patron.identities.append(ChannelIdentity(channel="telegram", external_id="77"))
        session.add(patron)
        session.flush()
        patron_id = patron.id
    record_update(engine=crm, channel="telegram", key="70", sender="telegram:77", body="my card number")
    record_update(engine=crm, channel="telegram", key="71", sender="telegram:78", body="someone else")
    with session_scope(crm) as session:
        report = erase_patron(
            session=session, patron_ref=str(patron_id), actor="test", reason="request", rasa_stores=[]
        )
    assert report.anonymised_rows["channel_update"] == 1
    with Session(crm, future=True) as session:
        rows = {
            key: (sender, body)
            for key, sender, body in session.execute(
                select(ChannelUpdate.update_key, ChannelUpdate.sender, ChannelUpdate.body)
            )
        }
    assert rows == {"70": (None, None), "71": ("telegram:78", "someone else")}
    assert record_update(engine=crm, channel="telegram", key="70", sender="telegram:77", body="x") is False
