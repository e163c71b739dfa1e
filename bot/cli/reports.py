"""`patronbot reports ...` (or `suggestions`): patrons' complaints and suggestions, by their number."""

from __future__ import annotations

import argparse

from bot.cli.escalations import library_zone, local_time, print_table, staff_crm
from bot.crm.models.feedback import SUGGESTION_STATUSES
from bot.engagement.feedback import REPORT_KINDS
from bot.engagement.reports import ReportError, answer_report, list_reports, read_report
from bot.settings import Settings


def _number(value: str) -> int:
    text = value.strip().removeprefix("report:").strip()
    if not text.isdigit():
        raise ReportError(
            f"a report is named by its number (9), not {value!r}: `patronbot reports` lists them"
        )
    return int(text)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    zone = library_zone(settings)
    with staff_crm(settings) as session:
        rows = [
            (
                str(report.id),
                report.kind or "",
                report.status or "",
                report.topic or "-",
                local_time(report.created_at, zone),
                f"{escalation.id} ({escalation.status})" if escalation is not None else "-",
            )
            for report, escalation in list_reports(session=session, kind=args.kind, status=args.status)
        ]
    if not rows:
        chosen = [f"kind {args.kind}"] * bool(args.kind) + [f"status {args.status}"] * bool(args.status)
        print("no reports" + (f" with {' and '.join(chosen)}" if chosen else ""))
        return 0
    print_table(("report", "kind", "status", "topic", f"created ({zone.key})", "escalation"), rows)
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    zone = library_zone(settings)
    with staff_crm(settings) as session:
        report, escalation = read_report(session=session, report_id=_number(args.number), staff=args.staff)
        lines = [
            f"report {report.id}: {report.kind}, {report.status}, topic {report.topic or '-'},"
            f" created {local_time(report.created_at, zone)} ({zone.key})",
            f"escalation {escalation.id} ({escalation.status})"
            if escalation is not None
            else "no escalation",
        ]
        if report.text is not None:
            lines.append(f"patron: {report.text}")
        elif report.patron_id is None:
            lines.append("(the text was erased with the patron's data, at their request)")
        if report.library_answer:
            lines.append(f"library's answer: {report.library_answer}")
    print("\n".join(lines))
    return 0


def cmd_answer(settings: Settings, args: argparse.Namespace) -> int:
    with staff_crm(settings) as session:
        answered = answer_report(
            session=session,
            report_id=_number(args.number),
            staff=args.staff,
            text=args.text,
            status=args.status,
        )
    print(
        f"report {answered.report_id} answered ({answered.status}); the answer goes to the patron on"
        f" {answered.channel} (outbox message {answered.outbox_id})"
    )
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    reports = commands.add_parser(
        "reports",
        aliases=["suggestions"],
        help="patrons' complaints, suggestions and purchase requests, by the number the patron was told",
    )
    reports.add_argument("--kind", choices=REPORT_KINDS, help="only reports of this kind")
    reports.add_argument("--status", choices=SUGGESTION_STATUSES, help="only reports with this status")
    reports.set_defaults(handler=cmd_list)
    actions = reports.add_subparsers(dest="report_command", metavar="REPORT_COMMAND")

    show = actions.add_parser("show", help="the report as the patron wrote it (audited)")
    show.add_argument("number", help="the report's number, as the patron was told it (9)")
    show.add_argument(
        "--staff", required=True, help="your staff username (created as a librarian on first use; audited)"
    )
    show.set_defaults(handler=cmd_show)

    answer = actions.add_parser(
        "answer", help="record the library's answer to a report and send it to the patron on their channel"
    )
    answer.add_argument("number", help="the report's number, as the patron was told it (9)")
    answer.add_argument("text", help="the answer, as the patron will read it")
    answer.add_argument(
        "--status",
        choices=SUGGESTION_STATUSES,
        help="the report's status now (default: new becomes under_review)",
    )
    answer.add_argument(
        "--staff", required=True, help="your staff username (created as a librarian on first use; audited)"
    )
    answer.set_defaults(handler=cmd_answer)
