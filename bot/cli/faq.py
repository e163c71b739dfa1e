"""`patronbot faq ...`: evaluate and tune knowledge-base retrieval from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bot.knowledge.entries import load_entries
from bot.knowledge.evaluation import evaluate, load_queries, tune, write_tuning
from bot.knowledge.retrieval import Retriever, load_tuning, make_encoders
from bot.settings import Settings


def _model(settings: Settings) -> str:
    tuned_model, _ = load_tuning(settings.path(settings.retrieval_tuning))
    return settings.embedding_model or tuned_model


def cmd_faq_eval(settings: Settings, args: argparse.Namespace) -> int:
    _, tuning = load_tuning(settings.path(settings.retrieval_tuning))
    kb = Path(args.kb) if args.kb else settings.path(settings.knowledge_base)
    encoders = make_encoders(sentence_model=_model(settings), multilingual=settings.multilingual_model)
    retriever = Retriever(load_entries(kb), encoders=encoders, tuning=tuning)
    report = evaluate(retriever, load_queries(Path(args.queries)))
    report["knowledge_base"] = str(kb)
    report["queries"] = str(args.queries)
    if args.format == "json":
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(format_report(report))
    return 0


def format_report(report: dict[str, Any]) -> str:
    lines = [f"knowledge base {report['knowledge_base']}, queries {report['queries']}"]
    lines.append(f"{'':10} {'queries':>8} {'top-1':>7} {'top-3':>7} {'OOS AUROC':>10} {'answer prec.':>13}")
    for name, row in [("overall", report["overall"]), *report["by_language"].items()]:
        lines.append(
            f"{name:10} {row['queries']:>8} {_fmt(row['top1']):>7} {_fmt(row['top3']):>7} "
            f"{_fmt(row['oos_auroc']):>10} {_fmt(row['answer_precision']):>13}"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cmd_faq_tune(settings: Settings, args: argparse.Namespace) -> int:
    kb = Path(args.kb) if args.kb else settings.path(settings.knowledge_base)
    model = _model(settings)
    encoders = make_encoders(sentence_model=model, multilingual=settings.multilingual_model)
    tuning = tune(load_entries(kb), load_queries(Path(args.queries)), encoders=encoders)
    target = settings.path(settings.retrieval_tuning)
    write_tuning(target, model=model, tuning=tuning, source=str(args.queries))
    for lang, values in sorted(tuning.items()):
        print(f"{lang}: weights {values.weights}, answer >= {values.answer}, suggest >= {values.suggest}")
    print(f"written to {target}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    faq = commands.add_parser("faq", help="the knowledge base: evaluate and tune retrieval")
    faq_commands = faq.add_subparsers(dest="faq_command", metavar="FAQ_COMMAND", required=True)
    evaluate_parser = faq_commands.add_parser(
        "eval", help="top-1, top-3 and out-of-scope AUROC on labelled queries"
    )
    evaluate_parser.add_argument(
        "--kb", help="knowledge base (YAML or JSONL); default: PATRONBOT_KNOWLEDGE_BASE"
    )
    evaluate_parser.add_argument("--queries", required=True, help='JSONL: {"text", "label", "lang"} per line')
    evaluate_parser.add_argument("--format", choices=["text", "json"], default="text")
    evaluate_parser.set_defaults(handler=cmd_faq_eval)
    tune_parser = faq_commands.add_parser("tune", help="choose weights and thresholds on the dev queries")
    tune_parser.add_argument("--kb", help="knowledge base; default: PATRONBOT_KNOWLEDGE_BASE")
    tune_parser.add_argument(
        "--queries", default="knowledge/eval/queries_dev.jsonl", help="labelled dev queries"
    )
    tune_parser.set_defaults(handler=cmd_faq_tune)
