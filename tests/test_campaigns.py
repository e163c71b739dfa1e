"""Campaign files: each refusal names file, line and field; saving by name; pause, resume, cancel; the CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bot.cli.campaigns import add_commands
from bot.crm.database import session_scope
from bot.crm.models import Campaign, Delivery, Patron, Segment, SegmentMembership
from bot.outreach.campaigns import (
    DEFAULT_TIMEZONE,
    CampaignError,
    cancel_campaign,
    describe_schedule,
    list_campaigns,
    load_campaign_file,
    parse_campaign,
    pause_campaign,
    resume_campaign,
    save_campaign,
)
from bot.outreach.spec import SpecError, parse_spec
from bot.settings import load_settings

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)

BASE = """\
name: rdm-workshop-invite
segment: pg-chemistry
purpose: follow_up
kind: announcement
message:
  en: "Hello {display_name}, the research-data workshop is on 1 March."
  zh: "{display_name}您好，科研数据管理讲座 3 月 1 日举行。"
buttons:
  - title: {en: "Sign me up", zh: "我要报名"}
    payload: "/affirm"
schedule:
  at: "2027-03-01T09:00:00+08:00"
"""
AT_LINE = '  at: "2027-03-01T09:00:00+08:00"'


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text
    return text.replace(old, new)


def write(tmp_path: Path, text: str, name: str = "campaign.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# (case, file text, the field named, its line, words of the reason)
BAD_FILES = [
    ("unknown field", BASE + "colour: blue\n", "colour", 13, "unknown field"),
    (
        "unknown schedule field",
        edit(AT_LINE, AT_LINE + "\n  every: week"),
        "schedule.every",
        13,
        "unknown field",
    ),
    (
        "unknown after field",
        edit(AT_LINE, "  after: {event: low_rating, days: 3, hours: 2}"),
        "schedule.after.hours",
        12,
        "unknown field",
    ),
    (
        "unknown button field",
        edit('    payload: "/affirm"', '    payload: "/affirm"\n    colour: red'),
        "buttons.0.colour",
        11,
        "unknown field",
    ),
    ("missing name", edit("name: rdm-workshop-invite\n", ""), "name", 1, "missing"),
    ("missing segment", edit("segment: pg-chemistry\n", ""), "segment", 1, "missing"),
    (
        "missing message",
        edit(BASE[BASE.index("message:") : BASE.index("buttons:")], ""),
        "message",
        1,
        "missing",
    ),
    (
        "message without a language",
        edit(BASE[BASE.index("message:") : BASE.index("buttons:")], "message: {}\n"),
        "message",
        5,
        "per language",
    ),
    (
        "message in another language",
        edit('举行。"\n', '举行。"\n  fr: "Bonjour {display_name}"\n'),
        "message.fr",
        8,
        "unknown language",
    ),
    (
        "template names a missing field",
        edit("Hello {display_name}", "Hello {first_name}"),
        "message.en",
        6,
        "not a field",
    ),
    (
        "template reaches into a field",
        edit("Hello {display_name}", "Hello {display_name.title}"),
        "message.en",
        6,
        "reaches",
    ),
    (
        "template indexes a field",
        edit('"{display_name}您好', '"{display_name[0]}您好'),
        "message.zh",
        7,
        "reaches",
    ),
    ("cron with four fields", edit(AT_LINE, '  cron: "0 9 * *"'), "schedule.cron", 12, "not a valid cron"),
    (
        "cron minute out of range",
        edit(AT_LINE, '  cron: "61 9 * * MON"'),
        "schedule.cron",
        12,
        "not a valid cron",
    ),
    ("cron that never fires", edit(AT_LINE, '  cron: "0 9 31 2 *"'), "schedule.cron", 12, "never fires"),
    (
        "unknown time zone",
        edit(AT_LINE, '  cron: "0 9 * * MON"\n  timezone: Mars/Olympus'),
        "schedule.timezone",
        13,
        "not a known time zone",
    ),
    ("at without an offset", edit(AT_LINE, '  at: "2027-03-01T09:00:00"'), "schedule.at", 12, "no offset"),
    ("at not ISO 8601", edit(AT_LINE, '  at: "next Monday at nine"'), "schedule.at", 12, "ISO 8601"),
    ("at in the past", edit(AT_LINE, '  at: "2026-12-01T09:00:00+08:00"'), "schedule.at", 12, "in the past"),
    ("two schedules", edit(AT_LINE, AT_LINE + '\n  cron: "0 9 * * MON"'), "schedule", 11, "exactly one"),
    (
        "unknown event",
        edit(AT_LINE, "  after: {event: birthday, days: 3}"),
        "schedule.after.event",
        12,
        "one of",
    ),
    (
        "zero days",
        edit(AT_LINE, "  after: {event: low_rating, days: 0}"),
        "schedule.after.days",
        12,
        "more than 0",
    ),
    (
        "negative days",
        edit(AT_LINE, "  after: {event: low_rating, days: -2}"),
        "schedule.after.days",
        12,
        "more than 0",
    ),
    (
        "days not a number",
        edit(AT_LINE, "  after: {event: low_rating, days: three}"),
        "schedule.after.days",
        12,
        "number",
    ),
    (
        "English over Telegram's limit",
        edit("Hello {display_name}, the research-data workshop is on 1 March.", "x" * 4100),
        "message.en",
        6,
        "too long for telegram",
    ),
    (
        "Chinese over WeChat's bytes",
        # 1,680 bytes as written: over 2,048 only with a long name, the button and the opt-out line
        edit("科研数据管理讲座 3 月 1 日举行。", "书" * 560),
        "message.zh",
        7,
        "too long for wechat",
    ),
    (
        "four buttons",
        edit(
            '    payload: "/affirm"\n',
            '    payload: "/affirm"\n' + "  - {title: {en: a, zh: 甲}, payload: /deny}\n" * 3,
        ),
        "buttons",
        8,
        "at most 3",
    ),
    (
        "button without a payload",
        edit('    payload: "/affirm"\n', ""),
        "buttons.0.payload",
        9,
        "expected an intent",
    ),
    (
        "payload not an intent",
        edit('"/affirm"', '"sign me up"'),
        "buttons.0.payload",
        10,
        "expected an intent",
    ),
    (
        "payload entities not JSON",
        edit('"/affirm"', "'/affirm{oops}'"),
        "buttons.0.payload",
        10,
        "JSON object",
    ),
    (
        "title without zh",
        edit('{en: "Sign me up", zh: "我要报名"}', '{en: "Sign me up"}'),
        "buttons.0.title",
        9,
        "no zh",
    ),
    (
        "buttons not a list",
        edit(BASE[BASE.index("buttons:") : BASE.index("schedule:")], "buttons: yes\n"),
        "buttons",
        8,
        "list",
    ),
    ("unknown purpose", edit("purpose: follow_up", "purpose: marketing"), "purpose", 3, "expected one of"),
    (
        "service is no campaign's purpose",
        edit("purpose: follow_up", "purpose: service"),
        "purpose",
        3,
        "expected one of",
    ),
    ("question without asks", edit("kind: announcement", "kind: question"), "kind", 4, "needs asks"),
    (
        "announcement with asks",
        edit("kind: announcement", "kind: announcement\nasks: csat"),
        "asks",
        5,
        "only a question",
    ),
    (
        "question asking the unknown",
        edit("kind: announcement", "kind: question\nasks: mood"),
        "asks",
        5,
        "one of",
    ),
    ("unknown kind", edit("kind: announcement", "kind: survey"), "kind", 4, "one of"),
]


@pytest.mark.parametrize(
    ("text", "field", "line", "reason"), [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_a_bad_file_is_refused_naming_file_line_and_field(
    tmp_path: Path, text: str, field: str, line: int, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as error:
        load_campaign_file(path, now=NOW)
    assert (error.value.path, error.value.line, error.value.field) == (str(path), line, field)
    assert str(error.value).startswith(f"{path}:{line}: {field}: ")
    assert reason in str(error.value)


def test_a_file_that_is_not_yaml_or_not_a_mapping_is_refused_with_its_line(tmp_path: Path) -> None:
    broken = write(tmp_path, "name: x\nmessage: [unclosed\n", "broken.yml")
    with pytest.raises(SpecError) as error:
        load_campaign_file(broken, now=NOW)
    assert error.value.path == str(broken)
    assert error.value.line is not None
    assert "not valid YAML" in str(error.value)
    listing = write(tmp_path, "- name: x\n", "list.yml")
    with pytest.raises(SpecError, match=r"list\.yml:1: expected a YAML mapping"):
        load_campaign_file(listing, now=NOW)


def test_the_example_file_reads_whole() -> None:
    definition = parse_campaign(parse_spec(BASE, path="x.yml"), now=NOW)
    assert (definition.name, definition.segment, definition.purpose, definition.kind) == (
        "rdm-workshop-invite",
        "pg-chemistry",
        "follow_up",
        "announcement",
    )
    assert definition.buttons == [{"title": {"en": "Sign me up", "zh": "我要报名"}, "payload": "/affirm"}]
    assert definition.schedule is not None
    assert definition.schedule.as_json() == {"at": "2027-03-01T01:00:00+00:00"}


def test_defaults_an_unquoted_time_and_a_long_chinese_message_that_still_fits() -> None:
    text = edit(AT_LINE, "  at: 2027-03-01T09:00:00+08:00", edit("purpose: follow_up\n", ""))
    text = edit("{display_name}您好，科研数据管理讲座 3 月 1 日举行。", "书" * 400, text)
    definition = parse_campaign(parse_spec(text), now=NOW)
    assert definition.purpose == "follow_up"
    assert definition.schedule is not None
    assert definition.schedule.at == dt.datetime(2027, 3, 1, 1, tzinfo=dt.UTC)
    cron = parse_campaign(
        parse_spec(edit(AT_LINE, '  cron: "0 9 * * MON"')), now=NOW, timezone="Europe/London"
    )
    assert cron.schedule is not None
    assert cron.schedule.as_json() == {
        "cron": "0 9 * * MON",
        "timezone": "Europe/London",
    }


# --- stored campaigns (SQLite, and PostgreSQL when set) ---


@pytest.fixture
def segments(crm: Engine) -> dict[str, int]:
    """pg-chemistry with two patrons, and a segment that matches nobody."""
    with session_scope(crm) as session:
        patrons = [Patron(display_name="Ada", language="en"), Patron(language="zh")]
        session.add_all(patrons)
        full = Segment(name="pg-chemistry", definition={"rules": {"channel": ["telegram", "wechat"]}})
        empty = Segment(name="nobody", definition={"rules": {"patron_type": ["faculty"]}})
        session.add_all([full, empty])
        session.flush()
        session.add_all(SegmentMembership(segment_id=full.id, patron_id=patron.id) for patron in patrons)
        return {"pg-chemistry": full.id, "nobody": empty.id, "patron": patrons[0].id}


def save(crm: Engine, text: str, **options: object) -> int:
    definition = parse_campaign(parse_spec(text, path="c.yml"), now=NOW)
    with session_scope(crm) as session:
        return save_campaign(session=session, definition=definition, **options).id  # type: ignore[arg-type]


def stored(crm: Engine, campaign_id: int) -> Campaign:
    with session_scope(crm) as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return campaign


@pytest.mark.parametrize(
    ("schedule", "expected", "status"),
    [
        (AT_LINE, {"at": "2027-03-01T01:00:00+00:00"}, "scheduled"),
        (
            '  cron: "0 9 * * MON"\n  timezone: Asia/Tokyo',
            {"cron": "0 9 * * MON", "timezone": "Asia/Tokyo"},
            "scheduled",
        ),
        (
            "  after: {event: low_rating, days: 2.5}",
            {"after": {"event": "low_rating", "days": 2.5}},
            "scheduled",
        ),
        (None, None, "draft"),
    ],
    ids=["at", "cron", "after", "draft"],
)
def test_each_schedule_kind_is_saved_and_read_back(
    crm: Engine, segments: dict[str, int], schedule: str | None, expected: object, status: str
) -> None:
    text = edit("schedule:\n" + AT_LINE + "\n", "") if schedule is None else edit(AT_LINE, schedule)
    campaign = stored(crm, save(crm, text))
    assert campaign.schedule == expected
    assert campaign.status == status
    assert campaign.segment_id == segments["pg-chemistry"]
    assert isinstance(campaign.message, dict)
    assert campaign.message["zh"].startswith("{display_name}您好")
    assert campaign.buttons == [{"title": {"en": "Sign me up", "zh": "我要报名"}, "payload": "/affirm"}]
    assert (campaign.kind, campaign.asks, campaign.purpose) == ("announcement", None, "follow_up")
    assert campaign.scheduled_at == (
        dt.datetime(2027, 3, 1, 1, tzinfo=dt.UTC) if schedule == AT_LINE else None
    )
    after = schedule is not None and "after" in schedule
    assert (campaign.trigger_event, campaign.trigger_days) == (("low_rating", 2.5) if after else (None, None))


def test_saving_the_same_name_again_updates_the_campaign(crm: Engine, segments: dict[str, int]) -> None:
    first = save(crm, BASE)
    changed = edit(AT_LINE, '  cron: "0 9 * * MON"', edit("kind: announcement", "kind: question\nasks: csat"))
    second = save(crm, edit("1 March.", "2 March.", changed))
    assert second == first
    campaign = stored(crm, first)
    assert isinstance(campaign.message, dict)
    assert campaign.message["en"].endswith("2 March.")
    assert (campaign.kind, campaign.asks) == ("question", "csat")
    assert campaign.schedule == {"cron": "0 9 * * MON", "timezone": DEFAULT_TIMEZONE}
    assert campaign.scheduled_at is None
    assert campaign.updated_at is not None
    with session_scope(crm) as session:
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1


def test_an_unknown_segment_or_one_matching_nobody_is_refused_and_nothing_stored(
    crm: Engine, segments: dict[str, int]
) -> None:
    with pytest.raises(SpecError, match=r"^c\.yml:2: segment: no segment named 'pg-physics'"):
        save(crm, edit("segment: pg-chemistry", "segment: pg-physics"))
    with pytest.raises(SpecError, match=r"^c\.yml:2: segment: segment 'nobody' matches nobody"):
        save(crm, edit("segment: pg-chemistry", "segment: nobody"))
    # The audience can be counted another way (the segment's rule, refreshed): it is asked, not assumed.
    with pytest.raises(SpecError, match="matches nobody"):
        save(crm, BASE, audience=lambda session, segment: 0)
    with session_scope(crm) as session:
        assert list_campaigns(session=session) == []


def test_a_cancelled_campaign_cannot_be_saved_again(crm: Engine, segments: dict[str, int]) -> None:
    number = save(crm, BASE)
    with session_scope(crm) as session:
        cancel_campaign(session=session, campaign_id=number)
    with pytest.raises(SpecError, match=r"^c\.yml:1: name: campaign 'rdm-workshop-invite' is cancelled"):
        save(crm, BASE)


def test_updating_a_paused_campaign_keeps_it_paused(crm: Engine, segments: dict[str, int]) -> None:
    number = save(crm, BASE)
    with session_scope(crm) as session:
        pause_campaign(session=session, campaign_id=number)
    save(crm, edit("1 March.", "2 March."))
    assert stored(crm, number).status == "paused"


def test_pause_and_resume(crm: Engine, segments: dict[str, int]) -> None:
    number = save(crm, BASE)
    with session_scope(crm) as session:
        assert pause_campaign(session=session, campaign_id=number).status == "paused"
        assert pause_campaign(session=session, campaign_id=number).status == "paused"  # twice is harmless
    assert stored(crm, number).status == "paused"
    with session_scope(crm) as session:
        assert resume_campaign(session=session, campaign_id=number).status == "scheduled"
    with pytest.raises(CampaignError, match="not paused"), session_scope(crm) as session:
        resume_campaign(session=session, campaign_id=number)
    with pytest.raises(CampaignError, match="no campaign 999"), session_scope(crm) as session:
        pause_campaign(session=session, campaign_id=999)


def test_resuming_a_campaign_part_sent_makes_it_running_again(crm: Engine, segments: dict[str, int]) -> None:
    number = save(crm, edit("schedule:\n" + AT_LINE + "\n", ""))
    with session_scope(crm) as session:
        session.add(Delivery(campaign_id=number, patron_id=segments["patron"], channel="telegram"))
        campaign = session.get(Campaign, number)
        assert campaign is not None
        campaign.status = "running"
    with session_scope(crm) as session:
        pause_campaign(session=session, campaign_id=number)
        assert resume_campaign(session=session, campaign_id=number).status == "running"


def test_cancel_cancels_pending_deliveries_and_leaves_queued_ones(
    crm: Engine, segments: dict[str, int]
) -> None:
    number = save(crm, BASE)
    with session_scope(crm) as session:
        extra = [Patron() for _ in range(3)]
        session.add_all(extra)
        session.flush()
        ids = [segments["patron"], *(patron.id for patron in extra)]
        states = ["pending", "pending", "queued", "sent"]
        session.add_all(
            Delivery(campaign_id=number, patron_id=patron_id, channel="telegram", state=state)
            for patron_id, state in zip(ids, states, strict=True)
        )
    with session_scope(crm) as session:
        assert cancel_campaign(session=session, campaign_id=number) == 2
    with session_scope(crm) as session:
        found = sorted(session.scalars(select(Delivery.state).where(Delivery.campaign_id == number)))
        assert found == ["cancelled", "cancelled", "queued", "sent"]
        assert cancel_campaign(session=session, campaign_id=number) == 0  # it stays cancelled
    assert stored(crm, number).status == "cancelled"
    for action in (pause_campaign, resume_campaign):
        with pytest.raises(CampaignError, match="cancelled"), session_scope(crm) as session:
            action(session=session, campaign_id=number)


def test_schedules_in_words() -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Asia/Shanghai")
    assert (
        describe_schedule({"at": "2027-03-01T01:00:00+00:00"}, zone=zone)
        == "once at 2027-03-01 09:00 Asia/Shanghai"
    )
    assert describe_schedule({"cron": "0 9 * * MON", "timezone": "UTC"}) == "cron 0 9 * * MON (UTC)"
    assert describe_schedule({"after": {"event": "low_rating", "days": 3.0}}) == "3 days after low_rating"
    assert (
        describe_schedule({"after": {"event": "first_conversation", "days": 1}})
        == "1 day after first_conversation"
    )
    assert describe_schedule(None).startswith("none")


# --- the CLI group, run in-process ---


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="patronbot")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(load_settings(), args)
    return result


def test_cli_save_list_pause_resume_cancel(
    crm: Engine, crm_url: str, segments: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    path = write(tmp_path, BASE)
    assert run_cli("campaign", "save", str(path), "--format", "json", "--staff", "li.wei") == 0
    number = json.loads(capsys.readouterr().out)["id"]
    assert run_cli("campaign", "save", str(path)) == 0
    assert capsys.readouterr().out.strip() == f"campaign rdm-workshop-invite saved: id {number} (scheduled)"

    assert run_cli("campaign", "list", "--format", "json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["id"], row["name"], row["segment"], row["status"]) == (
        number,
        "rdm-workshop-invite",
        "pg-chemistry",
        "scheduled",
    )
    assert row["when"] == "once at 2027-03-01 09:00 Asia/Shanghai"
    assert run_cli("campaign", "list") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "name", "segment", "kind", "schedule", "status"]
    assert table[1].split()[:4] == [str(number), "rdm-workshop-invite", "pg-chemistry", "announcement"]

    assert run_cli("campaign", "pause", str(number)) == 0
    assert "paused" in capsys.readouterr().out
    assert run_cli("campaign", "resume", str(number)) == 0
    assert capsys.readouterr().out.strip().endswith("resumed: scheduled")
    with session_scope(crm) as session:
        session.add(Delivery(campaign_id=number, patron_id=segments["patron"], channel="telegram"))
    assert run_cli("campaign", "cancel", str(number)) == 0
    assert capsys.readouterr().out.startswith(f"campaign {number} cancelled: 1 pending delivery cancelled")
    with pytest.raises(CampaignError, match="by its id"):
        run_cli("campaign", "pause", "rdm-workshop-invite")


def test_cli_save_of_a_bad_file_stores_nothing(
    crm: Engine, crm_url: str, segments: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    path = write(tmp_path, edit(AT_LINE, '  cron: "0 9 * *"'))
    with pytest.raises(SpecError, match=r"campaign\.yml:12: schedule\.cron: not a valid cron expression"):
        run_cli("campaign", "save", str(path))
    with session_scope(crm) as session:
        assert list_campaigns(session=session) == []
