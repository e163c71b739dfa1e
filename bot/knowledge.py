"""The knowledge base: librarian-edited questions and answers, found by meaning, characters and words."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from numpy.typing import NDArray

from bot.encoders import DEFAULT_MODEL, CachedEncoder, Encoder, MultilingualEncoder, SentenceEncoder
from bot.language import LANGUAGES, detect_language
from bot.query_vectors import quantise

if TYPE_CHECKING:
    from bot.settings import Settings

PATRON_TYPES = ("undergraduate", "postgraduate", "faculty", "staff", "public")
_TOPIC_IDS = (
    "card_account",
    "borrowing",
    "renewal",
    "holds",
    "returns",
    "fines_fees",
    "interlibrary_loan",
    "spaces",
    "tech_services",
    "resources",
    "research_help",
    "events",
    "location_contact",
    "hours",
)


class KnowledgeError(Exception):
    """The knowledge base file is missing or malformed; the message names the entry and key."""


@dataclass(frozen=True)
class Entry:
    """One question and its answer in one language."""

    id: str
    lang: str
    question: str
    answer: str
    alternatives: tuple[str, ...] = ()
    topic: str | None = None
    audience: dict[str, str] = field(default_factory=dict)

    def answer_for(self, patron_type: str | None) -> str:
        """The answer for this kind of patron, where the library gave one, else the general one."""
        return self.audience.get(patron_type or "", self.answer)

    def texts(self) -> list[str]:
        """What a query is compared with: the question, each alternative, and question with answer."""
        return [self.question, *self.alternatives, f"{self.question} {self.answer}"]


def load_entries(path: Path) -> list[Entry]:
    """Entries from the project's YAML file or from a JSONL file (one entry per line, per language)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise KnowledgeError(f"{path}: cannot read the knowledge base ({error.strerror})") from None
    if path.suffix == ".jsonl":
        return _from_jsonl(text, source=str(path))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KnowledgeError(f"{path}: not valid YAML ({error})") from None
    return _from_yaml(raw, source=str(path))


