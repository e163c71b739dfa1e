"""The thread of a conversation read from its events: what a follow-up continues, and what it may not."""

from __future__ import annotations

from typing import Any

from bot.thread import (
    awaiting_answer,
    combined_query,
    is_fragment,
    points_back,
    previous_question,
    report_just_recorded,
    told_patron_type,
)


def user(text: str, intent: str, **parse: Any) -> dict[str, Any]:
    return {"event": "user", "text": text, "parse_data": {"intent": {"name": intent}, **parse}}


def bot(response: str) -> dict[str, Any]:
    return {"event": "bot", "text": "…", "metadata": {"utter_action": response}}


START = [{"event": "action", "name": "action_session_start"}, {"event": "session_started"}]


def test_the_previous_question_is_the_thread() -> None:
    events = [*START, user("Can I return books when the library is closed?", "returns"), bot("x")]
    thread = previous_question(events)
    assert thread is not None
    assert (thread.intent, thread.query) == ("returns", "Can I return books when the library is closed?")
    assert (
        combined_query(thread, " where is it ")
        == "Can I return books when the library is closed? where is it"
    )


def test_taps_and_acknowledgements_between_do_not_end_the_thread() -> None:
    events = [
        *START,
        user("怎么申请馆际互借", "interlibrary_loan"),
        user('/give_feedback{"helpful":"yes"}', "give_feedback"),
    ]
    events.append(user("好的", "thanks"))
    thread = previous_question(events)
    assert thread is not None
    assert thread.intent == "interlibrary_loan"


def test_no_thread_after_never_mind_out_of_scope_a_misunderstanding_or_a_new_session() -> None:
    asked = user("how do I renew my books", "renewal")
    for ended in ("cancel", "out_of_scope", "nlu_fallback", "complaint"):
        assert previous_question([*START, asked, user("whatever", ended)]) is None
    # The session expired after the question: the new session starts without it.
    assert previous_question([*START, asked, bot("x"), *START]) is None
    assert previous_question([]) is None


def test_a_resolved_follow_up_carries_the_thread_on() -> None:
    first = user("现在在办什么展览", "events")
    second = user("要买票吗", "events", thread={"query": "现在在办什么展览 要买票吗"})
    thread = previous_question([*START, first, second])
    assert thread is not None
    assert thread.query == "现在在办什么展览 要买票吗"


def test_the_report_recorded_in_the_latest_turn() -> None:
    recorded = [
        *START,
        user("阅览室空调太冷了", "complaint"),
        {"event": "slot", "name": "last_report", "value": "12"},
        bot("utter_report_recorded"),
    ]
    assert report_just_recorded(recorded) == "12"
    # One message later, or in a new session, it is no longer the latest turn's.
    assert report_just_recorded([*recorded, user("thanks", "thanks"), bot("utter_youre_welcome")]) is None
    assert report_just_recorded([*recorded, *START]) is None


def test_the_patron_type_told_earlier_not_one_named_for_someone_else() -> None:
    told = [*START, user("我是研究生，能借几本书？", "borrowing_rules"), user("借期多长", "borrowing_rules")]
    assert told_patron_type(told) == "postgraduate"
    for_someone = [*START, user("I'm asking on behalf of my professor", "inform_profile")]
    assert told_patron_type(for_someone) is None
    # Asked about, not said of oneself.
    assert told_patron_type([*START, user("how many books can postgrads borrow", "borrowing_rules")]) is None
    assert told_patron_type([*START, user("我是研究生", "inform_profile"), *START]) is None


def test_what_points_back_and_what_stands_alone() -> None:
    for text in ("where is it", "what about e-books?", "and at the weekend?", "那续借呢", "要多久", "它在哪"):
        assert points_back(text), text
    for text in (
        "are there lockers i can use",
        "how do i connect to the wifi",
        "图书馆的wifi怎么连",
        "/greet",
    ):
        assert not points_back(text), text
    assert is_fragment("which floor")
    assert is_fragment("在几楼")
    assert not is_fragment("存包的柜子在哪")
    assert not is_fragment("what is the fine for overdue books")


def test_a_reply_to_the_bots_own_question_is_an_answer_not_a_follow_up() -> None:
    asked = [*START, user("how many books can I borrow", "borrowing_rules"), bot("utter_ask_patron_type")]
    assert awaiting_answer(asked)
    in_form = [
        *START,
        user("I want to give feedback", "give_feedback"),
        {"event": "active_loop", "name": "feedback_form"},
    ]
    assert awaiting_answer(in_form)
    answered = [*START, user("how do I renew", "renewal"), bot("")]
    assert not awaiting_answer(answered)
    assert not awaiting_answer([*START, *in_form[2:], {"event": "active_loop", "name": None}])
