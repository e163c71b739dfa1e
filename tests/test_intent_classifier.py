"""E5IntentClassifier: training, persisting without pickle, loading, ranking, and awkward inputs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from nlu.features import MAX_TOKENS, e5_encoder, embed, truncate
from nlu.intent_classifier import E5IntentClassifier
from nlu.intent_model import SCOPE_SCORE_KEY, Decisions, Neighbours, ScopeRule, load_model

EXAMPLES = {
    "ask_hours": [
        "what time do you open",
        "opening hours",
        "when do you close tonight",
        "are you open on sunday",
        "library hours please",
        "图书馆几点开门",
        "周末开放吗",
        "今天几点关门",
        "开放时间是什么",
        "晚上开到几点",
    ],
    "renewal": [
        "can I renew my books",
        "renew my loan",
        "extend the due date",
        "I need more time with this book",
        "how do I renew online",
        "续借",
        "我想续借这本书",
        "怎么在网上续借",
        "借期可以延长吗",
        "续借几次",
    ],
    "greet": [
        "hello",
        "hi there",
        "good morning",
        "hey",
        "hi bot",
        "你好",
        "您好",
        "早上好",
        "嗨",
        "哈喽",
    ],
    "tech_services": [
        "wifi login",
        "how do I print",
        "is there a scanner",
        "can I connect to the wifi",
        "printer is not working",
        "无线网密码",
        "怎么打印",
        "有扫描仪吗",
        "无线网连不上",
        "打印机坏了",
    ],
}


def _context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "e5_intent_classifier")


def _training_data() -> TrainingData:
    return TrainingData(
        [Message.build(text=text, intent=intent) for intent, texts in EXAMPLES.items() for text in texts]
    )


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> ModelStorage:
    return LocalModelStorage.create(tmp_path_factory.mktemp("model-storage"))


@pytest.fixture(scope="module")
def resource(storage: ModelStorage) -> Resource:
    """A resource holding a classifier trained on EXAMPLES."""
    resource = Resource("e5_intent_classifier")
    classifier = E5IntentClassifier.create({}, storage, resource, _context())
    classifier.train(_training_data())
    return resource


def _load(storage: ModelStorage, resource: Resource, **config: Any) -> E5IntentClassifier:
    return E5IntentClassifier.load(config, storage, resource, _context())


def _parse(classifier: E5IntentClassifier, *texts: str) -> list[Message]:
    return classifier.process([Message(data={TEXT: text}) for text in texts])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what time does the library open on saturday", "ask_hours"),
        ("图书馆星期六几点开门", "ask_hours"),
        ("please renew my book", "renewal"),
        ("这本书能续借吗", "renewal"),
        ("hello there", "greet"),
        ("wifi login", "tech_services"),
    ],
)
def test_loaded_classifier_predicts_the_intent(
    storage: ModelStorage, resource: Resource, text: str, expected: str
) -> None:
    (message,) = _parse(_load(storage, resource), text)
    assert message.get(INTENT)["name"] == expected


def test_ranking_is_sorted_and_tops_with_the_intent(storage: ModelStorage, resource: Resource) -> None:
    (message,) = _parse(_load(storage, resource), "我想续借")
    ranking = message.get(INTENT_RANKING_KEY)
    confidences = [item["confidence"] for item in ranking]
    assert ranking[0]["name"] == "renewal"
    assert message.get(INTENT) == ranking[0]
    assert sorted({item["name"] for item in ranking}) == sorted(EXAMPLES)
    assert confidences == sorted(confidences, reverse=True)
    assert math.isclose(sum(confidences), 1.0, rel_tol=1e-6)
    assert all(isinstance(value, float) for value in confidences)
    assert "intent" in message.as_dict(only_output_properties=True)


def test_ranking_length_cuts_the_ranking(storage: ModelStorage, resource: Resource) -> None:
    (message,) = _parse(_load(storage, resource, ranking_length=2), "hello")
    assert len(message.get(INTENT_RANKING_KEY)) == 2


def test_model_is_stored_as_arrays_and_json_without_pickle(storage: ModelStorage, resource: Resource) -> None:
    with storage.read_from(resource) as directory:
        files = sorted(path.name for path in Path(directory).iterdir())
        assert files
        assert {Path(name).suffix for name in files} <= {".npy", ".json"}
        for name in files:
            if name.endswith(".npy"):
                assert np.load(Path(directory) / name, allow_pickle=False).dtype != object


def test_nearest_example_vote_favours_the_class_of_the_closest_example() -> None:
    vectors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.8, 0.6]], dtype=np.float16)
    neighbours = Neighbours(vectors, np.array([0, 1, 2]), temperature=0.01)
    close_to_second = np.array([[0.1, 0.99, 0.1]], dtype=np.float32)
    close_to_second /= np.linalg.norm(close_to_second)
    (row,) = neighbours.probabilities(close_to_second, 4)
    assert int(np.argmax(row)) == 1
    assert row[1] > 0.8  # a low temperature makes the closest class win clearly
    assert row[3] < 1e-6  # a class without examples gets (almost) nothing
    assert math.isclose(float(row.sum()), 1.0, rel_tol=1e-6)
    # A warmer temperature spreads the vote more evenly.
    (warm,) = Neighbours(vectors, np.array([0, 1, 2]), temperature=1.0).probabilities(close_to_second, 4)
    assert warm[1] < row[1]


def test_nearest_example_vote_takes_each_class_best_similarity() -> None:
    generator = np.random.default_rng(3)
    vectors = generator.standard_normal((300, 16)).astype(np.float16)
    labels = generator.integers(0, 7, 300)  # classes in no order, one of them (7) with no example
    queries = generator.standard_normal((5, 16)).astype(np.float32)
    similarity = queries @ vectors.astype(np.float32).T
    expected = np.full((5, 8), -1.0)
    for index in range(7):
        expected[:, index] = similarity[:, labels == index].max(axis=1)
    expected = np.exp((expected - expected.max(axis=1, keepdims=True)) / 0.5)
    expected /= expected.sum(axis=1, keepdims=True)
    got = Neighbours(vectors, labels, temperature=0.5).probabilities(queries, 8)
    assert np.allclose(got, expected, atol=1e-6)


def test_stored_model_keeps_the_nearest_example_vote(storage: ModelStorage, resource: Resource) -> None:
    texts = ["can I renew my books", "图书馆几点开门", "wifi login"]
    with storage.read_from(resource) as directory:
        model = load_model(Path(directory))
        assert (Path(directory) / "neighbour_vectors.npy").is_file()
    assert model.neighbours is not None
    assert model.neighbour_weight == E5IntentClassifier.get_default_config()["neighbour_weight"] > 0
    assert len(model.neighbours.labels) == sum(len(texts) for texts in EXAMPLES.values())
    vectors = embed(texts, max_chars=256, num_threads=1)
    with_vote = model.probabilities(texts, vectors)
    model.neighbours = None
    without_vote = model.probabilities(texts, vectors)
    # A training example's nearest neighbour is itself, so the vote raises its own intent's probability.
    intents = ["renewal", "ask_hours", "tech_services"]
    for row_with, row_without, intent in zip(with_vote, without_vote, intents, strict=True):
        index = model.classes.index(intent)
        assert row_with[index] > row_without[index]


def test_char_ngrams_can_be_switched_off(tmp_path: Path) -> None:
    storage = LocalModelStorage.create(tmp_path)
    resource = Resource("e5_only")
    E5IntentClassifier.create({"use_char_ngrams": False}, storage, resource, _context()).train(
        _training_data()
    )
    with storage.read_from(resource) as directory:
        assert not (Path(directory) / "char_coef.npy").exists()
        assert (Path(directory) / "neighbour_vectors.npy").exists()
    (message,) = _parse(_load(storage, resource, use_char_ngrams=False), "when do you open tomorrow")
    assert message.get(INTENT)["name"] == "ask_hours"


def test_nearest_example_vote_can_be_switched_off(tmp_path: Path) -> None:
    storage = LocalModelStorage.create(tmp_path)
    resource = Resource("no_vote")
    E5IntentClassifier.create({"neighbour_weight": 0.0}, storage, resource, _context()).train(
        _training_data()
    )
    with storage.read_from(resource) as directory:
        assert not (Path(directory) / "neighbour_vectors.npy").exists()
        assert load_model(Path(directory)).neighbours is None
    (message,) = _parse(_load(storage, resource, neighbour_weight=0.0), "这本书能续借吗")
    assert message.get(INTENT)["name"] == "renewal"


def test_untrained_classifier_leaves_messages_alone(tmp_path: Path) -> None:
    storage = LocalModelStorage.create(tmp_path)
    classifier = _load(storage, Resource("never_trained"))
    (message,) = _parse(classifier, "hello")
    assert message.get(INTENT) is None


def test_awkward_inputs_get_a_valid_intent(storage: ModelStorage, resource: Resource) -> None:
    texts = ["a" * 10_000, "续借" * 5_000, "?!续借", "😡 renew"]
    messages = _parse(_load(storage, resource), *texts)
    for message in messages:
        intent = message.get(INTENT)
        assert intent["name"] in EXAMPLES
        assert 0.0 <= intent["confidence"] <= 1.0
        assert math.isfinite(intent["confidence"])
        assert len(message.get(INTENT_RANKING_KEY)) == len(EXAMPLES)


@pytest.mark.parametrize("text", ["", "   \n", "🙂🙂🙂", "?!", "\u200b\u200b", "⭐⭐⭐", "___"])
def test_a_text_without_words_gets_no_intent_so_fallback_answers(
    storage: ModelStorage, resource: Resource, text: str
) -> None:
    (message,) = _parse(_load(storage, resource), text)
    assert message.get(INTENT) == {"name": None, "confidence": 0.0}
    assert message.get(INTENT_RANKING_KEY) == []


@pytest.mark.parametrize("text", ["a" * 10_000, "续借" * 5_000, "renew my book " * 700])
def test_long_text_is_cut_to_what_e5_reads(text: str) -> None:
    encoder = e5_encoder(1)
    short = truncate(text, max_chars=10_000, encoder=encoder)
    assert 0 < len(short) < len(text)
    assert encoder.token_count(short, True) <= MAX_TOKENS


def test_fallback_classifier_reads_the_prediction(storage: ModelStorage, resource: Resource) -> None:
    from rasa.nlu.classifiers.fallback_classifier import FallbackClassifier

    fallback = FallbackClassifier.create(
        {**FallbackClassifier.get_default_config(), "threshold": 0.5, "ambiguity_threshold": 0.0},
        storage,
        Resource("fallback"),
        _context(),
    )
    sure, empty = fallback.process(_parse(_load(storage, resource), "续借", ""))
    assert sure.get(INTENT)["name"] == "renewal"
    assert empty.get(INTENT)["name"] == "nlu_fallback"


def test_message_carries_its_e5_vector_for_the_knowledge_base(
    storage: ModelStorage, resource: Resource
) -> None:
    """The action server reuses the NLU's vector when retrieval reads the same text, and only then."""
    from bot.knowledge import query_vectors
    from bot.knowledge.encoders import MultilingualEncoder
    from bot.knowledge.text import normalise_query

    texts = ["How do I get on the  WiFi?", "图书馆的无线网怎么连接", "ＷｉＦｉ　密码？", "续借" * 200, "   "]
    messages = _parse(_load(storage, resource), *texts)
    fresh = MultilingualEncoder().encode_queries([normalise_query(t) for t in texts[:3]])
    for message, text, expected in zip(messages, texts, fresh, strict=False):
        vector = query_vectors.unpack(message.get(query_vectors.PARSE_KEY), normalise_query(text))
        assert vector is not None, text
        assert np.abs(vector - expected).max() < 2e-3  # half precision
        assert query_vectors.PARSE_KEY in message.as_dict(only_output_properties=True)
    # The NLU reads at most max_chars characters; retrieval reads the whole message, so encodes it anew.
    assert query_vectors.unpack(messages[3].get(query_vectors.PARSE_KEY), normalise_query(texts[3])) is None
    assert messages[4].get(query_vectors.PARSE_KEY) is None  # nothing was encoded


