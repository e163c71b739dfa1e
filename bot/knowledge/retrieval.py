"""Retrieval: the entries that best answer a query, and what the bot does with them (answer, offer
candidates, or say it does not know), by each language's tuned weights and thresholds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from bot.knowledge.encoders import DEFAULT_MODEL, Encoder, MultilingualEncoder, SentenceEncoder
from bot.knowledge.entries import Entry
from bot.knowledge.index import CHARACTERS, MULTILINGUAL, SENTENCE, WORDS, WORKERS, Hit, LanguageIndex
from bot.knowledge.query_vectors import quantise
from bot.knowledge.text import normalise_query
from bot.language import detect_language


@dataclass(frozen=True)
class LanguageTuning:
    """How one language's signals are weighted and judged (tuned on the held-out dev split)."""

    weights: dict[str, float] = field(default_factory=dict)  # signal -> share; missing: equal shares
    answer: float = 0.6
    suggest: float = 0.4

    def weight(self, signal: str, signals: Sequence[str]) -> float:
        if not self.weights:
            return 1.0 / len(signals)
        return self.weights.get(signal, 0.0)


@dataclass(frozen=True)
class Decision:
    """What the bot does with a query: answer, offer candidates ("did you mean"), or say it does not know."""

    kind: str  # "answer", "suggest" or "unknown"
    hits: tuple[Hit, ...]
    suggest: float  # the score below which the bot says it does not know (the language's threshold)

    @property
    def best(self) -> Hit | None:
        return self.hits[0] if self.hits else None


# When the two best entries score within this of each other, the bot offers them as a choice instead of
# answering with the first. On the dev split, answered queries that were such near ties had the right
# entry first 13 of 17 times (English) and 12 of 20 (Chinese), against 92 % and 96 % for the others;
# the right entry was among the three offered 16 of 17 and 17 of 20 times.
NEAR_TIE = 0.01


def is_near_tie(first: float, second: float) -> bool:
    """Whether the best score is too close to the second best to answer with it outright."""
    return first - second < NEAR_TIE


