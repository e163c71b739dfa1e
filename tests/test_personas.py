"""Personas: patrons who ask about the same things are grouped, named in both languages, and kept stable."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.cli.personas import add_commands
from bot.crm.database import session_scope
from bot.crm.models import Consent, Interaction, Patron, PatronInterest, Persona
from bot.outreach.personas import PersonaError, build_personas, list_personas, message_terms
from bot.settings import load_settings

DIMS = 8
_keys = itertools.count()
START = dt.datetime(2026, 11, 2, 1, 0, tzinfo=dt.UTC)

# Three obvious groups: renewals and fines in English; 考研 study rooms in Chinese; research data and
# databases, whose interest vectors lie close together.
RENEWALS = [
    ("How do I renew my books online?", "renewal"),
    ("Can I renew a borrowed book twice?", "renewal"),
    ("What is the overdue fine for late books?", "fines_lost"),
    ("I lost a book, how much is the fine?", "fines_lost"),
    ("When does the library open on Sunday?", "ask_hours"),
]
STUDY_ROOMS = [
    ("考研自习室怎么预约", "study_spaces"),
    ("考研自习室还有座位吗", "study_spaces"),
    ("自习室晚上几点关门", "study_spaces"),
    ("图书馆几点开门", "ask_hours"),
    ("你好", "greet"),
]
RESEARCH_DATA = [
    ("Where can I deposit my research data?", "research_help"),
    ("Do we have access to chemistry databases?", "e_resources"),
    ("Help with a research data management plan", "research_help"),
    ("Database access from home for research", "e_resources"),
]
HOLDS = [
    ("Can I place a hold on a book that is checked out?", "holds"),
    ("How long is a hold kept at the desk?", "holds"),
    ("Can you get a book from another university through interlibrary loan?", "interlibrary_loan"),
    ("Interlibrary loan request for an article", "interlibrary_loan"),
]


def _unit(vector: NDArray[np.float64]) -> bytes:
    return bytes((vector / np.linalg.norm(vector)).astype(np.float32).tobytes())


def _near(axis: int, n: int) -> bytes:
    """The nth of a group's interest vectors, near one axis (the same whatever the tests' order)."""
    vector = np.zeros(DIMS)
    vector[axis] = 1.0
    return _unit(vector + np.random.default_rng([axis, n]).normal(0, 0.05, DIMS))


def add_patron(
    engine: Engine,
    messages: Sequence[tuple[str, str]],
    *,
    offset: int = 0,
    vector: bytes | None = None,
    profiling: bool | None = True,
) -> int:
    """A patron who said `messages` (four of them, from `offset` round the list), with their consent."""
    chosen = [messages[(offset + i) % len(messages)] for i in range(min(4, len(messages)))]
    with session_scope(engine) as session:
        patron = Patron(language="en")
        session.add(patron)
        session.flush()
        for minute, (text, intent) in enumerate(chosen):
            session.add(
                Interaction(
                    patron_id=patron.id,
                    channel="telegram",
                    direction="in",
                    text=text,
                    intent=intent,
                    event_key=f"e{next(_keys)}",
                    occurred_at=START + dt.timedelta(minutes=minute),
                )
            )
            session.add(
                Interaction(
                    patron_id=patron.id,
                    channel="telegram",
                    direction="out",
                    text="an answer that names no topic",
                    event_key=f"e{next(_keys)}",
                    occurred_at=START + dt.timedelta(minutes=minute, seconds=1),
                )
            )
        if vector is not None:
            session.add(
                PatronInterest(patron_id=patron.id, vector=vector, dims=DIMS, model="fake-e5", messages=4)
            )
        if profiling is not None:
            session.add(
                Consent(patron_id=patron.id, purpose="profiling", granted=profiling, recorded_at=START)
            )
        return int(patron.id)


def three_groups(engine: Engine) -> dict[str, set[int]]:
    """7 renewal askers (vectors near axis 0), 6 study-room askers (no vectors), 5 research-data askers
    (vectors near axis 1)."""
    return {
        "renewals": {add_patron(engine, RENEWALS, offset=i, vector=_near(0, i)) for i in range(7)},
        "study": {add_patron(engine, STUDY_ROOMS, offset=i) for i in range(6)},
        "data": {add_patron(engine, RESEARCH_DATA, offset=i, vector=_near(1, i)) for i in range(5)},
    }


def members(engine: Engine) -> dict[str, set[int]]:
    with Session(engine, future=True) as session:
        rows = session.execute(select(Persona.key, Patron.id).join(Patron, Patron.persona_id == Persona.id))
        grouped: dict[str, set[int]] = {}
        for key, patron_id in rows:
            grouped.setdefault(str(key), set()).add(int(patron_id))
        return grouped


def persona_of(engine: Engine, patron_id: int) -> int | None:
    with Session(engine, future=True) as session:
        value = session.execute(select(Patron.persona_id).where(Patron.id == patron_id)).scalar_one()
        return None if value is None else int(value)


def test_three_obvious_groups_are_found_and_named_in_both_languages(crm: Engine) -> None:
    groups = three_groups(crm)

    personas = build_personas(engine=crm)

    assert [(p.key, p.size) for p in personas] == [("p1", 7), ("p2", 6), ("p3", 5)]
    assert members(crm) == {"p1": groups["renewals"], "p2": groups["study"], "p3": groups["data"]}
    renewals, study, data = personas
    assert set(renewals.topics[:2]) == {"fines_lost", "renewal"}
    assert "renewals" in renewals.name_en
    assert "fines" in renewals.name_en
    assert "续借" in renewals.name_zh
    assert "罚款" in renewals.name_zh
    assert {"renew", "fine", "book"} <= set(renewals.words["en"])
    assert "books" not in renewals.words["en"]
    assert study.topics[0] == "study_spaces"
    assert study.name_en.startswith("study spaces")
    assert study.name_zh.startswith("学习空间")
    assert {"考研", "自习室"} <= set(study.words["zh"])
    assert study.words["en"] == []
    assert set(data.topics[:2]) == {"research_help", "e_resources"}
    assert "research help" in data.name_en
    assert "科研支持" in data.name_zh
    assert "电子资源" in data.name_zh
    assert "data" in data.words["en"]
    # What several groups ask (opening hours) ranks below each group's own topics; "library", which
    # every group says, names none.
    assert renewals.topics[2] == study.topics[1] == "ask_hours"
    assert "ask_hours" not in data.topics
    assert all("library" not in p.words["en"] and "图书馆" not in p.words["zh"] for p in personas)
    with Session(crm, future=True) as session:
        assert list_personas(session=session) == personas
        stored = session.execute(select(Persona).where(Persona.key == "p3")).scalar_one()
        assert stored.centroid is not None
        assert len(stored.centroid) % 4 == 0


def test_the_same_data_gives_the_same_personas(crm: Engine) -> None:
    three_groups(crm)

    first = build_personas(engine=crm)
    first_members = members(crm)
    second = build_personas(engine=crm)

    assert second == first
    assert members(crm) == first_members


def test_a_segment_rule_finds_a_personas_patrons_by_key(crm: Engine) -> None:
    groups = three_groups(crm)
    build_personas(engine=crm)

    # What a segment rule `persona: [p2]` runs: patrons joined to their persona, by key.
    with Session(crm, future=True) as session:
        found = set(
            session.execute(
                select(Patron.id)
                .join(Persona, Patron.persona_id == Persona.id)
                .where(Persona.key.in_(["p2"]))
            ).scalars()
        )
    assert found == groups["study"]


def test_patrons_with_few_messages_or_no_profiling_consent_are_not_placed(crm: Engine) -> None:
    groups = three_groups(crm)
    build_personas(engine=crm)
    quiet = add_patron(crm, RENEWALS[:2])
    unasked = add_patron(crm, RENEWALS, profiling=None)
    withdrawn = add_patron(crm, RENEWALS, vector=_near(0, 99))
    with session_scope(crm) as session:
        # Placed by an earlier build, then the patron withdrew profiling: the next build lets go of them.
        session.add(
            Consent(
                patron_id=withdrawn, purpose="profiling", granted=False, recorded_at=START.replace(hour=2)
            )
        )
        first = session.execute(select(Persona.id).where(Persona.key == "p1")).scalar_one()
        session.get(Patron, withdrawn).persona_id = first  # type: ignore[union-attr]
        session.get(Patron, quiet).persona_id = first  # type: ignore[union-attr]

    build_personas(engine=crm)

    assert [persona_of(crm, patron) for patron in (quiet, unasked, withdrawn)] == [None, None, None]
    assert members(crm)["p1"] == groups["renewals"]
    # Counted with min_messages=2, the quiet patron joins the renewal askers.
    build_personas(engine=crm, clusters=3, min_messages=2)
    assert members(crm)["p1"] == groups["renewals"] | {quiet}


def test_too_few_patrons_is_refused_and_changes_nothing(crm: Engine) -> None:
    patrons = [add_patron(crm, RENEWALS, offset=i) for i in range(3)]
    with session_scope(crm) as session:
        old = Persona(key="p1", name_en="old", name_zh="旧", topics=[], words={}, size=1)
        session.add(old)
        session.flush()
        session.get(Patron, patrons[0]).persona_id = old.id  # type: ignore[union-attr]

    with pytest.raises(PersonaError, match=r"at least 4 patrons .* there are 3: nothing was changed"):
        build_personas(engine=crm)
    with pytest.raises(PersonaError, match=r"5 personas need at least 5 patrons"):
        build_personas(engine=crm, clusters=5)
    with pytest.raises(PersonaError, match=r"--clusters must be at least 2"):
        build_personas(engine=crm, clusters=1)

    with Session(crm, future=True) as session:
        assert [p.name_en for p in session.execute(select(Persona)).scalars()] == ["old"]
    assert persona_of(crm, patrons[0]) == old.id


def test_given_clusters_are_used(crm: Engine) -> None:
    groups = three_groups(crm)

    personas = build_personas(engine=crm, clusters=2)

    assert [p.size for p in personas] == [13, 5] or [p.size for p in personas] == [11, 7]
    assert sorted(len(group) for group in members(crm).values()) == sorted(p.size for p in personas)
    assert set().union(*members(crm).values()) == set().union(*groups.values())


def test_a_rebuild_keeps_the_keys_of_groups_that_stay_and_never_reuses_a_gone_one(crm: Engine) -> None:
    groups = three_groups(crm)
    build_personas(engine=crm)
    # The research-data group grows to the largest; the study-room askers withdraw profiling; patrons
    # asking about holds and interlibrary loans appear.
    groups["data"] |= {add_patron(crm, RESEARCH_DATA, offset=i, vector=_near(1, i)) for i in range(5, 9)}
    with session_scope(crm) as session:
        for patron_id in groups["study"]:
            session.add(
                Consent(
                    patron_id=patron_id, purpose="profiling", granted=False, recorded_at=START.replace(hour=3)
                )
            )
    holds = {add_patron(crm, HOLDS, offset=i, vector=_near(2, i)) for i in range(4)}

    personas = build_personas(engine=crm)

    assert [(p.key, p.size) for p in personas] == [("p3", 9), ("p1", 7), ("p4", 4)]
    assert members(crm) == {"p3": groups["data"], "p1": groups["renewals"], "p4": holds}
    assert "holds" in personas[2].name_en
    assert "馆际互借" in personas[2].name_zh


def test_chinese_and_english_words_leave_out_stopwords_and_digits() -> None:
    english, chinese = message_terms("Hello, can I renew 3 books at the Library? 请问考研自习室在哪里")
    assert english == ["renew", "book"]
    assert chinese == ["考研", "自习室"]


def test_the_command_builds_and_shows_personas(
    crm: Engine, crm_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    three_groups(crm)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    settings = load_settings(database_url=crm_url)

    built = parser.parse_args(["personas", "--clusters", "3", "--format", "json"])
    assert built.handler(settings, built) == 0
    listed = json.loads(capsys.readouterr().out)
    shown = parser.parse_args(["personas", "--show"])
    assert shown.handler(settings, shown) == 0
    table = capsys.readouterr().out.splitlines()

    assert [(p["key"], p["size"]) for p in listed] == [("p1", 7), ("p2", 6), ("p3", 5)]
    assert set(listed[1]["words"]) == {"en", "zh"}
    assert "自习室" in listed[1]["words"]["zh"]
    assert table[0].split()[:3] == ["persona", "patrons", "name"]
    assert [line.split()[:2] for line in table[1:]] == [["p1", "7"], ["p2", "6"], ["p3", "5"]]
    with pytest.raises(SystemExit):
        parser.parse_args(["personas", "--clusters", "0"])


def test_a_word_only_one_patron_used_never_names_a_persona(crm: Engine) -> None:
    groups = three_groups(crm)
    someone = min(groups["renewals"])
    with session_scope(crm) as session:
        for n in range(3):  # said three times, by one patron: still theirs alone
            session.add(
                Interaction(
                    patron_id=someone,
                    channel="telegram",
                    direction="in",
                    text="Please renew the books of Wangchuan Xiaoming 王川晓明",
                    intent="renewal",
                    event_key=f"e{next(_keys)}",
                    occurred_at=START + dt.timedelta(hours=n + 1),
                )
            )

    personas = build_personas(engine=crm)

    words = {word for persona in personas for language in ("en", "zh") for word in persona.words[language]}
    assert "renew" in words
    assert not words & {"wangchuan", "xiaoming", "王川", "晓明", "王川晓明"}