def test_scope_rule_adds_the_nearest_example_margin_to_the_out_of_scope_probability() -> None:
    # Classes: 0 hours, 1 out_of_scope, 2 renewal.
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.6, 0.3]])
    closest = np.array([[0.9, 0.5, 0.3], [0.6, 0.8, 0.5], [0.5, 0.7, 0.75]])
    scores = ScopeRule(weight=2.0, threshold=0.2).scores(probabilities, closest, 1)
    assert np.allclose(scores, [0.2 + 2 * (0.5 - 0.9), 0.1 + 2 * (0.8 - 0.6), 0.6 + 2 * (0.7 - 0.75)])


def test_scope_rule_decides_by_its_score_not_by_the_most_probable_intent() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.6, 0.3], [0.05, 0.9, 0.05]])
    scores = np.array([-0.6, 0.5, 0.1, 1.7])
    chosen, confidence = ScopeRule(weight=2.0, threshold=0.2).decide(probabilities, scores, 1)
    # Out of scope at or above the threshold, though hours was the most probable; below it the
    # most probable in-scope intent, though out_of_scope was the most probable; the confidence of a
    # refusal is its score, at most 1.
    assert chosen == [0, 1, 2, 1]
    assert confidence == [0.7, 0.5, 0.3, 1.0]


