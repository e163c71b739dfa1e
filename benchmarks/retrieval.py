"""Knowledge-base retrieval alone: `Retriever.decide` per query with 10,000 synthetic entries."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.common import Result, Timer, percentile
from bot.knowledge.encoders import CachedEncoder, Encoder
from bot.knowledge.entries import Entry, load_entries
from bot.knowledge.index import MULTILINGUAL, fuse
from bot.knowledge.retrieval import Retriever, load_tuning, make_encoders
from bot.knowledge.text import normalise_query
from bot.settings import PROJECT_ROOT

TARGET_MS = 20.0
NAMES: list[tuple[str, str, float, str]] = [
    (f"retrieval_{lang}_{q}", "ms", TARGET_MS, "<") for lang in ("zh", "en") for q in ("p50", "p95")
]
CACHE = PROJECT_ROOT / ".bench-cache"
# The synthetic entries' places: each real entry asked again about one of 16 x 10 places.
CAMPUSES = (
    ("东区", "East Campus"), ("西区", "West Campus"), ("南区", "South Campus"), ("北区", "North Campus"),
    ("医学部", "Medical Campus"), ("昌平园区", "Changping Park"), ("大兴园区", "Daxing Park"),
    ("深圳研究院", "Shenzhen Institute"), ("苏州研究院", "Suzhou Institute"), ("海淀校区", "Haidian Campus"),
    ("青岛校区", "Qingdao Campus"), ("延庆基地", "Yanqing Base"), ("怀柔园区", "Huairou Park"),
    ("城南校区", "City South Campus"), ("江北校区", "Jiangbei Campus"), ("滨海校区", "Binhai Campus"),
)  # fmt: skip
SITES = (
    ("总馆", "Main Library"), ("理工分馆", "Science Library"), ("人文分馆", "Humanities Library"),
    ("法学分馆", "Law Library"), ("艺术分馆", "Arts Library"), ("经管分馆", "Business Library"),
    ("古籍馆", "Rare Books Reading Room"), ("学习中心", "Learning Commons"),
    ("医学分馆", "Health Sciences Library"), ("音乐图书室", "Music Room"),
)  # fmt: skip
# Queries written for the benchmark, in the words a patron might use (not the knowledge base's).
QUERIES = {
    "zh": (
        "书到期了能不能再续一次",
        "续借失败是什么原因",
        "逾期一天罚多少钱",
        "罚款可以用微信交吗",
        "怎么预约小组研讨间",
        "座位预约了没去会怎样",
        "图书馆无线网络连不上",
        "在家里怎么用学校的数据库",
        "电子书可以下载吗",
        "校园卡丢了借书受影响吗",
        "想借的书被别人借走了",
        "馆际互借要收费吗",
        "打印彩色一页多少钱",
        "晚上还书放哪里",
        "毕业论文怎么提交给图书馆",
        "有没有储物柜可以用",
        "怎么推荐图书馆买一本书",
        "查重服务怎么申请",
        "新生入馆教育在哪里参加",
        "找不到书架上的书怎么办",
    ),
    "en": (
        "can I extend my loan one more time",
        "why would a renewal be refused",
        "what is the charge for a book returned late",
        "can fines be paid online",
        "reserving a group discussion room",
        "what happens if I miss my seat booking",
        "the wireless network will not connect",
        "reaching library databases off campus",
        "are e-books downloadable",
        "my student card went missing",
        "the book I need is on loan to someone else",
        "does interlibrary lending cost anything",
        "colour printing price per page",
        "where to drop books after the building shuts",
        "submitting my thesis to the library",
        "are there lockers for students",
        "asking the library to buy a title",
        "help with a literature search for my project",
        "library orientation for new students",
        "a book is not where the catalogue says",
    ),
}


def synthetic_entries(count: int) -> tuple[list[dict[str, Any]], list[Entry]]:
    """`count` distinct knowledge-base entries, each in Chinese and English, as JSONL records, and for
    each record the real entry it was made from.

    The 63 real entries come first; then each real entry is asked again about one place (one of 10
    libraries on one of 16 campuses): its question, each alternative and its answer name the place.
    """
    real = load_entries(PROJECT_ROOT / "knowledge" / "faq.yml")
    by_id: dict[str, list[Entry]] = {}
    for entry in real:
        by_id.setdefault(entry.id, []).append(entry)
    groups = list(by_id.values())
    places = [(f"{zh}{site}", f"{site_en}, {en}") for zh, en in CAMPUSES for site, site_en in SITES]
    records = [_record(entry.id, entry, "", "") for entry in real]
    bases = list(real)
    number = 0
    while len(records) < 2 * count:
        variant, group = divmod(number, len(groups))
        place_zh, place_en = places[variant % len(places)]
        for entry in groups[group]:
            records.append(_record(f"{entry.id}-{variant}", entry, place_zh, place_en))
            bases.append(entry)
        number += 1
    return records[: 2 * count], bases[: 2 * count]


def _record(entry_id: str, entry: Entry, place_zh: str, place_en: str) -> dict[str, Any]:
    def at(text: str) -> str:
        if not place_zh:
            return text
        return f"{place_zh}：{text}" if entry.lang == "zh" else f"{text} ({place_en})"

    return {
        "id": entry_id,
        "lang": entry.lang,
        "topic": entry.topic,
        "question": at(entry.question),
        "answer": at(entry.answer),
        "alternatives": [at(text) for text in entry.alternatives],
    }


class StandInEncoder:
    """Encodes each text of a synthetic entry as the text of the real entry it was made from.

    Encoding the 10,000 entries' own texts with both models would take hours on the benchmark machine.
    A query's cost does not depend on the values in the index, only on its size, which is unchanged:
    one vector per text of every entry, and character n-grams of the entries' own texts.
    """

    def __init__(self, encoder: Encoder, stand_ins: dict[str, str]) -> None:
        self.encoder = encoder
        self.stand_ins = stand_ins

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.encoder.encode_queries(texts)

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.encoder.encode_passages([self.stand_ins.get(text, text) for text in texts])


class DiskCachedEncoder:
    """An encoder whose passage vectors are kept in .bench-cache/, in one file per model and set of
    distinct texts (named by their digest), with the seconds their encoding took when it was done."""

    def __init__(self, name: str, encoder: Encoder) -> None:
        self.name = name
        self.encoder = encoder
        self.texts = 0  # distinct texts encoded, now or when the cache was filled
        self.seconds = 0.0  # how long encoding them took
        self.from_cache = False

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.encoder.encode_queries(texts)

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        distinct = list(dict.fromkeys(texts))
        digest = hashlib.sha256("\0".join([self.name, *distinct]).encode()).hexdigest()[:24]
        path, meta = CACHE / f"{digest}.npy", CACHE / f"{digest}.json"
        if path.is_file() and meta.is_file():
            vectors = np.asarray(np.load(path), dtype=np.float32)
            self.from_cache = True
            took = float(json.loads(meta.read_text(encoding="utf-8"))["seconds"])
        else:
            with Timer() as encoding:
                vectors = self.encoder.encode_passages(distinct)
            took = encoding.elapsed
            CACHE.mkdir(exist_ok=True)
            np.save(CACHE / f"{digest}.tmp.npy", vectors)
            (CACHE / f"{digest}.tmp.npy").replace(path)
            record = {"encoder": self.name, "texts": len(distinct), "seconds": round(took, 2)}
            meta.write_text(json.dumps(record), encoding="utf-8")
        self.texts += len(distinct)
        self.seconds += took
        position = {text: row for row, text in enumerate(distinct)}
        return vectors[[position[text] for text in texts]]


def _knowledge_base(count: int) -> tuple[list[Entry], dict[str, str], dict[str, float]]:
    """The synthetic entries, written to a JSONL file and read back with the bot's `load_entries`, and
    each of their (normalised) texts' stand-in: the real entry's text it was made from."""
    with tempfile.TemporaryDirectory(prefix="patronbot-bench-kb-") as tmp:
        path = Path(tmp) / "faq.jsonl"
        with Timer() as written:
            records, bases = synthetic_entries(count)
            lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
            path.write_text("".join(lines), encoding="utf-8")
        with Timer() as loaded:
            entries = load_entries(path)
    stand_ins = {
        normalise_query(text): normalise_query(real)
        for entry, base in zip(entries, bases, strict=True)
        for text, real in zip(entry.texts(), base.texts(), strict=True)
    }
    timings = {"kb_written_seconds": round(written.elapsed, 2), "kb_loaded_seconds": round(loaded.elapsed, 2)}
    return entries, stand_ins, timings


def build(count: int) -> tuple[Retriever, dict[str, Any]]:
    """The bot's retriever (its encoders, each in a `CachedEncoder`; its tuning) over `count` synthetic
    entries, and what building it took."""
    model, tuning = load_tuning(PROJECT_ROOT / "knowledge" / "retrieval.yml")
    entries, stand_ins, timings = _knowledge_base(count)
    made = make_encoders(sentence_model=model, multilingual=True)
    cached = {
        name: DiskCachedEncoder(f"{name}:{model}", CachedEncoder(encoder)) for name, encoder in made.items()
    }
    encoders: dict[str, Encoder] = {
        name: StandInEncoder(encoder, stand_ins) for name, encoder in cached.items()
    }
    with Timer() as built:
        retriever = Retriever(entries, encoders=encoders, tuning=tuning)
    distinct = len(set(stand_ins))  # what a build encoding the entries' own texts would encode, per model
    per_text = sum(encoder.seconds / encoder.texts for encoder in cached.values())
    params = {
        "entries": len({entry.id for entry in entries}),
        "entries_per_language": dict(Counter(entry.lang for entry in entries)),
        "texts_per_language": {lang: len(index.owners) for lang, index in retriever.indexes.items()},
        "sentence_model": model,
        **timings,
        "index_build_seconds": round(built.elapsed, 1),
        "vectors_from_cache": all(encoder.from_cache for encoder in cached.values()),
        "encoded_texts_per_model": max(encoder.texts for encoder in cached.values()),
        "encoding_seconds": round(sum(encoder.seconds for encoder in cached.values()), 1),
        "own_texts_per_model": distinct,
        "own_texts_encoding_estimate_seconds": round(distinct * per_text),
    }
    return retriever, params


def _nlu_vectors(retriever: Retriever, lang: str) -> dict[str, dict[str, NDArray[np.float32]]]:
    """Each query's e5 vector as the NLU hands it to the action server (made before the timing: the
    NLU encodes every message to classify it)."""
    if MULTILINGUAL not in retriever.encoders:
        return {query: {} for query in QUERIES[lang]}
    encoder = retriever.encoders[MULTILINGUAL]
    return {
        query: {MULTILINGUAL: encoder.encode_queries([normalise_query(query)])[0]} for query in QUERIES[lang]
    }


def _time_queries(
    retriever: Retriever, lang: str, rounds: int, handed: dict[str, dict[str, NDArray[np.float32]]] | None
) -> tuple[list[float], Counter[str]]:
    """Each query's `decide`, with the NLU's vectors when `handed` (as the bot), else encoding them."""
    timings: list[float] = []
    kinds: Counter[str] = Counter()
    for _ in range(rounds):
        for query in QUERIES[lang]:
            vectors = handed[query] if handed is not None else None
            with Timer() as took:
                decision = retriever.decide(query, lang=lang, vectors=vectors)
            timings.append(took.elapsed * 1000)
            kinds[decision.kind] += 1
    return timings, kinds


def _shortlist_agreement(retriever: Retriever, lang: str) -> dict[str, float]:
    """The shares of queries whose decision and best score, and whose three best scores, are those of
    full scans over every vector (scores, not entries: the synthetic entries made from one real entry
    share its vectors, and often tie)."""
    index = retriever.indexes[lang]
    tuning = retriever.tuning_for(lang)
    decisions = scores_agree = 0
    for query in QUERIES[lang]:
        text = normalise_query(query)
        decision = retriever.decide(query, lang=lang)
        found = [hit.score for hit in decision.hits]
        # as a lookup makes the vectors (e5's in half precision), scored against every text
        scores = index.scores(text, retriever.query_vectors(text, index.dense))
        fused = np.sort(fuse(scores, {name: tuning.weight(name, retriever.signals) for name in scores}))[::-1]
        kind = retriever.kind(lang, [float(score) for score in fused[:3]])
        decisions += decision.kind == kind and abs(found[0] - fused[0]) < 1e-5
        scores_agree += bool(np.allclose(found, fused[:3], atol=1e-5))
    count = len(QUERIES[lang])
    return {
        "shortlist_decision_agreement": round(decisions / count, 3),
        "shortlist_top3_agreement": round(scores_agree / count, 3),
    }


def _encoding_ms(retriever: Retriever, lang: str) -> dict[str, float]:
    """The median time each model takes to encode one query: part of every lookup."""
    medians = {}
    for name, encoder in retriever.encoders.items():
        timings = []
        for query in QUERIES[lang]:
            with Timer() as took:
                encoder.encode_queries([query])
            timings.append(took.elapsed * 1000)
        medians[name] = round(percentile(timings, 50), 2)
    return medians


def run(*, quick: bool) -> list[Result]:
    count = 1000 if quick else 10_000
    rounds = 3 if quick else 10
    retriever, params = build(count)
    params["rounds"] = rounds
    handed = {lang: _nlu_vectors(retriever, lang) for lang in QUERIES}
    for lang in QUERIES:  # warm-up: the models' first calls, the allocator, the caches
        _time_queries(retriever, lang, 1, None)
    results: list[Result] = []
    for lang in QUERIES:
        timings, kinds = _time_queries(retriever, lang, rounds, handed[lang])
        encoding, encoding_kinds = _time_queries(retriever, lang, rounds, None)
        if encoding_kinds != kinds:
            raise RuntimeError(f"{lang}: the NLU's vectors changed decisions: {kinds} vs {encoding_kinds}")
        figures = {"p50": percentile(timings, 50), "p95": percentile(timings, 95)}
        language = params | {
            "queries": len(timings),
            "decisions": dict(kinds),
            "e5_vector": "the NLU's, handed over in the parse data as in the bot",
            "encoding_e5_too_p50_ms": round(percentile(encoding, 50), 2),
            "encoding_e5_too_p95_ms": round(percentile(encoding, 95), 2),
            "query_encoding_p50_ms": _encoding_ms(retriever, lang),
            **_shortlist_agreement(retriever, lang),
            "max_ms": round(max(timings), 2),
        }
        results += [
            Result(
                name=f"retrieval_{lang}_{q}",
                database="-",
                value=round(value, 2),
                unit="ms",
                target=TARGET_MS,
                comparison="<",
                params=language,
            )
            for q, value in figures.items()
        ]
    return results
