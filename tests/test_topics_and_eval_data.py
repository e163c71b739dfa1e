"""nlu/topics.yml maps every intent to a shared topic id; the shared evaluation data is not training data."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from bot.settings import PROJECT_ROOT

# The shared evaluation data: PATRONBOT_SHARED_EVAL names its folder (.ci/run sets it when the data is on
# the machine but not beside the clone), else ../shared/eval beside this checkout.
SHARED_EVAL = Path(os.environ.get("PATRONBOT_SHARED_EVAL") or PROJECT_ROOT.parent / "shared" / "eval")
TOPICS = yaml.safe_load((PROJECT_ROOT / "nlu" / "topics.yml").read_text(encoding="utf-8"))["topics"]
DOMAIN = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text(encoding="utf-8"))


def test_every_domain_intent_has_a_topic() -> None:
    assert set(DOMAIN["intents"]) <= set(TOPICS)


def test_topics_are_the_shared_topic_ids() -> None:
    if not (SHARED_EVAL / "topics.md").is_file():
        pytest.skip(f"no shared evaluation data at {SHARED_EVAL}")
    table = (SHARED_EVAL / "topics.md").read_text(encoding="utf-8")
    known = set(re.findall(r"^\| ([a-z_]+) \|", table, flags=re.MULTILINE)) - {"topic"}
    assert set(TOPICS.values()) <= known


def _normalise(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def _project_texts() -> dict[str, set[str]]:
    """Every example, question, alternative, answer and query the project trains, answers or tunes with."""
    texts: dict[str, set[str]] = {}
    folders = ["nlu", "data", "knowledge", "tests/data", "tests/conversations"]
    for folder in folders:
        for path in (PROJECT_ROOT / folder).rglob("*"):
            if path.suffix not in {".yml", ".yaml", ".jsonl"}:
                continue
            content = path.read_text(encoding="utf-8")
            lines = [
                line
                for line in re.findall(r"^\s*- (.+)$", content, flags=re.MULTILINE)
                if not line.startswith(("intent:", "rule:", "story:", "action:", "or:"))
            ]
            lines += re.findall(r"(?:question|answer|text): (.+)$", content, flags=re.MULTILINE)
            if path.suffix == ".jsonl":
                lines += [json.loads(line).get("text", "") for line in content.splitlines() if line.strip()]
            texts[str(path.relative_to(PROJECT_ROOT))] = {_normalise(line) for line in lines if line.strip()}
    return texts


def _shared_utterances() -> list[str]:
    texts = []
    for path in SHARED_EVAL.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"].strip().lower())
    return texts


def test_no_shared_evaluation_utterance_is_in_training_data_or_the_knowledge_base() -> None:
    if not SHARED_EVAL.is_dir():
        pytest.skip(f"no shared evaluation data at {SHARED_EVAL}")
    shared = _shared_utterances()
    evaluation = {text for text in shared if len(text) >= 12}  # a shared word like "renew" is no copy
    assert len(evaluation) > 500
    found = []
    paths = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
    for folder in (
        "nlu",
        "data",
        "knowledge",
        "tests/data",
        "tests/conversations",
        "tests/dialogues",
        "tests/followups",
    ):
        paths += [
            path for path in (PROJECT_ROOT / folder).rglob("*") if path.suffix in {".yml", ".yaml", ".jsonl"}
        ]
    for path in paths:
        content = path.read_text(encoding="utf-8").lower()
        found += [f"{path.relative_to(PROJECT_ROOT)}: {text}" for text in evaluation if text in content]
    # A short utterance of two words or more ("ILL request", "3D printing") must not be a whole example,
    # question or alternative either.
    short = {_normalise(text): text for text in shared if len(text) < 12 and len(text.split()) >= 2}
    for name, texts in _project_texts().items():
        found += [f"{name}: {short[text]}" for text in texts & set(short)]
    assert found == []


def test_held_out_examples_are_not_training_examples() -> None:
    texts = _project_texts()
    training = set().union(*(v for k, v in texts.items() if k.startswith("nlu")))
    for name in ("tests/data/nlu_heldout_en.yml", "tests/data/nlu_heldout_zh.yml"):
        assert texts[name], name
        assert texts[name] & training == set(), name


def test_retrieval_test_queries_are_not_in_the_knowledge_base() -> None:
    texts = _project_texts()
    for split in ("knowledge/eval/queries_dev.jsonl", "knowledge/eval/queries_test.jsonl"):
        assert texts[split] & texts["knowledge/faq.yml"] == set(), split
    assert texts["knowledge/eval/queries_dev.jsonl"] & texts["knowledge/eval/queries_test.jsonl"] == set()


def test_knowledge_intents_are_those_the_rules_answer_from_the_knowledge_base() -> None:
    from nlu.evaluation import KNOWLEDGE_INTENTS

    rules = yaml.safe_load((PROJECT_ROOT / "data" / "rules.yml").read_text(encoding="utf-8"))["rules"]
    name = "library service questions are answered from the knowledge base"
    rule = next(r for r in rules if r["rule"] == name)
    assert rule["steps"][-1] == {"action": "action_answer_faq"}
    assert {step["intent"] for step in rule["steps"][0]["or"]} == KNOWLEDGE_INTENTS


def test_no_dialogue_is_answered_by_a_training_example() -> None:
    """tests/dialogues/ and tests/followups/ measure the bot: a patron's turn there (longer than a one-
    or two-word opener such as "subscribe" or "你好") must not be an NLU training example word for word."""
    import yaml as yaml_module

    training = set().union(*(v for k, v in _project_texts().items() if k.startswith("nlu")))
    turns = []
    for path in sorted((PROJECT_ROOT / "tests" / "dialogues").glob("*.yml")):
        for dialogue in (yaml_module.safe_load(path.read_text(encoding="utf-8")) or {}).get(
            "dialogues"
        ) or []:
            turns += [str(turn["say"]) for turn in dialogue["turns"]]
    # The multi-turn cases (tests/followups/, dev/ included) measure the bot the same way.
    for path in sorted((PROJECT_ROOT / "tests" / "followups").rglob("*.yml")):
        for case in (yaml_module.safe_load(path.read_text(encoding="utf-8")) or {}).get("cases") or []:
            turns += [str(text) for text in case["turns"]]
    tested = [
        text
        for text in turns
        if (len(text) >= 8 and len(text.split()) >= 2) or (len(text) >= 6 and not text.isascii())
    ]
    assert sorted({text for text in tested if _normalise(text) in training}) == []