def test_ranking_puts_the_decision_first_and_nothing_above_it() -> None:
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.1, 0.4]])
    decisions = Decisions([2, 1], [0.3, 0.5], probabilities, np.array([0.1, 0.5]), outside=1)
    # out_of_scope is listed with its score (0.1), not its probability (0.6), which would have
    # ranked it above the decision and made FallbackClassifier read the pair as ambiguous.
    assert decisions.ranking(0, 0) == [(2, 0.3), (0, 0.1), (1, 0.1)]
    assert decisions.ranking(1, 2) == [(1, 0.5), (0, 0.5)]


OUT_OF_SCOPE_EXAMPLES = [
    "what is the weather tomorrow",
    "tell me a joke",
    "who won the football match",
    "book me a flight to paris",
    "what is the capital of france",
    "recommend a restaurant nearby",
    "明天天气怎么样",
    "讲个笑话",
    "帮我订机票",
    "附近有什么好吃的",
]


def _trained_with_out_of_scope(tmp_path: Path, config: dict[str, Any]) -> tuple[ModelStorage, Resource]:
    storage = LocalModelStorage.create(tmp_path)
    resource = Resource("with_out_of_scope")
    data = TrainingData(
        _training_data().training_examples
        + [Message.build(text=text, intent="out_of_scope") for text in OUT_OF_SCOPE_EXAMPLES]
    )
    E5IntentClassifier.create(config, storage, resource, _context()).train(data)
    return storage, resource


