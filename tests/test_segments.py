"""Segments: the file format and its errors, every rule in SQL on both databases, storing and refreshing."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import (
    ChannelIdentity,
    Consent,
    Conversation,
    Escalation,
    Feedback,
    Interaction,
    Patron,
    PatronInterest,
    Persona,
    Segment,
    SegmentMembership,
    Suggestion,
)
from bot.outreach.segments import (
    SegmentDefinition,
    SegmentError,
    load_segment_file,
    member_query,
    parse_segment,
    preview,
    refresh_membership,
    save_segment,
)
from bot.outreach.spec import SpecError, parse_spec

NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)
_keys = itertools.count()

EXAMPLE = """\
name: pg-chemistry
description: postgraduates asking about data
rules:                      # all must hold
  channel: [telegram, wechat]
  source: ["poster-east"]
  patron_type: [postgraduate]
  active_within_days: 90
  interest_like: {text: "research data management", min_similarity: 0.5}
"""


def segment(rules: str, name: str = "s") -> SegmentDefinition:
    return parse_segment(parse_spec(f"name: {name}\nrules:\n{rules}", path="s.yml"))


class WordEncoder:
    """Hashed bag of words: texts sharing words point alike; no model is loaded."""

    identity = "fake-words 1"

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        rows = np.zeros((len(texts), 64), np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                rows[row, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 64] += 1
            rows[row] /= max(float(np.linalg.norm(rows[row])), 1e-9)
        return rows


# --- building patrons --------------------------------------------------------------------------------


def patron(session: Any, **fields: Any) -> int:
    channels = fields.pop("channels", {})
    row = Patron(**({"last_seen_at": NOW - dt.timedelta(days=1)} | fields))
    session.add(row)
    session.flush()
    for channel, source in channels.items():
        session.add(
            ChannelIdentity(patron_id=row.id, channel=channel, external_id=f"x{next(_keys)}", source=source)
        )
    return int(row.id)


def message(
    session: Any, patron_id: int, *, intent: str = "greet", days_ago: float = 1, text: str = "hi"
) -> None:
    session.add(
        Interaction(
            patron_id=patron_id,
            channel="telegram",
            direction="in",
            text=text,
            intent=intent,
            event_key=f"k{next(_keys)}",
            occurred_at=NOW - dt.timedelta(days=days_ago),
        )
    )


def conversation(session: Any, patron_id: int) -> None:
    session.add(
        Conversation(patron_id=patron_id, channel="telegram", rasa_sender_id=f"telegram:{next(_keys)}")
    )


def consent(session: Any, patron_id: int, purpose: str, granted: bool, minutes: int) -> None:
    at = NOW - dt.timedelta(days=10) + dt.timedelta(minutes=minutes)
    session.add(Consent(patron_id=patron_id, purpose=purpose, granted=granted, recorded_at=at))


def members(engine: Engine, definition: SegmentDefinition) -> set[int]:
    with session_scope(engine) as session:
        return set(session.execute(member_query(definition=definition, now=NOW)).scalars())


# --- the file ----------------------------------------------------------------------------------------


def test_the_issue_example_parses_and_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "pg.yml"
    path.write_text(EXAMPLE, encoding="utf-8")
    definition = load_segment_file(path)
    assert definition.name == "pg-chemistry"
    assert definition.rules.channel == ("telegram", "wechat")
    assert definition.rules.interest_like is not None
    assert definition.rules.interest_like.min_similarity == 0.5
    stored = json.loads(json.dumps(definition.rules.as_json()))
    again = parse_segment(parse_spec(json.dumps({"name": "pg-chemistry", "rules": stored})))
    assert again.rules == definition.rules


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("name: a\nrules:\n  channel: [telegram]\n  colour: [red]\n", 4, "rules.colour", "unknown field"),
        ("name: a\nrules:\n  reachable: true\n", 3, "rules.reachable", "not a rule"),
        ("name: a\nrules: {}\nowner: me\n", 3, "owner", "unknown field"),
        ("name: a\nrules:\n  active_within_days: soon\n", 3, "rules.active_within_days", "whole number"),
        ("name: a\nrules:\n  channel: telegram\n", 3, "rules.channel", "list"),
        (
            "name: a\nrules:\n  patron_type:\n    - faculty\n    - wizard\n",
            5,
            "rules.patron_type.1",
            "wizard",
        ),
        (
            "name: a\nrules:\n  time_zone: [Asia/Shanghai, Mars/Olympus]\n",
            3,
            "rules.time_zone.1",
            "time zone",
        ),
        ("name: a\nrules:\n  rating_at_most: {csat: 7}\n", 3, "rules.rating_at_most.csat", "1 to 5"),
        ("name: a\nrules:\n  asked_about: {topics: [toilets]}\n", 3, "rules.asked_about.topics.0", "toilets"),
        ("name: a\nrules:\n  escalations: maybe\n", 3, "rules.escalations", "open, resolved"),
        ("name: a\nrules:\n  gave_feedback: yes please\n", 3, "rules.gave_feedback", "true or false"),
        ("name: a\nrules:\n  consent: [marketing]\n", 3, "rules.consent.0", "marketing"),
        (
            "name: a\nrules:\n  interest_like: {text: data}\n",
            3,
            "rules.interest_like.min_similarity",
            "-1 to 1",
        ),
        ("description: x\nrules: {}\n", None, "name", "required"),
    ],
)
def test_a_bad_file_is_refused_naming_file_line_and_field(
    text: str, line: int | None, field: str, words: str
) -> None:
    with pytest.raises(SpecError) as raised:
        parse_segment(parse_spec(text, path="seg.yml"))
    assert raised.value.field == field
    assert raised.value.line == line
    assert words in str(raised.value)
    assert str(raised.value).startswith("seg.yml")


def test_not_yaml_and_not_a_mapping_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("name: a\nrules: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match="not valid YAML") as raised:
        load_segment_file(broken)
    assert raised.value.path == str(broken)
    assert raised.value.line is not None
    listed = tmp_path / "list.yml"
    listed.write_text("- name: a\n", encoding="utf-8")
    with pytest.raises(SpecError, match="mapping"):
        load_segment_file(listed)


# --- the rules, in SQL -------------------------------------------------------------------------------


def test_attribute_rules(crm: Engine) -> None:
    with session_scope(crm) as session:
        pg_tg = patron(
            session,
            patron_type="postgraduate",
            language="en",
            time_zone="Asia/Shanghai",
            channels={"telegram": "poster-east"},
        )
        pg_both = patron(
            session,
            patron_type="postgraduate",
            language="zh",
            channels={"wechat": None, "telegram": "qr-west"},
        )
        faculty = patron(
            session, patron_type="faculty", language="en", time_zone="Europe/London", channels={"rest": None}
        )
        nobody = patron(session)
    assert members(crm, segment("  patron_type: [postgraduate]")) == {pg_tg, pg_both}
    assert members(crm, segment("  language: [en]")) == {pg_tg, faculty}
    assert members(crm, segment("  time_zone: [Europe/London]")) == {faculty}
    # A patron on two channels is in once, found by either.
    assert members(crm, segment("  channel: [wechat]")) == {pg_both}
    assert members(crm, segment("  channel: [telegram, wechat]")) == {pg_tg, pg_both}
    assert members(crm, segment("  source: [poster-east]")) == {pg_tg}
    assert members(crm, segment("  source: [qr-west]")) == {pg_both}
    # `rules: {}` is every patron.
    assert members(crm, segment("  {}")) == {pg_tg, pg_both, faculty, nobody}


def test_every_rule_must_hold(crm: Engine) -> None:
    with session_scope(crm) as session:
        match = patron(session, patron_type="postgraduate", channels={"telegram": "poster-east"})
        wrong_channel = patron(session, patron_type="postgraduate", channels={"rest": "poster-east"})
        wrong_source = patron(session, patron_type="postgraduate", channels={"telegram": "other"})
        too_old = patron(
            session,
            patron_type="postgraduate",
            channels={"telegram": "poster-east"},
            last_seen_at=NOW - dt.timedelta(days=200),
        )
    rules = (
        "  channel: [telegram, wechat]\n  source: [poster-east]\n"
        "  patron_type: [postgraduate]\n  active_within_days: 90"
    )
    assert members(crm, segment(rules)) == {match}
    assert {wrong_channel, wrong_source, too_old}.isdisjoint(members(crm, segment(rules)))


def test_activity_and_conversation_rules(crm: Engine) -> None:
    with session_scope(crm) as session:
        recent = patron(session, last_seen_at=NOW - dt.timedelta(days=3))
        dormant = patron(session, last_seen_at=NOW - dt.timedelta(days=120))
        for _ in range(3):
            conversation(session, recent)
        conversation(session, dormant)
    assert members(crm, segment("  active_within_days: 30")) == {recent}
    assert members(crm, segment("  inactive_for_days: 90")) == {dormant}
    assert members(crm, segment("  conversations_at_least: 3")) == {recent}
    assert members(crm, segment("  conversations_at_least: 1")) == {recent, dormant}


def test_asked_about_counts_only_questions_on_the_topics_within_the_period(crm: Engine) -> None:
    with session_scope(crm) as session:
        asked = patron(session)
        long_ago = patron(session)
        other_topic = patron(session)
        message(session, asked, intent="research_help", days_ago=5)
        message(session, long_ago, intent="research_help", days_ago=100)
        message(session, other_topic, intent="renewal", days_ago=5)
    rule = "  asked_about: {topics: [research_help, e_resources], within_days: 30}"
    assert members(crm, segment(rule)) == {asked}
    assert members(crm, segment("  asked_about: {topics: [research_help]}")) == {asked, long_ago}


def test_feedback_escalation_and_suggestion_rules(crm: Engine) -> None:
    with session_scope(crm) as session:
        unhappy = patron(session)
        happy = patron(session)
        detractor = patron(session)
        silent = patron(session)
        session.add_all(
            [
                Feedback(patron_id=unhappy, csat=2),
                Feedback(patron_id=unhappy, csat=5),
                Feedback(patron_id=happy, csat=5, nps=10),
                Feedback(patron_id=detractor, nps=4),
                Escalation(patron_id=unhappy, reason="low_rating", status="open", due_at=NOW),
                Escalation(patron_id=happy, reason="requested", status="resolved", due_at=NOW),
                Suggestion(patron_id=happy, kind="purchase"),
                Suggestion(patron_id=happy, kind="service"),
                Suggestion(patron_id=detractor, kind="service"),
                Suggestion(patron_id=unhappy, kind="complaint"),
            ]
        )
    assert members(crm, segment("  gave_feedback: true")) == {unhappy, happy, detractor}
    assert members(crm, segment("  gave_feedback: false")) == {silent}
    assert members(crm, segment("  rating_at_most: {csat: 2}")) == {unhappy}
    assert members(crm, segment("  rating_at_most: {nps: 6}")) == {detractor}
    assert members(crm, segment("  escalations: open")) == {unhappy}
    assert members(crm, segment("  escalations: resolved")) == {happy}
    assert members(crm, segment("  escalations: any")) == {unhappy, happy}
    assert members(crm, segment("  escalations: none")) == {detractor, silent}
    assert members(crm, segment("  suggestions_made: true")) == {happy, detractor}
    assert members(crm, segment("  suggestions_made: 2")) == {happy}
    # A complaint is not a suggestion made.
    assert members(crm, segment("  suggestions_made: false")) == {unhappy, silent}


def test_consent_is_the_latest_decision_or_the_default(crm: Engine) -> None:
    with session_scope(crm) as session:
        granted = patron(session)
        withdrew = patron(session)
        came_back = patron(session)
        never_asked = patron(session)
        consent(session, granted, "follow_up", True, 1)
        consent(session, withdrew, "follow_up", True, 1)
        consent(session, withdrew, "follow_up", False, 2)
        consent(session, came_back, "follow_up", False, 1)
        consent(session, came_back, "follow_up", True, 2)
        consent(session, withdrew, "service", False, 3)
    assert members(crm, segment("  consent: [follow_up]")) == {granted, came_back}
    # Nobody said no to service but `withdrew`: the default (granted) holds for the others.
    assert members(crm, segment("  consent: [service]")) == {granted, came_back, never_asked}
    assert members(crm, segment("  consent: [follow_up, service]")) == {granted, came_back}


def test_persona_rule_and_unknown_persona_refused(crm: Engine) -> None:
    with session_scope(crm) as session:
        persona = Persona(key="p1", name_en="researchers", name_zh="研究者")
        session.add(persona)
        session.flush()
        researcher = patron(session, persona_id=persona.id)
        patron(session)
    assert members(crm, segment("  persona: [p1]")) == {researcher}
    with session_scope(crm) as session, pytest.raises(SegmentError, match="no persona p9"):
        save_segment(session=session, definition=segment("  persona: [p1, p9]"))


# --- storing and refreshing --------------------------------------------------------------------------


def test_saving_twice_updates_and_refresh_replaces_membership(crm: Engine) -> None:
    with session_scope(crm) as session:
        english = patron(session, language="en")
        chinese = patron(session, language="zh")
    with session_scope(crm) as session:
        first = save_segment(
            session=session, definition=segment("  language: [en]", name="readers"), staff_id=None
        )
        segment_id = first.id
    assert refresh_membership(engine=crm, segment_id=segment_id, now=NOW) == 1
    with session_scope(crm) as session:
        second = save_segment(session=session, definition=segment("  language: [zh]", name="readers"))
        assert second.id == segment_id
        assert second.definition == {"language": ["zh"]}
        assert second.updated_at is not None
    assert refresh_membership(engine=crm, segment_id=segment_id, now=NOW) == 1
    with session_scope(crm) as session:
        stored = set(session.execute(select(SegmentMembership.patron_id)).scalars())
        row = session.get(Segment, segment_id)
        assert row is not None
        assert (row.member_count, row.refreshed_at) == (1, NOW)
        assert len(session.execute(select(Segment)).scalars().all()) == 1
    assert stored == {chinese}
    assert english not in stored


def test_a_segment_matching_nobody_counts_zero(crm: Engine) -> None:
    with session_scope(crm) as session:
        patron(session, patron_type="public")
        segment_id = save_segment(session=session, definition=segment("  patron_type: [faculty]")).id
    assert refresh_membership(engine=crm, segment_id=segment_id, now=NOW) == 0
    assert preview(engine=crm, segment_id=segment_id).count == 0


def test_interest_like_keeps_consenting_patrons_close_to_the_description(crm: Engine) -> None:
    encoder = WordEncoder()
    with session_scope(crm) as session:
        data_minded = patron(session)
        toilets = patron(session)
        no_consent = patron(session)
        no_vector = patron(session)
        for patron_id in (data_minded, toilets, no_vector):
            consent(session, patron_id, "profiling", True, 1)
        texts = {
            data_minded: "research data management plan",
            toilets: "where is the toilet",
            no_consent: "research data management",
        }
        for patron_id, text in texts.items():
            vector = encoder.encode_queries([text])[0]
            session.add(
                PatronInterest(
                    patron_id=patron_id, vector=vector.tobytes(), dims=64, model=encoder.identity, messages=1
                )
            )
        # A vector of another model is never compared with this one's.
        session.add(
            PatronInterest(
                patron_id=no_vector,
                vector=np.ones(64, np.float32).tobytes(),
                dims=64,
                model="other",
                messages=1,
            )
        )
        segment_id = save_segment(
            session=session,
            definition=segment('  interest_like: {text: "research data management", min_similarity: 0.6}'),
        ).id
    assert refresh_membership(engine=crm, segment_id=segment_id, encoder=encoder, now=NOW) == 1
    with session_scope(crm) as session:
        assert set(session.execute(select(SegmentMembership.patron_id)).scalars()) == {data_minded}


def test_interest_like_without_vectors_of_the_model_matches_nobody(crm: Engine) -> None:
    with session_scope(crm) as session:
        patron(session)
        segment_id = save_segment(
            session=session, definition=segment('  interest_like: {text: "data", min_similarity: 0.1}')
        ).id
    assert refresh_membership(engine=crm, segment_id=segment_id, encoder=WordEncoder(), now=NOW) == 0


def test_preview_shows_count_and_sample_without_texts(crm: Engine) -> None:
    with session_scope(crm) as session:
        first = patron(
            session,
            display_name="Li",
            language="zh",
            patron_type="faculty",
            channels={"wechat": None, "telegram": None},
            last_seen_at=NOW,
        )
        second = patron(session, display_name="Ann", language="en", patron_type="faculty")
        message(session, first, text="a secret question")
        segment_id = save_segment(
            session=session, definition=segment("  patron_type: [faculty]", name="fac")
        ).id
    shown = preview(engine=crm, segment_id=segment_id, sample=1)
    assert (shown.name, shown.count) == ("fac", 2)
    assert [p.patron_id for p in shown.sample] == [first]
    assert shown.sample[0].channels == ("telegram", "wechat")
    document = json.dumps(shown.as_json())
    assert "secret" not in document
    assert "Li" in document
    assert second not in [p.patron_id for p in shown.sample]


# --- the commands ------------------------------------------------------------------------------------


def run_command(argv: list[str], crm_url: str) -> int:
    import argparse

    from bot.cli import segments as segment_commands
    from bot.settings import load_settings

    parser = argparse.ArgumentParser(prog="patronbot")
    segment_commands.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(load_settings(database_url=crm_url), args)
    return result


def test_segment_commands_save_preview_and_list(
    crm: Engine, crm_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with session_scope(crm) as session:
        faculty = patron(
            session, display_name="Wang", language="zh", patron_type="faculty", channels={"wechat": None}
        )
        patron(session, patron_type="public")
    path = tmp_path / "faculty.yml"
    path.write_text(
        "name: faculty\ndescription: teaching staff\nrules:\n  patron_type: [faculty]\n", encoding="utf-8"
    )
    assert run_command(["segment", "save", str(path)], crm_url) == 0
    with session_scope(crm) as session:
        segment_id = session.execute(select(Segment.id)).scalar_one()
    assert capsys.readouterr().out.strip() == f"segment faculty saved (id {segment_id}): 1 patrons"
    assert run_command(["segment", "preview", "faculty", "--format", "json", "--sample", "5"], crm_url) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "faculty"
    assert shown["count"] == 1
    assert shown["sample"] == [
        {
            "patron_id": faculty,
            "display_name": "Wang",
            "language": "zh",
            "patron_type": "faculty",
            "channels": ["wechat"],
        }
    ]
    assert run_command(["segment", "preview", "faculty"], crm_url) == 0
    assert "segment faculty: 1 patrons" in capsys.readouterr().out
    assert run_command(["segment", "list"], crm_url) == 0
    listed = capsys.readouterr().out
    assert "faculty" in listed
    assert "teaching staff" in listed
    with pytest.raises(SegmentError, match="no segment named 'staff'"):
        run_command(["segment", "preview", "staff"], crm_url)


def test_segment_save_refuses_a_bad_file_before_storing(crm: Engine, crm_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("name: bad\nrules:\n  channels: [telegram]\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad\.yml:3: rules\.channels: unknown field"):
        run_command(["segment", "save", str(path)], crm_url)
    with session_scope(crm) as session:
        assert session.execute(select(Segment)).first() is None


def test_a_file_with_nul_in_any_text_is_refused_with_the_field_and_line() -> None:
    """YAML's "\\0" escape makes NUL, which PostgreSQL cannot store: the file is refused, not half saved."""
    with pytest.raises(SpecError) as refused:
        parse_spec('name: students\nrules:\n  channel: "tele\\0gram"\n', path="s.yaml")
    assert (refused.value.field, refused.value.line) == ("rules.channel", 3)
    assert "NUL" in str(refused.value)
    with pytest.raises(SpecError, match="NUL"):
        parse_spec('name: students\n"k\\0": 1\n')
