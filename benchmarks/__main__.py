"""Run the benchmarks, print a table and write the results: `python -m benchmarks [--quick] [--only NAME]`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.runtime.training import ONE_THREAD_PER_LIBRARY

# Retrieval is measured with the threads the action server runs it with (set before numpy loads):
# with two OpenMP threads, multilingual-e5 encodes faster on an idle machine but spikes to 100 ms.
for _name, _value in ONE_THREAD_PER_LIBRARY.items():
    os.environ.setdefault(_name, _value)

from benchmarks import (  # noqa: E402
    campaigns,
    console,
    history,
    ingest,
    privacy,
    retrieval,
    segments,
    telegram,
    turn,
)
from benchmarks.common import Result, Timer, code_version, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
# A full run rewrites the figures between the results markers of these pages.
RESULT_PAGES = (HERE / "README.md", HERE.parent / "docs" / "benchmarks.md")
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"

BENCHMARKS: dict[str, Callable[..., list[Result]]] = {
    "ingest": ingest.run,
    "privacy": privacy.run,
    "history": history.run,
    "turn": turn.run,
    "retrieval": retrieval.run,
    "telegram": telegram.run,
    "segments": segments.run,
    "campaigns": campaigns.run,
    "console": console.run,
}
# What each benchmark reports, for an entry when it fails before measuring anything.
REPORTS: dict[str, list[tuple[str, str, float, str]]] = {
    "ingest": [(ingest.NAME, ingest.UNIT, ingest.TARGET, ">=")],
    "privacy": privacy.NAMES,
    "history": history.NAMES,
    "turn": turn.NAMES,
    "retrieval": retrieval.NAMES,
    "telegram": telegram.NAMES,
    "segments": segments.NAMES,
    "campaigns": campaigns.NAMES,
    "console": console.NAMES,
}


def _format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f} {unit}"


def _format_target(entry: dict[str, Any]) -> str:
    return f"{entry['comparison']} {_format_value(entry['target'], entry['unit'])}"


def _status(entry: dict[str, Any]) -> str:
    if entry.get("skipped"):
        return f"skipped: {entry['skipped']}"
    if entry.get("error"):
        return f"error: {entry['error']}"
    return "yes" if entry["met"] else "NO"


def table(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The results as a plain-text table, one line per figure."""
    rows = [("benchmark", "database", "value", "target", "met")]
    rows += [
        (
            entry["name"],
            entry["database"],
            _format_value(entry["value"], entry["unit"]),
            _format_target(entry),
            _status(entry),
        )
        for entry in entries
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]


def markdown(document: dict[str, Any]) -> str:
    """The results as a Markdown table for the results pages."""
    described = document["machine"]
    code = document.get("code") or {}
    commit = (code.get("commit") or "unknown")[:7] + (
        " with bot/ modified" if code.get("bot_modified") else ""
    )
    lines = [
        f"Measured {document['run_at'][:16].replace('T', ' ')} UTC, commit {commit}, "
        f"on {described['cores']} cores "
        f"({described['cpu'] or described['platform']}), Python {described['python']}, "
        f"SQLite {described['sqlite']}, PostgreSQL {described['postgresql'] or 'not available'}.",
        "",
        "| benchmark | database | value | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {entry['name']} | {entry['database']} | {_format_value(entry['value'], entry['unit'])} "
        f"| {_format_target(entry)} | {_status(entry)} |"
        for entry in document["results"]
    ]
    return "\n".join(lines)


def update_pages(document: dict[str, Any]) -> None:
    """Put the figures of a full run between the results markers of each results page."""
    block = f"{RESULTS_START}\n{markdown(document)}\n{RESULTS_END}"
    for page in RESULT_PAGES:
        if not page.exists():
            continue
        content = page.read_text(encoding="utf-8")
        start, end = content.find(RESULTS_START), content.find(RESULTS_END)
        if start < 0 or end < start:
            continue
        page.write_text(content[:start] + block + content[end + len(RESULTS_END) :], encoding="utf-8")


def run(names: Sequence[str], *, quick: bool) -> tuple[list[dict[str, Any]], bool]:
    """Run the named benchmarks; a benchmark that fails is reported as an error, and the rest still run."""
    entries: list[dict[str, Any]] = []
    failed = False
    run_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for name in names:
        print(f"running {name}{' (quick)' if quick else ''} ...", flush=True)
        with Timer() as took:
            try:
                results = BENCHMARKS[name](quick=quick)
            except Exception as error:
                traceback.print_exc()
                failed = True
                results = [
                    Result(
                        name=figure, database="-", value=None, unit=unit, target=target, comparison=comparison
                    )
                    for figure, unit, target, comparison in REPORTS[name]
                ]
                for result in results:
                    result.error = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        print(f"  {name} took {took.elapsed:.1f} s", flush=True)
        entries += [result.as_dict() | {"benchmark": name, "run_at": run_at} for result in results]
    return entries, failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run of a minute or so")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help="run only this benchmark (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    path = HERE / ("results-quick.json" if args.quick else "results.json")

    code = code_version()  # before the run: the code the figures were measured on
    entries, failed = run(names, quick=args.quick)
    if args.only and path.exists():
        # Keep the figures of the benchmarks that did not run this time.
        previous = json.loads(path.read_text(encoding="utf-8"))
        kept = [entry for entry in previous.get("results", []) if entry.get("benchmark") not in names]
        entries = kept + entries
        entries.sort(key=lambda entry: list(BENCHMARKS).index(entry.get("benchmark", names[0])))
    document = {
        "machine": machine(),
        "code": code,
        "run_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "results": entries,
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not args.quick:
        update_pages(document)
    print()
    print("\n".join(table(entries)))
    print(f"\nwritten to {path.relative_to(HERE.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
