"""The domain's responses: a variation for each language, and replies Rasa cannot mix up."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from rasa.core.nlg.response import TemplatedNaturalLanguageGenerator

from bot.settings import PROJECT_ROOT

DOMAIN: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text(encoding="utf-8"))
RESPONSES: dict[str, list[dict[str, Any]]] = DOMAIN["responses"]


def conditions(variation: dict[str, Any]) -> frozenset[tuple[str, str]]:
    return frozenset((c["name"], str(c["value"])) for c in variation.get("condition") or [])


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_no_variation_is_chosen_where_a_more_specific_one_is_meant(name: str) -> None:
    """Rasa picks at random among all variations whose conditions hold: one conditioned on the
    language alone would be said half the time in place of one for the language and a slot."""
    sets = [conditions(variation) for variation in RESPONSES[name]]
    overlapping = [(sorted(a), sorted(b)) for a in sets for b in sets if a and a < b]
    assert overlapping == []


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_every_response_speaks_both_languages(name: str) -> None:
    languages = {
        value for variation in RESPONSES[name] for key, value in conditions(variation) if key == "language"
    }
    assert languages == {"zh", "en"}


@pytest.mark.parametrize(
    ("kind", "language", "opening"),
    [
        ("suggestion", "en", "Thank you for your suggestion!"),
        ("complaint", "en", "Your complaint is recorded"),
        ("suggestion", "zh", "谢谢您的建议"),
        ("complaint", "zh", "已记录您的投诉"),
    ],
)
def test_a_suggestion_is_thanked_as_a_suggestion_every_time(kind: str, language: str, opening: str) -> None:
    generator = TemplatedNaturalLanguageGenerator(RESPONSES)
    slots = {"language": language, "report_kind": kind}
    for _ in range(40):  # the choice is random: a wrong variation among the matches shows within 40
        reply = generator.generate_from_slots("utter_report_recorded", slots, "rest", number="7", when="")
        assert reply is not None
        assert str(reply["text"]).startswith(opening)
        asked = generator.generate_from_slots("utter_ask_report_details", slots, "rest")
        assert asked is not None
        assert ("建议" in asked["text"] or "suggestion" in asked["text"]) == (kind == "suggestion")


def _said_by_actions() -> set[str]:
    """Every string constant in the actions' code (responses they utter by name)."""
    import ast

    found: set[str] = set()
    for path in (PROJECT_ROOT / "actions").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def _in_rules_and_stories() -> set[str]:
    found: set[str] = set()
    for folder in ("data", "tests/conversations"):
        for path in (PROJECT_ROOT / folder).rglob("*.yml"):
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for flow in [*(document.get("rules") or []), *(document.get("stories") or [])]:
                found |= {step["action"] for step in flow.get("steps") or [] if "action" in step}
    return found


def test_every_response_is_said_by_a_rule_a_form_or_an_action() -> None:
    """Rasa's training warns of responses no story or rule uses; those the actions and forms say are
    used all the same. A response nothing says is dead and must go."""
    form_questions = {
        f"utter_ask_{slot}" for form in DOMAIN["forms"].values() for slot in form["required_slots"]
    }
    used = _in_rules_and_stories() | form_questions | _said_by_actions()
    assert sorted(set(RESPONSES) - used) == []