def test_trained_scope_rule_refuses_what_is_like_out_of_scope_examples(tmp_path: Path) -> None:
    config = {"scope_weight": 2.0, "scope_threshold": 0.2}
    storage, resource = _trained_with_out_of_scope(tmp_path, config)
    with storage.read_from(resource) as directory:
        model = load_model(Path(directory))
    assert model.scope == ScopeRule(2.0, 0.2)
    weather, renew = _parse(
        _load(storage, resource), "what will the weather be like on friday", "我想续借这本书"
    )
    threshold = config["scope_threshold"]
    assert weather.get(INTENT)["name"] == "out_of_scope"
    assert weather.get(SCOPE_SCORE_KEY) >= threshold
    assert renew.get(INTENT)["name"] == "renewal"
    assert renew.get(SCOPE_SCORE_KEY) < threshold
    for message in (weather, renew):
        ranking = message.get(INTENT_RANKING_KEY)
        assert ranking[0] == message.get(INTENT)
        assert all(item["confidence"] <= ranking[0]["confidence"] for item in ranking)
        assert SCOPE_SCORE_KEY in message.as_dict(only_output_properties=True)


def test_scope_rule_is_off_unless_asked_for(tmp_path: Path) -> None:
    storage, resource = _trained_with_out_of_scope(tmp_path, {})
    with storage.read_from(resource) as directory:
        assert load_model(Path(directory)).scope is None
    (message,) = _parse(_load(storage, resource), "续借")
    assert message.get(INTENT)["name"] == "renewal"
    assert message.get(SCOPE_SCORE_KEY) is None


