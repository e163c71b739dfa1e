"""The questions the bot could not answer: chosen in SQL (answered, purged and old ones left out) and
clustered by meaning with the real multilingual e5, across Chinese and English."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import Conversation, Interaction, Patron, utcnow
from bot.engagement.unanswered import (
    RememberingEncoder,
    UnansweredQuestion,
    cluster_questions,
    unanswered_questions,
)
from bot.knowledge.encoders import MultilingualEncoder


class CountingEncoder:
    """The real e5, counting the texts it is asked to encode."""

    def __init__(self) -> None:
        self.model = MultilingualEncoder()
        self.texts = 0

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.texts += len(texts)
        return self.model.encode_queries(texts)

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.model.encode_passages(texts)


def _asked(texts: list[str]) -> list[UnansweredQuestion]:
    now = utcnow()
    return [
        UnansweredQuestion(interaction_id=i, patron_id=i % 3 + 1, text=text, language=None, occurred_at=now)
        for i, text in enumerate(texts, start=1)
    ]


def test_questions_that_mean_the_same_cluster_together_across_languages() -> None:
    counting = CountingEncoder()
    encoder = RememberingEncoder(counting)
    asked = _asked(
        ["几点关门", "what time do you close", "What time do you close", "我的卡丢了", "校园卡丢了怎么办",
         "I lost my library card", "能带狗进图书馆吗", "are dogs allowed"]
    )  # fmt: skip
    clusters = cluster_questions(asked, encoder=encoder)
    where = {example: index for index, cluster in enumerate(clusters) for example in cluster.examples}
    assert where["几点关门"] == where["what time do you close"]
    assert where["我的卡丢了"] == where["校园卡丢了怎么办"] == where["I lost my library card"]
    assert where["我的卡丢了"] != where["几点关门"]
    assert where["能带狗进图书馆吗"] == where["are dogs allowed"] != where["几点关门"]
    closing = clusters[where["几点关门"]]
    assert closing.count == 3  # the two phrasings that differ only in case are one, asked twice
    assert set(closing.languages) == {"zh", "en"}
    encoded = counting.texts
    assert encoded > 0
    again = cluster_questions(asked, encoder=encoder)
    assert counting.texts == encoded  # remembered: nothing encoded again
    assert [cluster.examples for cluster in again] == [cluster.examples for cluster in clusters]


def test_a_cluster_says_how_often_by_whom_and_offers_same_language_alternatives() -> None:
    asked = _asked(["我的卡丢了", "校园卡丢了怎么办", "I lost my library card", "我的卡丢了"])
    [lost] = cluster_questions(asked, encoder=RememberingEncoder(MultilingualEncoder()))
    assert (lost.count, lost.patrons) == (4, 3)
    assert lost.representative in lost.examples
    assert lost.examples[0] == lost.representative
    assert len(set(lost.examples)) == 3
    assert all(
        (text in ("我的卡丢了", "校园卡丢了怎么办")) == (lost.language == "zh") for text in lost.alternatives
    )
    assert sorted(lost.shown_patrons) == [1, 2, 3]


def _conversation(crm: Engine) -> tuple[int, int]:
    with session_scope(crm) as session:
        patron = Patron(language="zh")
        session.add(patron)
        session.flush()
        conversation = Conversation(patron_id=patron.id, channel="telegram", rasa_sender_id="telegram:1")
        session.add(conversation)
        session.flush()
        return int(patron.id), int(conversation.id)


def test_only_unanswered_unpurged_questions_of_the_period_are_chosen(crm: Engine) -> None:
    patron_id, conversation_id = _conversation(crm)
    now = utcnow()
    said: list[tuple[str, str | None, str | None, str | None, dt.timedelta]] = [
        # (direction, text, intent, produced_by, how long ago)
        ("in", "几点关门", "ask_faq", None, dt.timedelta(days=1, minutes=10)),
        ("out", "抱歉，这个问题我还不知道答案", None, "utter_faq_unknown", dt.timedelta(days=1, minutes=9)),
        ("in", "怎么续借", "ask_faq", None, dt.timedelta(days=1, minutes=8)),
        ("out", "在我的图书馆里续借", None, "action_answer_faq", dt.timedelta(days=1, minutes=7)),
        ("in", None, "ask_faq", None, dt.timedelta(days=1, minutes=6)),  # purged
        ("out", "您是想问：", None, "utter_faq_did_you_mean", dt.timedelta(days=1, minutes=5)),
        ("in", "blorp", "nlu_fallback", None, dt.timedelta(days=1, minutes=4)),
        ("out", "Sorry, I didn't understand that.", None, "utter_default", dt.timedelta(days=1, minutes=3)),
        ("in", "the seats are dirty", "nlu_fallback", None, dt.timedelta(hours=5)),  # a form's answer
        ("out", "Thank you for the comment", None, "action_submit_feedback", dt.timedelta(hours=4)),
        ("in", "能带狗吗", "ask_faq", None, dt.timedelta(days=40)),  # before the period
        (
            "out",
            "您是想问：",
            None,
            "utter_faq_did_you_mean",
            dt.timedelta(days=40) - dt.timedelta(minutes=1),
        ),
        ("in", "where can I park", "nlu_fallback", None, dt.timedelta(minutes=2)),  # no reply (yet)
    ]
    with session_scope(crm) as session:
        for number, (direction, text, intent, producer, ago) in enumerate(said):
            session.add(
                Interaction(
                    patron_id=patron_id,
                    conversation_id=conversation_id,
                    channel="telegram",
                    direction=direction,
                    text=text,
                    intent=intent,
                    produced_by=producer,
                    event_key=f"test:{number}",
                    occurred_at=now - ago,
                )
            )
    with session_scope(crm) as session:
        recent = [question.text for question in unanswered_questions(session=session)]
        longer = [question.text for question in unanswered_questions(session=session, days=60)]
        latest = [question.text for question in unanswered_questions(session=session, limit=2)]
    assert recent == ["where can I park", "blorp", "几点关门"]
    assert longer == [*recent, "能带狗吗"]
    assert latest == ["where can I park", "blorp"]