def _from_jsonl(text: str, *, source: str) -> list[Entry]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            entries.append(
                Entry(
                    id=str(item["id"]),
                    lang=str(item.get("lang") or "en"),
                    question=str(item["question"]),
                    answer=str(item["answer"]),
                    alternatives=tuple(str(a) for a in item.get("alternatives") or ()),
                    topic=item.get("topic"),
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise KnowledgeError(f"{source}:{number}: not a knowledge base entry ({error})") from None
    return entries


def _from_yaml(raw: Any, *, source: str) -> list[Entry]:
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise KnowledgeError(f"{source}: expected a mapping with a list of 'entries'")
    entries: list[Entry] = []
    seen: set[str] = set()
    for index, item in enumerate(raw["entries"]):
        where = f"{source}: entries[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"].strip():
            raise KnowledgeError(f"{where} needs an 'id'")
        entry_id = item["id"].strip()
        where = f"{source}: entry '{entry_id}'"
        if entry_id in seen:
            raise KnowledgeError(f"{where} appears twice")
        seen.add(entry_id)
        topic = item.get("topic")
        if topic is not None and topic not in _TOPIC_IDS:
            raise KnowledgeError(f"{where}: unknown topic {topic!r}")
        audience = item.get("audience") or {}
        if not isinstance(audience, dict) or any(key not in PATRON_TYPES for key in audience):
            raise KnowledgeError(f"{where}: 'audience' keys must be among {', '.join(PATRON_TYPES)}")
        languages = [lang for lang in LANGUAGES if lang in item]
        if not languages:
            raise KnowledgeError(f"{where} needs a 'zh' or 'en' block")
        for lang in languages:
            block = item[lang]
            if not isinstance(block, dict) or not str(block.get("question") or "").strip():
                raise KnowledgeError(f"{where}: '{lang}' needs a 'question'")
            if not str(block.get("answer") or "").strip():
                raise KnowledgeError(f"{where}: '{lang}' needs an 'answer'")
            alternatives = block.get("alternatives") or []
            if not isinstance(alternatives, list):
                raise KnowledgeError(f"{where}: '{lang}.alternatives' must be a list")
            entries.append(
                Entry(
                    id=entry_id,
                    lang=lang,
                    question=str(block["question"]).strip(),
                    answer=str(block["answer"]).strip(),
                    alternatives=tuple(str(a).strip() for a in alternatives if str(a).strip()),
                    topic=topic,
                    audience={
                        kind: str(texts[lang]).strip()
                        for kind, texts in audience.items()
                        if isinstance(texts, dict) and texts.get(lang)
                    },
                )
            )
    return entries


SENTENCE = "sentence"
MULTILINGUAL = "multilingual"  # the same e5 model and "query:" encoding as the NLU's (bot.query_vectors)
CHARACTERS = "characters"
WORDS = "words"
# The library's own terms (续借, 馆际互借, ...), which jieba's general dictionary splits; the NLU's
# tokenizer reads the same folder.
DICTIONARY = Path(__file__).resolve().parent.parent / "nlu" / "dictionary"
_WORDLIKE = re.compile(r"\w")


@functools.cache
def _segmenter() -> Any:
    """A jieba segmenter of its own (the global one is left alone) that knows the library's terms."""
    with warnings.catch_warnings():  # jieba 0.42 imports the deprecated pkg_resources
        warnings.simplefilter("ignore", UserWarning)
        import jieba

    jieba.setLogLevel(logging.WARNING)
    segmenter = jieba.Tokenizer()
    for path in sorted(DICTIONARY.glob("*.txt")):
        segmenter.load_userdict(str(path))
    return segmenter


def words(text: str) -> list[str]:
    """The words of a text: jieba's for Chinese, runs of letters and digits for Latin script."""
    return [word for word in _segmenter().lcut(text) if _WORDLIKE.search(word)]


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
class Hit:
    """A candidate entry for a query, with its fused score and each signal's score."""

    entry: Entry
    score: float
    signals: dict[str, float]


@dataclass(frozen=True)
class Decision:
    """What the bot does with a query: answer, offer candidates ("did you mean"), or say it does not know."""

    kind: str  # "answer", "suggest" or "unknown"
    hits: tuple[Hit, ...]
    suggest: float  # the score below which the bot says it does not know (the language's threshold)

    @property
    def best(self) -> Hit | None:
        return self.hits[0] if self.hits else None


_SPACES = re.compile(r"\s+")


def normalise_query(text: str) -> str:
    """A query or entry text as the retriever reads it (and as the NLU does): NFKC, so that full-width
    letters, digits and punctuation from a Chinese input method read as their usual forms; lower case;
    single spaces."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


# Past this many texts in a language, a lookup has two stages. First every entry is scored roughly: the
# leading model's (the one weighted most) vectors projected on their REDUCED_DIMENSIONS main directions,
# plus the lexical signals, which are exact and cheap. Then every model scores only the SHORTLIST entries
# that scored best, exactly. One full dot product over 150,000 vectors reads 230 MB and is bound by memory
# bandwidth; the shortlist's vectors are 5 % of that. The size was chosen on 1,000 distinct synthetic
# entries per language (about 15,600 texts, each encoded by the models) and about 310 queries per
# language (the benchmark's and the dev and test splits'): a shortlist of 51 there (the share 512 is of
# 10,000) gave every query the decision and the best score of full scans, and the same three best
# scores to all but 2 English queries; a shortlist of 26 (256 of 10,000) changed one English query's
# best entry.
SHORTLIST_FROM_TEXTS = 20_000
REDUCED_DIMENSIONS = 64
SHORTLIST = 512


# An entry's score for a signal blends its best text's score with the mean over all its texts (question,
# alternatives, question with answer): an entry whose phrasings all come close is likelier the one
# meant than an entry with one lucky phrasing. The share was chosen on the dev split
# (knowledge/eval/queries_dev.jsonl, weights re-tuned for each share): top-1 English 0.905 -> 0.937,
# Chinese 0.921 -> 0.929, out-of-scope AUROC up in both; shares 0.3-0.6 all did about as well.
ENTRY_MEAN_SHARE = 0.5


def entry_score(text_scores: NDArray[Any], starts: NDArray[Any], lengths: NDArray[Any]) -> NDArray[Any]:
    """Each entry's score from its texts' scores (an entry's texts are consecutive, from `starts`)."""
    best = np.maximum.reduceat(text_scores, starts)
    mean = np.add.reduceat(text_scores, starts) / lengths
    result: NDArray[Any] = (1.0 - ENTRY_MEAN_SHARE) * best + ENTRY_MEAN_SHARE * mean
    return result


@dataclass(frozen=True)
class _Texts:
    """Some entries' text vectors: consecutive per entry, from `starts`."""

    vectors: NDArray[np.float32]
    starts: NDArray[Any]
    lengths: NDArray[Any]

    def scores(self, query: NDArray[np.float32]) -> NDArray[Any]:
        """Each entry's score: `entry_score` of its texts' cosines with the query."""
        return entry_score(self.vectors @ query, self.starts, self.lengths)


class _DenseIndex:
    """One model's vectors of one language's texts, and each entry's score for a query vector."""

    def __init__(self, vectors: NDArray[np.float32], starts: NDArray[Any], *, shortlist_from: int) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.starts = starts
        self.lengths = np.diff(np.r_[starts, len(self.vectors)])
        self.basis: NDArray[np.float32] | None = None
        self.reduced: NDArray[np.float32] | None = None
        rows, dimensions = self.vectors.shape if self.vectors.ndim == 2 else (0, 0)
        if rows >= shortlist_from and dimensions > REDUCED_DIMENSIONS and len(starts) > SHORTLIST:
            # The main directions (uncentred: dot products keep the direction all vectors share), from
            # an even sample of at most 20,000 texts.
            sample = self.vectors[np.linspace(0, rows - 1, min(rows, 20_000)).astype(np.int64)]
            _, _, directions = np.linalg.svd(sample, full_matrices=False)
            self.basis = np.ascontiguousarray(directions[:REDUCED_DIMENSIONS].T, dtype=np.float32)
            self.reduced = np.ascontiguousarray(self.vectors @ self.basis)

    @property
    def shortlists(self) -> bool:
        """Whether lookups shortlist entries by this model's reduced vectors (a large index)."""
        return self.basis is not None

    def approximate(self, query: NDArray[np.float32]) -> NDArray[Any]:
        """Every entry's score in the reduced space (a large index only)."""
        if self.basis is None or self.reduced is None:
            raise ValueError("only an index of SHORTLIST_FROM_TEXTS texts or more has reduced vectors")
        return entry_score(self.reduced @ (query @ self.basis), self.starts, self.lengths)

    def texts(self, entries: NDArray[Any] | None = None) -> _Texts:
        """The `entries`' text vectors, in that order (a copy); every entry's when none are named."""
        if entries is None:
            return _Texts(self.vectors, self.starts, self.lengths)
        lengths = self.lengths[entries]
        offsets = np.cumsum(lengths) - lengths
        rows = np.arange(int(lengths.sum())) - np.repeat(offsets - self.starts[entries], lengths)
        return _Texts(self.vectors[rows], offsets, lengths)

    def exact(self, query: NDArray[np.float32], entries: NDArray[Any] | None = None) -> NDArray[Any]:
        """The `entries`' scores (`entry_score` of their texts' cosines), in that order; every entry's
        when none are named."""
        return self.texts(entries).scores(query)


class _LexicalIndex:
    """Sublinear TF-IDF vectors of texts (character n-grams or words), and each text's cosine with a query."""

    def __init__(self, texts: Sequence[str], vectorizer: Any) -> None:
        self.vectorizer = vectorizer
        # Column-major: a query has a few dozen terms, and only their columns are read (at 10,000
        # entries, 0.4 ms for a Chinese query and 6 ms for an English one, instead of 17 and 65 ms).
        self.matrix = vectorizer.fit_transform(texts).tocsc()

    def text_scores(self, query: str) -> NDArray[Any]:
        terms = self.vectorizer.transform([query])
        return np.asarray(self.matrix[:, terms.indices] @ terms.data).ravel()


class _LanguageIndex:
    """One language's entries: each encoder's vectors of their texts, and character n-gram and word
    TF-IDF vectors."""

    def __init__(self, entries: list[Entry], encoders: Mapping[str, Encoder]) -> None:
        self.entries = entries
        texts: list[str] = []
        owners: list[int] = []
        for position, entry in enumerate(entries):
            for text in entry.texts():
                texts.append(normalise_query(text))
                owners.append(position)
        self.owners = np.asarray(owners)
        self.starts = np.flatnonzero(np.r_[True, self.owners[1:] != self.owners[:-1]])
        self.lengths = np.diff(np.r_[self.starts, len(self.owners)])
        self.dense = {
            name: _DenseIndex(
                encoder.encode_passages(texts), self.starts, shortlist_from=SHORTLIST_FROM_TEXTS
            )
            for name, encoder in encoders.items()
        }
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.lexical = {
            CHARACTERS: _LexicalIndex(
                texts, TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
            ),
            WORDS: _LexicalIndex(texts, TfidfVectorizer(analyzer=words, sublinear_tf=True)),
        }

    def lexical_scores(self, query: str, names: Sequence[str]) -> dict[str, NDArray[Any]]:
        """The named lexical signals' exact scores for every entry."""
        result = {}
        for name in names:
            result[name] = entry_score(self.lexical[name].text_scores(query), self.starts, self.lengths)
        return result

    def scores(
        self,
        query: str,
        query_vectors: dict[str, NDArray[np.float32]],
        lexical: Sequence[str] = (CHARACTERS, WORDS),
    ) -> dict[str, NDArray[Any]]:
        """Each signal's exact score for every entry (`entry_score` of its texts' scores): the models'
        whose query vectors are given, and the `lexical` signals'."""
        result = {name: self.dense[name].exact(vector) for name, vector in query_vectors.items()}
        return result | self.lexical_scores(query, lexical)

    def search(
        self,
        query: str,
        *,
        vector: Callable[[str], NDArray[np.float32]],
        models: Sequence[str],
        lexical: Sequence[str],
        weights: Mapping[str, float],
        k: int,
    ) -> list[Hit]:
        """The k best entries for a normalised query by the weighted signals. `vector` gives each of the
        `models`' query vectors (waiting for one still being encoded). In a large index, only the
        SHORTLIST entries the leading model and the lexical signals rank first are scored exactly."""
        candidates: NDArray[Any] | None = None
        leading = max(models, key=lambda name: weights.get(name, 0.0), default=None)
        if leading is not None and weights.get(leading, 0.0) > 0 and self.dense[leading].shortlists:
            # The lexical signals on a thread while this one makes the leading model's rough scores.
            lexical_scoring = _WORKERS.submit(self.lexical_scores, query, lexical)
            approximate = self.dense[leading].approximate(vector(leading))
            scores = lexical_scoring.result()
            rough = fuse(scores | {leading: approximate}, dict(weights))
            candidates = np.argpartition(-rough, SHORTLIST - 1)[:SHORTLIST]
            scores = {name: values[candidates] for name, values in scores.items()}
        else:
            scores = self.lexical_scores(query, lexical)
        # The other models score on threads of their own, while this one scores the leading model's:
        # each gathers its shortlisted vectors, then waits for its query vector if still encoding.
        scoring = {
            name: _WORKERS.submit(lambda name: self.dense[name].texts(candidates).scores(vector(name)), name)
            for name in models
            if name != leading
        }
        exact: dict[str, NDArray[Any]] = {}
        if leading is not None:
            exact[leading] = self.dense[leading].exact(vector(leading), candidates)
        exact |= {name: future.result() for name, future in scoring.items()}
        scores |= exact
        fused = fuse(scores, dict(weights))
        hits = []
        for position in np.argsort(-fused)[:k]:
            entry = int(position) if candidates is None else int(candidates[position])
            hits.append(
                Hit(
                    entry=self.entries[entry],
                    score=float(fused[position]),
                    signals={name: float(values[position]) for name, values in scores.items()},
                )
            )
        return hits


# When the two best entries score within this of each other, the bot offers them as a choice instead of
# answering with the first. On the dev split, answered queries that were such near ties had the right
# entry first 13 of 17 times (English) and 12 of 20 (Chinese), against 92 % and 96 % for the others;
# the right entry was among the three offered 16 of 17 and 17 of 20 times.
NEAR_TIE = 0.01


# A lookup's helper threads: they encode the query (a model each) and score signals while the calling
# thread scores others. A task waits only for tasks submitted before it, so the pool cannot deadlock.
_WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="retrieval")


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
        self.indexes = {lang: _LanguageIndex(items, encoders) for lang, items in by_language.items()}

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
            name: _WORKERS.submit(self.query_vectors, text, [name]) for name in models if name not in given
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

    def kind(self, lang: str, scores: Sequence[float]) -> str:
        """What a lookup in `lang` whose best scores are `scores` (best first) decides: answer, suggest
        (also a near tie) or unknown."""
        tuning = self.tuning_for(lang)
        near_tie = len(scores) > 1 and is_near_tie(scores[0], scores[1])
        if scores[0] >= tuning.answer and not near_tie:
            return "answer"
        return "suggest" if scores[0] >= tuning.suggest else "unknown"


def fuse(scores: dict[str, NDArray[Any]], weights: dict[str, float]) -> NDArray[Any]:
    """The weighted sum of the signals' scores for every entry."""
    total: NDArray[Any] = np.zeros_like(next(iter(scores.values())), dtype=np.float64)
    for name, values in scores.items():
        total = total + weights.get(name, 0.0) * values
    return total


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


class KnowledgeService:
    """The knowledge base as the bot uses it: rebuilt when the file or its tuning changes on disk,
    so librarians' edits apply without retraining or restarting."""

    def __init__(
        self,
        *,
        kb_path: Path,
        tuning_path: Path,
        model: str = "",
        multilingual: bool = True,
        vector_dir: Path | None = None,
    ) -> None:
        self.kb_path = kb_path
        self.tuning_path = tuning_path
        self.vector_dir = vector_dir  # where passage vectors are kept between runs (None: memory only)
        self.model = model
        self.multilingual = multilingual
        self._stamp: tuple[int, int] | None = None
        self._retriever: Retriever | None = None
        self._encoders: dict[str, Encoder] = {}
        self._model_in_use = ""
        self._entries: tuple[tuple[int, int], list[Entry]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KnowledgeService:
        """The knowledge base, tuning and models the settings name."""
        return cls(
            kb_path=settings.path(settings.knowledge_base),
            tuning_path=settings.path(settings.retrieval_tuning),
            model=settings.embedding_model,
            multilingual=settings.multilingual_model,
            vector_dir=settings.vector_path,
        )

    def _vector_file(self, name: str, encoder: SentenceEncoder | MultilingualEncoder) -> Path | None:
        """The file for one encoder's passage vectors, named by what they depend on (its `identity`),
        so vectors of one model are never read as another's."""
        if self.vector_dir is None:
            return None
        digest = hashlib.sha256(f"{name} {encoder.identity}".encode()).hexdigest()[:16]
        return self.vector_dir / f"{name}-{digest}.npz"

    def _current_stamp(self) -> tuple[int, int]:
        try:
            kb = self.kb_path.stat().st_mtime_ns
        except OSError as error:
            raise KnowledgeError(
                f"{self.kb_path}: cannot read the knowledge base ({error.strerror})"
            ) from None
        tuning = self.tuning_path.stat().st_mtime_ns if self.tuning_path.is_file() else 0
        return kb, tuning

    def entries(self) -> list[Entry]:
        """The entries as the file holds them now, without loading any model."""
        stamp = self._current_stamp()
        if self._retriever is not None and stamp == self._stamp:
            return self._retriever.entries
        if self._entries is None or self._entries[0] != stamp:
            self._entries = (stamp, load_entries(self.kb_path))
        return self._entries[1]

    def retriever(self) -> Retriever:
        stamp = self._current_stamp()
        if self._retriever is None or stamp != self._stamp:
            tuned_model, tuning = load_tuning(self.tuning_path)
            model = self.model or tuned_model
            if not self._encoders or self._model_in_use != model:
                made = make_encoders(sentence_model=model, multilingual=self.multilingual)
                self._encoders = {
                    name: CachedEncoder(encoder, path=self._vector_file(name, encoder))
                    for name, encoder in made.items()
                }
                self._model_in_use = model
            self._retriever = Retriever(load_entries(self.kb_path), encoders=self._encoders, tuning=tuning)
            self._stamp = stamp
        return self._retriever