class Retriever:
    """Finds knowledge-base entries for a query by a weighted sum of signals: sentence models
    (meaning) and character n-grams (which work for Chinese and for typos). Each language's weights
    and its answer and suggest thresholds come from tuning on held-out queries, not from guesses.
    """

    def __init__(
        self,
        entries: Iterable[Entry],
        *,
        encoders: Mapping[str, Encoder],
        tuning: dict[str, LanguageTuning] | None = None,
    ) -> None:
        self.encoders = encoders
        self.tuning = tuning or {}
        self.signals = [*encoders, CHARACTERS, WORDS]
        self.entries = list(entries)
        by_language: dict[str, list[Entry]] = {}
        for entry in self.entries:
            by_language.setdefault(entry.lang, []).append(entry)
        self.indexes = {lang: LanguageIndex(items, encoders) for lang, items in by_language.items()}

    def tuning_for(self, lang: str) -> LanguageTuning:
        return self.tuning.get(lang, LanguageTuning())

    def query_vectors(
        self, text: str, names: Iterable[str], given: Mapping[str, NDArray[np.float32]] | None = None
    ) -> dict[str, NDArray[np.float32]]:
        """The named models' vectors of a normalised query: those `given` (the NLU's e5 vector of the
        same text), the others encoded. e5 vectors are in half precision either way (`quantise`)."""
        vectors = {}
        for name in names:
            vector = (given or {}).get(name)
            if vector is None:
                vector = self.encoders[name].encode_queries([text])[0]
            vectors[name] = quantise(vector) if name == MULTILINGUAL else vector
        return vectors

    def signal_scores(self, query: str, lang: str) -> dict[str, NDArray[Any]]:
        text = normalise_query(query)
        return self.indexes[lang].scores(text, self.query_vectors(text, self.encoders))

    def search(
        self,
        query: str,
        *,
        lang: str | None = None,
        k: int = 3,
        vectors: Mapping[str, NDArray[np.float32]] | None = None,
    ) -> list[Hit]:
        """The k best entries for a query, in the query's language (or the one given). `vectors`: query
        vectors already made of `normalise_query(query)`, by model name (the NLU's e5 vector)."""
        text = normalise_query(query)
        if not text:
            return []
        lang = lang or detect_language(query)
        languages = [lang] if lang in self.indexes else list(self.indexes)
        # A signal whose tuned weight is 0 in every language searched is not computed (English MiniLM
        # for Chinese queries, say): encoding the query is most of a search's time.
        needed = [
            name
            for name in self.signals
            if any(self.tuning_for(language).weight(name, self.signals) > 0 for language in languages)
        ]
        models = [name for name in needed if name in self.encoders]
        lexical = [name for name in needed if name not in self.encoders]
        given = self.query_vectors(text, [name for name in models if name in (vectors or {})], vectors)
        # The models still to encode the query (English MiniLM; e5 when the NLU's vector is not there)
        # each run on a thread of their own while this one scores the other signals: all of them
        # release the GIL in their matrix products.
        encoding = {
            name: WORKERS.submit(self.query_vectors, text, [name]) for name in models if name not in given
        }

        def vector(name: str) -> NDArray[np.float32]:
            return given[name] if name in given else encoding[name].result()[name]

        hits: list[Hit] = []
        for language in languages:
            tuning = self.tuning_for(language)
            hits += self.indexes[language].search(
                text,
                vector=vector,
                models=models,
                lexical=lexical,
                weights={name: tuning.weight(name, self.signals) for name in needed},
                k=k,
            )
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:k]

    def decide(
        self,
        query: str,
        *,
        lang: str | None = None,
        k: int = 3,
        vectors: Mapping[str, NDArray[np.float32]] | None = None,
    ) -> Decision:
        hits = self.search(query, lang=lang, k=k, vectors=vectors)
        if not hits:
            return Decision(kind="unknown", hits=(), suggest=self.tuning_for(lang or "").suggest)
        lang = hits[0].entry.lang
        kind = self.kind(lang, [hit.score for hit in hits])
        return Decision(kind=kind, hits=tuple(hits), suggest=self.tuning_for(lang).suggest)

    def decide_in_context(
        self,
        query: str,
        context: str,
        *,
        lang: str,
        weight: float,
        k: int = 3,
        vectors: Mapping[str, NDArray[np.float32]] | None = None,
        context_vectors: Mapping[str, NDArray[np.float32]] | None = None,
    ) -> Decision:
        """A follow-up ("那续借呢" after a question about loans), read alone and with `context` (the
        question it follows, then the follow-up): the reading that answers, if only one does; if
        both answer with different entries, or neither answers, each entry's score blends the two,
        `weight` for the reading with the context. Chosen on tests/followups/dev/ (docs/evaluation.md).
        Each text is encoded once and searched once (over the whole index, for the blend)."""
        index = self.indexes.get(lang)
        every = max(len(index.entries), k) if index is not None else k
        own = self.search(query, lang=lang, k=every, vectors=self.needed_vectors(query, lang, vectors))
        threaded_hits = self.search(
            context, lang=lang, k=every, vectors=self.needed_vectors(context, lang, context_vectors)
        )
        alone, threaded = self._decision(own[:k], lang), self._decision(threaded_hits[:k], lang)
        if alone.kind == "answer" and threaded.kind != "answer":
            return alone
        if threaded.kind == "answer" and (
            alone.kind != "answer" or alone.hits[0].entry == threaded.hits[0].entry
        ):
            return threaded
        if not own or not threaded_hits:
            return threaded
        own_scores = {id(hit.entry): hit.score for hit in own}
        threaded_scores = {id(hit.entry): hit.score for hit in threaded_hits}
        found = {id(hit.entry): hit for hit in [*threaded_hits, *own]}
        # An entry a large index left out of one search counts with that search's lowest score.
        floor_own, floor_threaded = own[-1].score, threaded_hits[-1].score
        scores = {
            key: (1 - weight) * own_scores.get(key, floor_own)
            + weight * threaded_scores.get(key, floor_threaded)
            for key in found
        }
        best = sorted(scores, key=lambda key: scores[key], reverse=True)[:k]
        hits = tuple(
            Hit(entry=found[key].entry, score=float(scores[key]), signals=found[key].signals) for key in best
        )
        kind = self.kind(lang, [hit.score for hit in hits])
        return Decision(kind=kind, hits=hits, suggest=self.tuning_for(lang).suggest)

    def needed_vectors(
        self, query: str, lang: str, given: Mapping[str, NDArray[np.float32]] | None = None
    ) -> dict[str, NDArray[np.float32]]:
        """The vectors of `query` for the models `lang`'s tuning weighs (those `given` kept, the others
        encoded), so that several searches of the same text encode it once."""
        text = normalise_query(query)
        names = [name for name in self.encoders if self.tuning_for(lang).weight(name, self.signals) > 0]
        vectors = self.query_vectors(text, [name for name in names if name in (given or {})], given)
        # The models still to encode it run side by side (they release the GIL), as in `search`.
        encoding = {
            name: WORKERS.submit(self.query_vectors, text, [name]) for name in names if name not in vectors
        }
        return vectors | {name: future.result()[name] for name, future in encoding.items()}

    def _decision(self, hits: Sequence[Hit], lang: str) -> Decision:
        if not hits:
            return Decision(kind="unknown", hits=(), suggest=self.tuning_for(lang).suggest)
        kind = self.kind(hits[0].entry.lang, [hit.score for hit in hits])
        return Decision(kind=kind, hits=tuple(hits), suggest=self.tuning_for(hits[0].entry.lang).suggest)

    def kind(self, lang: str, scores: Sequence[float]) -> str:
        """What a lookup in `lang` whose best scores are `scores` (best first) decides: answer, suggest
        (also a near tie) or unknown."""
        tuning = self.tuning_for(lang)
        near_tie = len(scores) > 1 and is_near_tie(scores[0], scores[1])
        if scores[0] >= tuning.answer and not near_tie:
            return "answer"
        return "suggest" if scores[0] >= tuning.suggest else "unknown"


def make_encoders(
    *, sentence_model: str, multilingual: bool
) -> dict[str, SentenceEncoder | MultilingualEncoder]:
    encoders: dict[str, SentenceEncoder | MultilingualEncoder] = {SENTENCE: SentenceEncoder(sentence_model)}
    if multilingual:
        encoders[MULTILINGUAL] = MultilingualEncoder()
    return encoders


def load_tuning(path: Path) -> tuple[str, dict[str, LanguageTuning]]:
    """The sentence model's name and per-language tuning from the tuning file (no file: defaults)."""
    if not path.is_file():
        return DEFAULT_MODEL, {}
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    tuning = {
        lang: LanguageTuning(
            weights={str(k): float(v) for k, v in (values.get("weights") or {}).items()},
            answer=float(values["answer"]),
            suggest=float(values["suggest"]),
        )
        for lang, values in (raw.get("languages") or {}).items()
    }
    return str(raw.get("model") or DEFAULT_MODEL), tuning