def _guarded(intent: str, confidence: float) -> Message:
    from nlu.components import ConsequenceGuard

    message = Message(data={TEXT: "x"})
    message.set(INTENT, {"name": intent, "confidence": confidence})
    message.set(INTENT_RANKING_KEY, [{"name": intent, "confidence": confidence}])
    guard = ConsequenceGuard.create(
        ConsequenceGuard.get_default_config(), None, Resource("guard"), _context()
    )
    (processed,) = guard.process([message])
    return processed


@pytest.mark.parametrize("intent", ["unsubscribe", "subscribe", "complaint", "suggestion", "human_handoff",
                                    "privacy_delete", "give_feedback"])  # fmt: skip
def test_a_doubtful_intent_that_changes_something_becomes_a_fallback(intent: str) -> None:
    doubtful = _guarded(intent, 0.28)
    assert doubtful.get(INTENT) == {"name": "nlu_fallback", "confidence": 0.3}
    assert [r["name"] for r in doubtful.get(INTENT_RANKING_KEY)] == ["nlu_fallback", intent]
    assert _guarded(intent, 0.31).get(INTENT)["name"] == intent


@pytest.mark.parametrize("intent", ["renewal", "ask_hours", "greet", "cancel", "thanks"])
def test_a_doubtful_answer_is_still_given(intent: str) -> None:
    assert _guarded(intent, 0.2).get(INTENT) == {"name": intent, "confidence": 0.2}


def _guarded_text(text: str, ranking: list[tuple[str, float]]) -> Message:
    from nlu.components import ConsequenceGuard

    message = Message(data={TEXT: text})
    message.set(INTENT, {"name": ranking[0][0], "confidence": ranking[0][1]})
    message.set(INTENT_RANKING_KEY, [{"name": name, "confidence": score} for name, score in ranking])
    guard = ConsequenceGuard.create(
        ConsequenceGuard.get_default_config(), None, Resource("guard"), _context()
    )
    (processed,) = guard.process([message])
    return processed


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("The librarian at the desk was super helpful today", "complaint"),
        ("馆员今天特别耐心，帮了我很多", "human_handoff"),
    ],
)
def test_praise_taken_for_a_complaint_or_a_handoff_is_thanks(text: str, intent: str) -> None:
    assert _guarded_text(text, [(intent, 0.35), ("thanks", 0.3)]).get(INTENT)["name"] == "thanks"


def test_fault_found_with_kind_words_stays_a_complaint() -> None:
    text = "the staff were kind but the wifi on floor 3 is broken"
    assert _guarded_text(text, [("complaint", 0.6), ("thanks", 0.2)]).get(INTENT)["name"] == "complaint"


@pytest.mark.parametrize(
    "text", ["My friend said the printers are broken, is that true?", "听说打印机坏了，是真的吗？"]
)
def test_a_complaint_that_asks_about_a_fault_is_the_question_it_asks(text: str) -> None:
    asked = _guarded_text(text, [("complaint", 0.7), ("suggestion", 0.1), ("tech_services", 0.1)])
    assert asked.get(INTENT)["name"] == "tech_services"


def test_a_complaint_that_asks_for_a_fix_stays_a_complaint() -> None:
    text = "阅览室空调太冷了，能不能调高一点？"
    asked_for = _guarded_text(text, [("complaint", 0.7), ("study_spaces", 0.2)])
    assert asked_for.get(INTENT)["name"] == "complaint"


def test_an_acknowledgement_taken_for_goodbye_is_thanks() -> None:
    assert _guarded_text("alright then", [("goodbye", 0.6), ("thanks", 0.3)]).get(INTENT)["name"] == "thanks"


def test_a_complaint_left_for_a_rating_is_feedback() -> None:
    wanted = _guarded_text(
        "actually I'd rather just give feedback", [("complaint", 0.5), ("give_feedback", 0.4)]
    )
    assert wanted.get(INTENT)["name"] == "give_feedback"
