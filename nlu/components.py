"""Custom Rasa NLU components: a bilingual tokenizer and a Chinese/English language detector."""

from __future__ import annotations

import re
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.language import detect_language

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
