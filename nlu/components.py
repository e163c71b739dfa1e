"""Custom Rasa NLU components: a bilingual tokenizer, a Chinese/English language detector, and a guard
that asks again rather than act on a doubtful intent that changes something."""

from __future__ import annotations

import re
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
from rasa.shared.nlu.constants import (
    ENTITIES,
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.language import asks_about_it, detect_language, is_acknowledgement, is_praise, wants_to_rate_instead

_WORDLIKE = re.compile(r"\w", re.UNICODE)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=True)
class BilingualTokenizer(JiebaTokenizer):  # type: ignore[misc]
    """Jieba for Chinese words, whitespace for Latin ones, without jieba's space and punctuation tokens.

    A message with no word at all (emoji only) keeps its symbols as tokens, so it still has features.
    """

    @staticmethod
    def supported_languages() -> list[str] | None:
        return None

    def tokenize(self, message: Message, attribute: str) -> list[Token]:
        tokens: list[Token] = super().tokenize(message, attribute)
        visible = [token for token in tokens if token.text.strip()]
        words = [token for token in visible if _WORDLIKE.search(token.text)]
        return words or visible or tokens


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR, is_trainable=False)
class LanguageDetector(GraphComponent, EntityExtractorMixin):  # type: ignore[misc]
    """Adds a ``language`` entity (zh or en) to each message that has letters to tell it by.

    The domain maps it to the ``language`` slot, which picks the response variation in the patron's
    language; a message without letters (emoji) leaves the slot as it was.
    """

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> LanguageDetector:
        return cls()

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            text = message.get(TEXT) or ""
            language = detect_language(text)
            if language is None:
                continue
            entity = {"entity": "language", "value": language, "start": 0, "end": len(text)}
            entities = [e for e in message.get(ENTITIES, []) if e.get("entity") != "language"]
            message.set(ENTITIES, entities + self.add_extractor_name([entity]), add_to_output=True)
        return messages


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class ConsequenceGuard(GraphComponent, IntentClassifier):  # type: ignore[misc]
    """An intent that changes something for the patron or for staff (gives or withdraws consent,
    pauses or resumes the library's messages, records a complaint or a suggestion, hands the
    conversation to a librarian, starts deleting data, starts the feedback form) needs more
    confidence than one that only answers: below ``threshold`` it becomes nlu_fallback, so the bot
    says it did not understand instead of acting on a guess. Without it "<script>alert(1)</script>"
    unsubscribed the patron (0.28), an SQL fragment was recorded as a complaint (0.22) and "and for
    how long?" started the feedback form (0.16). The words patrons use for these ("stop", "退订",
    "投诉", "转人工") score above 0.9. Placed after FallbackClassifier; the threshold was chosen on
    out-of-fold predictions (docs/conversations.md)."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            "intents": [
                "subscribe",
                "unsubscribe",
                "pause_messages",
                "resume_messages",
                "complaint",
                "suggestion",
                "human_handoff",
                "privacy_delete",
                "give_feedback",
            ],
            "threshold": 0.3,
        }

    def __init__(self, config: dict[str, Any]) -> None:
        self.intents = frozenset(config["intents"])
        self.threshold = float(config["threshold"])

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> ConsequenceGuard:
        return cls({**cls.get_default_config(), **config})

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            intent = message.get(INTENT) or {}
            confidence = float(intent.get(PREDICTED_CONFIDENCE_KEY) or 0.0)
            self._read_as_meant(message, intent, confidence)
            intent = message.get(INTENT) or {}
            if intent.get(INTENT_NAME_KEY) not in self.intents or confidence >= self.threshold:
                continue
            # As FallbackClassifier does: the fallback first in the ranking, at the threshold.
            fallback = {
                INTENT_NAME_KEY: DEFAULT_NLU_FALLBACK_INTENT_NAME,
                PREDICTED_CONFIDENCE_KEY: self.threshold,
            }
            message.set(INTENT, fallback, add_to_output=True)
            ranking = list(message.get(INTENT_RANKING_KEY) or [])
            message.set(INTENT_RANKING_KEY, [dict(fallback), *ranking], add_to_output=True)
        return messages

    def _read_as_meant(self, message: Message, intent: dict[str, Any], confidence: float) -> None:
        """An acknowledgement taken for goodbye or a greeting is thanks; a wish to rate instead ("I'd
        rather just give feedback") is give_feedback; praise taken for a complaint or a request for a
        librarian is thanks; a complaint or suggestion that asks about a fault ("is that true?") is the
        next intent the classifier saw that records nothing, or a fallback."""
        name = intent.get(INTENT_NAME_KEY)
        text = str(message.get(TEXT) or "")
        if name in ("goodbye", "greet") and is_acknowledgement(text):  # "ok", "好的" after an answer
            self._replace(message, {INTENT_NAME_KEY: "thanks", PREDICTED_CONFIDENCE_KEY: confidence})
        elif name != "give_feedback" and wants_to_rate_instead(text):
            self._replace(message, {INTENT_NAME_KEY: "give_feedback", PREDICTED_CONFIDENCE_KEY: confidence})
        elif name in _FAULT_FINDING and is_praise(text):
            self._replace(message, {INTENT_NAME_KEY: "thanks", PREDICTED_CONFIDENCE_KEY: confidence})
        elif name in _REPORTS and asks_about_it(text):
            ranking = message.get(INTENT_RANKING_KEY) or []
            other = next(
                (
                    dict(candidate)
                    for candidate in ranking
                    if candidate.get(INTENT_NAME_KEY) not in self.intents | {DEFAULT_NLU_FALLBACK_INTENT_NAME}
                ),
                {INTENT_NAME_KEY: DEFAULT_NLU_FALLBACK_INTENT_NAME, PREDICTED_CONFIDENCE_KEY: self.threshold},
            )
            self._replace(message, other)

    @staticmethod
    def _replace(message: Message, intent: dict[str, Any]) -> None:
        message.set(INTENT, intent, add_to_output=True)
        ranking = [
            r
            for r in message.get(INTENT_RANKING_KEY) or []
            if r.get(INTENT_NAME_KEY) != intent[INTENT_NAME_KEY]
        ]
        message.set(INTENT_RANKING_KEY, [dict(intent), *ranking], add_to_output=True)


# Intents that find fault with the library or ask for a librarian, and the reports among them.
_FAULT_FINDING = frozenset({"complaint", "suggestion", "human_handoff"})
_REPORTS = frozenset({"complaint", "suggestion"})
