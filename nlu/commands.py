"""`patronbot eval`: intent, topic, out-of-scope and retrieval figures for the trained bot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from bot.settings import PROJECT_ROOT, Settings

HELDOUT = {
    "en": PROJECT_ROOT / "tests/data/nlu_heldout_en.yml",
    "zh": PROJECT_ROOT / "tests/data/nlu_heldout_zh.yml",
}
PUBLIC = PROJECT_ROOT.parent / "shared" / "eval"
RETRIEVAL_TEST = PROJECT_ROOT / "knowledge/eval/queries_test.jsonl"


def _model(settings: Settings, args: argparse.Namespace) -> Path:
    return Path(args.model) if args.model else settings.path(settings.model_path)


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from bot.knowledge.evaluation import evaluate, load_queries
    from bot.knowledge.service import KnowledgeService
    from nlu.evaluation import evaluate_intents, evaluate_topics, load_heldout, load_topic_file

    model = _model(settings, args)
    if not model.is_file():
        print(f"patronbot: no trained model at {model}; run `patronbot train` first")
        return 2
    report: dict[str, Any] = {"model": str(model)}
    if args.dialogues is not None or args.followups is not None:
        import tempfile

        from nlu.dialogues import evaluate_dialogues, load_dialogues
        from nlu.followups import load_cases, summarise_last_turns

        if args.followups is not None:
            name, dialogues = "followups", load_cases([Path(path) for path in args.followups])
        else:
            name, dialogues = "dialogues", load_dialogues([Path(path) for path in args.dialogues])
        with tempfile.TemporaryDirectory(prefix="patronbot-dialogues-") as workdir:
            report[name] = evaluate_dialogues(
                model=model,
                dialogues=dialogues,
                workdir=Path(workdir),
                vector_dir=settings.vector_path,
                summary=summarise_last_turns if name == "followups" else None,
            )
        print(json.dumps(report, ensure_ascii=False, indent=2) if args.format == "json" else _text(report))
        return 0
    retriever = KnowledgeService.from_settings(settings).retriever()
    if args.topics:
        report["topics"] = evaluate_topics(model, load_topic_file(Path(args.topics)), retriever=retriever)
    else:
        intents = set(yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text(encoding="utf-8"))["intents"])
        rows = [row for lang, path in HELDOUT.items() for row in load_heldout(path, lang)]
        known = [row for row in rows if row.label in intents]
        plot = settings.data_path / "eval" / "confusion_matrix.png"
        report["heldout_intents"] = evaluate_intents(model, known, plot=plot)
        report["heldout_intents"]["skipped_examples_of_intents_not_in_the_model"] = len(rows) - len(known)
        public = [PUBLIC / "public_topics_en.jsonl", PUBLIC / "public_scope_en.jsonl"]
        if all(path.is_file() for path in public):
            topics = load_topic_file(public[0])
            scope = load_topic_file(public[1])
            report["public_topics"] = evaluate_topics(model, topics, retriever=retriever)
            scope_report = evaluate_topics(model, scope, retriever=retriever)
            report["public_scope"] = scope_report["out_of_scope"]
            report["public_scope_turn"] = scope_report["turn_out_of_scope"]
        report["retrieval"] = evaluate(retriever, load_queries(RETRIEVAL_TEST))
    if args.format == "json":
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(_text(report))
    return 0


def _text(report: dict[str, Any]) -> str:
    lines = [f"model {report['model']}"]
    if "heldout_intents" in report:
        held = report["heldout_intents"]
        lines.append("held-out intents (own split):")
        for lang, row in held["by_language"].items():
            lines.append(
                f"  {lang}: n={row['n']} accuracy {row['accuracy']:.3f} macro-F1 {row['macro_f1']:.3f}"
            )
        oos = held["out_of_scope"]
        lines.append(
            f"  out of scope: precision {oos['precision']} recall {oos['recall']} AUROC {oos['auroc']}"
        )
        lines.append(f"  confusion matrix: {held.get('confusion_matrix_png')}")
    for name in ("public_topics", "topics"):
        if name in report:
            row = report[name]
            lines.append(
                f"{name}: n={row['overall']['n']} topic accuracy {row['overall']['accuracy']:.3f}, "
                f"in-scope accuracy {row.get('in_scope_accuracy')}"
            )
            for topic, scores in sorted(row["overall"]["per_label"].items()):
                lines.append(f"  {topic:20} n={scores['n']:4} F1 {scores['f1']:.3f}")
            mistaken = ", ".join(f"{pair} ({n})" for pair, n in list(row["confusions"].items())[:10])
            lines.append(f"  most frequent confusions: {mistaken or 'none'}")
            lines.append(f"  out of scope (NLU): {row['out_of_scope']}")
            lines.append(f"  out of scope (whole turn, with retrieval): {row.get('turn_out_of_scope')}")
    if "public_scope" in report:
        lines.append(f"public out-of-scope detection (NLU): {report['public_scope']}")
        lines.append(f"public out-of-scope detection (whole turn): {report.get('public_scope_turn')}")
    lines += _conversation_text(report)
    if "retrieval" in report:
        for lang, row in report["retrieval"]["by_language"].items():
            lines.append(
                f"retrieval {lang}: top-1 {row['top1']} top-3 {row['top3']} OOS AUROC {row['oos_auroc']}"
            )
    return "\n".join(lines)


def _conversation_text(report: dict[str, Any]) -> list[str]:
    """The lines for whole dialogues and multi-turn cases."""
    lines: list[str] = []
    if "dialogues" in report:
        summary = report["dialogues"]
        for name, row in [
            ("all", summary["overall"]),
            *summary["by_language"].items(),
            *summary["by_kind"].items(),
        ]:
            lines.append(f"dialogues {name}: {row['right']} of {row['n']} right ({row['share']})")
        for wrong in summary["wrong"]:
            lines.append(f"  wrong: {wrong['dialogue']} [{wrong['language']}]")
            lines += [f"    - {problem}" for problem in wrong["problems"]]
    if "followups" in report:
        summary = report["followups"]
        for name, row in [
            ("all", summary["overall"]),
            *summary["by_language"].items(),
            *summary["by_kind"].items(),
        ]:
            lines.append(
                f"follow-ups {name}: last turn right {row['right']} of {row['n']} ({row['accuracy']})"
            )
        for wrong in summary["wrong"]:
            lines.append(f"  wrong: {wrong['case']} [{wrong['language']} {wrong['kind']}] {wrong['turns']}")
            lines += [f"    - {problem}" for problem in wrong["problems"]]
    return lines


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    evaluate = commands.add_parser(
        "eval", help="measure intents, topics, out-of-scope detection and retrieval"
    )
    evaluate.add_argument("--topics", help="evaluate topic accuracy on this topic-labelled JSONL file only")
    evaluate.add_argument("--model", help="the model to measure; default: PATRONBOT_MODEL_PATH")
    evaluate.add_argument(
        "--dialogues",
        nargs="*",
        metavar="FILE",
        help="talk whole dialogues with a bot started on the model and check its replies and CRM records "
        "(default: every file in tests/dialogues/)",
    )
    evaluate.add_argument(
        "--followups",
        nargs="*",
        metavar="FILE",
        help="talk multi-turn cases (follow-up questions, details added, new topics) and score each on "
        "its last turn (default: tests/followups/en.yml and zh.yml)",
    )
    evaluate.add_argument("--format", choices=["text", "json"], default="text")
    evaluate.set_defaults(handler=cmd_eval)
