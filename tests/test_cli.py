"""The `patronbot` command: version, database upgrade, staff escalations, and clear one-line refusals."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import AuditLog, ChannelIdentity, Escalation, Interaction, OutboxMessage, Patron
from bot.engagement.escalations import CLOSING_MESSAGE, open_escalation
from bot.engagement.feedback import record_report
from bot.knowledge.facts import LibraryFacts

PATRONBOT = str(Path(sys.executable).with_name("patronbot"))


def patronbot(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATRONBOT, *args],
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"patronbot: {expected}"] or (
        len(lines) == 1 and lines[0].startswith(f"patronbot: {expected}")
    )


def test_version_names_patronbot_and_rasa() -> None:
    result = patronbot("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("patronbot 0.1.0 (Rasa 3.6.21, rasa-sdk 3.6.2)")


def test_run_refuses_a_bad_setting_with_one_line() -> None:
    result = patronbot("run", env={"PATRONBOT_RASA_PORT": "abc"})
    assert_one_line_error(result, "PATRONBOT_RASA_PORT: value is not a valid integer")


def test_run_refuses_a_taken_port_and_names_the_setting() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = patronbot("run", env={"PATRONBOT_RASA_PORT": str(port)})
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is already in use (PATRONBOT_RASA_PORT)")


def test_run_refuses_a_broken_facts_file(tmp_path: Path) -> None:
    facts = tmp_path / "library.yml"
    facts.write_text("name: {zh: 图书馆}\n", encoding="utf-8")
    result = patronbot("run", env={"PATRONBOT_LIBRARY_FACTS": str(facts)})
    assert_one_line_error(result, f"{facts}: 'timezone' must be a non-empty text")


def _free_ports() -> dict[str, str]:
    ports = {}
    for setting in ("PATRONBOT_RASA_PORT", "PATRONBOT_ACTION_PORT", "PATRONBOT_CONSOLE_PORT"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports[setting] = str(probe.getsockname()[1])
    return ports


def test_run_makes_the_installation_secret_before_starting_the_processes(tmp_path: Path) -> None:
    """The Rasa server, the action server and the ingester then all read the same key file."""
    env = _free_ports() | {"PATRONBOT_MODEL_PATH": str(tmp_path / "no-model.tar.gz")}
    result = patronbot("run", "--no-train", env=env)
    assert result.returncode == 2  # no model: stopped before starting any process
    key = tmp_path / "var" / "secret.key"
    assert key.is_file()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text(encoding="utf-8").strip() not in result.stdout + result.stderr


def test_run_refuses_an_empty_key_file_with_one_line(tmp_path: Path) -> None:
    key = tmp_path / "var" / "secret.key"
    key.parent.mkdir(parents=True)
    key.touch(mode=0o600)
    result = patronbot("run", "--no-train", env=_free_ports())
    assert_one_line_error(result, f"{key}: ")
    assert key.read_bytes() == b""


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    result = patronbot("db", "upgrade", env={"PATRONBOT_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    from bot.crm.migrate import head_revision

    assert f"CRM database is at revision {head_revision()}" in result.stdout


def test_unreachable_database_is_one_line_without_the_password() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"postgresql://librarian:hunter2@127.0.0.1:{port}/crm"
    result = patronbot("db", "upgrade", env={"PATRONBOT_DATABASE_URL": url})
    assert_one_line_error(result, f"database postgresql://librarian:***@127.0.0.1:{port}/crm:")
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--help"],
        ["db", "upgrade", "--help"],
        ["chat", "--help"],
        ["escalations", "reply", "--help"],
        ["reports", "show", "--help"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = patronbot(*command)
    assert result.returncode == 0
    assert "usage: patronbot" in result.stdout


def test_staff_list_show_reply_and_resolve_an_escalation(crm: Engine, crm_url: str) -> None:
    from bot.knowledge.facts import load_facts
    from bot.settings import PROJECT_ROOT

    with session_scope(crm) as session:
        patron = Patron(language="en")
        session.add(patron)
        session.flush()
        session.add(ChannelIdentity(patron_id=patron.id, channel="rest", external_id="alice"))
        session.add(
            Interaction(
                patron_id=patron.id,
                channel="rest",
                direction="in",
                text="I want a librarian",
                event_key="k1",
                occurred_at=dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC),
            )
        )
        escalation = open_escalation(
            session=session,
            patron_id=patron.id,
            channel="rest",
            rasa_sender_id="rest:alice",
            reason="complaint",
            priority="high",
            facts=load_facts(PROJECT_ROOT / "knowledge" / "library.yml"),
        )
        number = str(escalation.id)
    env = {"PATRONBOT_DATABASE_URL": crm_url}
    listed = patronbot("escalations", "--status", "open", env=env)
    shown = patronbot("escalations", "show", number, "--staff", "li.wei", env=env)
    replied = patronbot("escalations", "reply", number, "--staff", "li.wei", "Your card is renewed.", env=env)
    resolved = patronbot("escalations", "resolve", number, "--staff", "li.wei", "--note", "renewed", env=env)
    after = patronbot("escalations", "--status", "open", env=env)
    assert listed.returncode == 0, listed.stderr
    [header, row] = listed.stdout.splitlines()
    assert header.split()[:4] == ["id", "reason", "priority", "status"]
    assert row.split()[:4] == [number, "complaint", "high", "open"]
    assert "librarian" not in listed.stdout  # no message text in the list
    assert shown.returncode == 0, shown.stderr
    assert "patron: I want a librarian" in shown.stdout
    assert replied.returncode == 0, replied.stderr
    assert resolved.returncode == 0, resolved.stderr
    assert f"resolved escalation {number}" in resolved.stdout
    assert after.stdout.strip() == "no escalations with status open"
    with Session(crm, future=True) as session:
        done = session.execute(select(Escalation)).scalar_one()
        assert (done.status, done.resolution_note) == ("resolved", "renewed")
        texts = list(session.execute(select(OutboxMessage.text).order_by(OutboxMessage.id)).scalars())
        assert texts == ["Your card is renewed.", CLOSING_MESSAGE["en"]]
        reads = session.execute(select(AuditLog).where(AuditLog.action == "read")).scalars().all()
        assert [(a.actor, a.patron_id) for a in reads] == [("staff:li.wei", done.patron_id)]


def test_a_patron_export_file_is_owner_only_and_a_declined_erasure_is_audited(
    crm: Engine, crm_url: str, tmp_path: Path
) -> None:
    with session_scope(crm) as session:
        patron = Patron(language="en")
        session.add(patron)
        session.flush()
        session.add(ChannelIdentity(patron_id=patron.id, channel="rest", external_id="dora"))
        number = str(patron.id)
    env = {"PATRONBOT_DATABASE_URL": crm_url}
    output = tmp_path / "dora.json"
    exported = patronbot("patron", "export", number, "--output", str(output), env=env)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(output.read_text(encoding="utf-8"))["patron"]["id"] == patron.id
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    # Asked at a terminal and declined: nothing erased, but the patron's ids were shown, so audited.
    declined = subprocess.run(
        ["script", "-qec", f"{PATRONBOT} patron erase {number}", "/dev/null"],
        env=os.environ | env,
        input="no\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "rest:dora" in declined.stdout
    with Session(crm, future=True) as session:
        actions = [
            (entry.action, entry.reason)
            for entry in session.execute(
                select(AuditLog).where(AuditLog.patron_id == patron.id).order_by(AuditLog.id)
            ).scalars()
        ]
        assert session.get(Patron, patron.id) is not None
    assert [action for action, _ in actions] == ["export", "read"]
    assert actions[1][1].startswith("confirming an erasure")


def _patron(session: Session, name: str) -> int:
    patron = Patron(language="en")
    session.add(patron)
    session.flush()
    session.add(ChannelIdentity(patron_id=patron.id, channel="rest", external_id=name))
    session.add(
        Interaction(
            patron_id=patron.id,
            channel="rest",
            direction="in",
            text=f"{name} writes",
            event_key=f"k-{name}",
            occurred_at=dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC),
        )
    )
    return patron.id


def _complaint(session: Session, patron: int, name: str, facts: LibraryFacts, text: str) -> tuple[int, int]:
    """A complaint as the bot takes it (actions/feedback.py): the report, then its escalation."""
    sender = f"rest:{name}"
    number = record_report(
        session=session, patron_id=patron, kind="complaint", text=text, topic=None, rasa_sender_id=sender
    ).id
    escalation = open_escalation(
        session=session,
        patron_id=patron,
        channel="rest",
        rasa_sender_id=sender,
        reason="complaint",
        priority="high",
        facts=facts,
    )
    return number, escalation.id


def test_the_number_the_patron_was_told_finds_the_escalation_and_the_report(
    crm: Engine, crm_url: str, facts: LibraryFacts
) -> None:
    """Alice is told "complaint no. 4": staff find her escalation (2) by it; escalation 4 is Bob's."""
    with session_scope(crm) as session:
        bob, alice = _patron(session, "bob"), _patron(session, "alice")
        for idea in ("more manga", "longer hours"):
            record_report(session=session, patron_id=bob, kind="service", text=idea, topic=None)
        _, bobs_complaint = _complaint(session, bob, "bob", facts, "the printer ate my thesis")
        number, escalation = _complaint(session, alice, "alice", facts, "the renewal page never loads")
        for sender in ("rest:bob-2", "rest:bob-3"):
            open_escalation(
                session=session,
                patron_id=bob,
                channel="rest",
                rasa_sender_id=sender,
                reason="fallback",
                facts=facts,
            )
    assert (number, escalation, bobs_complaint) == (4, 2, 1)
    env = {"PATRONBOT_DATABASE_URL": crm_url}
    listed = patronbot("escalations", env=env)
    shown = patronbot("escalations", "show", f"report:{number}", "--staff", "li.wei", env=env)
    replied = patronbot(
        "escalations", "reply", f"report:{number}", "--staff", "li.wei", "We are on it.", env=env
    )
    reports = patronbot("reports", env=env)
    report = patronbot("reports", "show", str(number), "--staff", "li.wei", env=env)
    resolved = patronbot("escalations", "resolve", f"report:{number}", "--staff", "li.wei", env=env)
    plain = patronbot("escalations", "show", str(number), "--staff", "li.wei", env=env)
    for result in (listed, shown, replied, reports, report, resolved, plain):
        assert result.returncode == 0, result.stderr
    header, *rows = [line.split() for line in listed.stdout.splitlines()]
    assert header[-1] == "report"
    assert {row[0]: row[-1] for row in rows} == {"1": "3", "2": "4", "3": "-", "4": "-"}
    assert shown.stdout.splitlines()[0] == "escalation 2: complaint, high priority, open, report 4"
    assert "patron: alice writes" in shown.stdout
    assert "bob writes" not in shown.stdout
    assert "reply recorded for escalation 2's patron" in replied.stdout
    header, *rows = [line.split() for line in reports.stdout.splitlines()]
    assert header[:3] == ["report", "kind", "status"]
    # report, kind, status, topic, created (date and time), escalation
    assert [(row[0], row[1], " ".join(row[6:])) for row in rows] == [
        ("4", "complaint", "2 (assigned)"),
        ("3", "complaint", "1 (open)"),
        ("2", "service", "-"),
        ("1", "service", "-"),
    ]
    # No free text in the list.
    assert "renewal" not in reports.stdout
    assert "manga" not in reports.stdout
    assert report.stdout.splitlines()[1:] == [
        "escalation 2 (assigned)",
        "patron: the renewal page never loads",
    ]
    assert "resolved escalation 2" in resolved.stdout
    # The plain number is still the escalation's id, as before.
    assert plain.stdout.splitlines()[0] == "escalation 4: fallback, normal priority, open"
    with Session(crm, future=True) as session:
        message = session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars().first()
        assert message is not None
        assert (message.recipient, message.text) == ("rest:alice", "We are on it.")
        reads = session.execute(
            select(AuditLog).where(AuditLog.action == "read").order_by(AuditLog.id)
        ).scalars()
        assert [(a.reason, a.patron_id) for a in reads] == [
            ("answering escalation 2", alice),
            ("reading report 4", alice),
            ("answering escalation 4", bob),
        ]
    assert_one_line_error(
        patronbot("escalations", "reply", "report:1", "--staff", "li.wei", "hi", env=env),
        "report 1 (service) has no escalation",
    )
    assert_one_line_error(
        patronbot("escalations", "show", "report:99", "--staff", "li.wei", env=env),
        "no report 99: `patronbot reports` lists them",
    )
    assert_one_line_error(
        patronbot("escalations", "show", "#4", "--staff", "li.wei", env=env),
        "name an escalation by its id (16) or by the patron's report number (report:9), not '#4'",
    )


def test_a_reply_to_an_escalation_closed_by_an_erasure_is_refused_in_one_line(
    crm: Engine, crm_url: str, facts: LibraryFacts
) -> None:
    with session_scope(crm) as session:
        number, escalation = _complaint(session, _patron(session, "alice"), "alice", facts, "too noisy")
    env = {"PATRONBOT_DATABASE_URL": crm_url}
    erased = patronbot("patron", "erase", "rest:alice", "--yes", env=env)
    assert erased.returncode == 0, erased.stderr
    assert f"closed open escalations {escalation}: no one is left to answer" in erased.stdout
    assert_one_line_error(
        patronbot("escalations", "reply", f"report:{number}", "--staff", "li.wei", "Sorry!", env=env),
        f"escalation {escalation} cannot take a reply: the patron's data was erased at their request,"
        " so there is no one to send it to",
    )
    shown = patronbot("escalations", "show", str(escalation), "--staff", "li.wei", env=env)
    assert shown.stdout.splitlines() == [
        f"escalation {escalation}: complaint, high priority, cancelled, report {number},"
        " note: closed: the patron's data was erased at their request",
        "no messages to show",
    ]
    with Session(crm, future=True) as session:
        assert session.execute(select(OutboxMessage)).first() is None
