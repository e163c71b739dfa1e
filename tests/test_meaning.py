"""Reading what the patron meant: typed button titles, languages, someone else's type, other cancels."""

from __future__ import annotations

import pytest

from actions.relationship import cancels_something_else
from bot.engagement.feedback import is_affirmation, rating_correction, rating_in_request
from bot.engagement.profile import described_patron_type
from bot.language import detect_language, requested_language
from connectors.typed_buttons import offered_buttons, typed_payload

CONSENT_BUTTONS = [
    {"title": "Yes, please", "payload": "/subscribe"},
    {"title": "No thanks", "payload": "/unsubscribe"},
]
BILINGUAL = [
    {"title": "好的 / Yes", "payload": "/subscribe"},
    {"title": "不用了 / No", "payload": "/unsubscribe"},
]
TYPES = [{"title": "Postgraduate", "payload": '/inform_profile{"patron_type": "postgraduate"}'}]


@pytest.mark.parametrize(
    ("typed", "buttons", "payload"),
    [
        ("Yes, please", CONSENT_BUTTONS, "/subscribe"),
        ("yes please!", CONSENT_BUTTONS, "/subscribe"),
        ("No thanks", CONSENT_BUTTONS, "/unsubscribe"),
        ("no", CONSENT_BUTTONS, "/unsubscribe"),
        ("nope, not for me", CONSENT_BUTTONS, "/unsubscribe"),
        ("好的，谢谢", BILINGUAL, "/subscribe"),
        ("不用了", BILINGUAL, "/unsubscribe"),
        ("好的", BILINGUAL, "/subscribe"),
        ("Yes", BILINGUAL, "/subscribe"),
        ("postgraduate", TYPES, '/inform_profile{"patron_type": "postgraduate"}'),
        # Not a title, or no such buttons: the message as it came.
        ("yes", TYPES, None),
        ("no, I meant the other library", CONSENT_BUTTONS, None),
        ("how do I renew", CONSENT_BUTTONS, None),
        ("好的", [], None),
    ],
)
def test_a_typed_button_title_means_the_button(
    typed: str, buttons: list[dict[str, str]], payload: str | None
) -> None:
    assert typed_payload(typed, buttons) == payload


def test_only_the_buttons_offered_since_the_patron_last_wrote_count() -> None:
    events = [
        {"event": "bot", "data": {"buttons": TYPES}},
        {"event": "user", "text": "x"},
        {"event": "bot", "text": "answer", "data": {}},
        {"event": "bot", "text": "May we?", "data": {"buttons": CONSENT_BUTTONS}},
    ]
    assert offered_buttons(events) == CONSENT_BUTTONS


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Please buy the novel 百年孤独", "en"),
        ("我想借 Introduction to Algorithms", "zh"),
        ("图书馆 wifi 密码?", "zh"),
        ("stop", None),
        ('/give_feedback{"csat": "4"}', None),
        ("English please", "en"),
        ("请用英文回答", "en"),
        ("可以说中文吗", "zh"),
        ("can you answer in Chinese", "zh"),
    ],
)
def test_the_language_is_the_one_the_patron_writes_or_asks_for(text: str, language: str | None) -> None:
    assert detect_language(text) == language


def test_a_message_that_names_both_languages_asks_for_neither() -> None:
    assert requested_language("English or Chinese, either is fine") is None


@pytest.mark.parametrize(
    ("text", "asked", "patron_type"),
    [
        ("I'm asking on behalf of my professor", False, None),
        ("我帮我们老师问一下，老师能借几本书", False, None),
        ("my supervisor asked me to check", True, None),
        ("I'm a postgraduate", False, "postgraduate"),
        ("帮我查一下，我是研究生", False, "postgraduate"),
        ("研究生", True, "postgraduate"),
        ("研究生", False, None),
    ],
)
def test_only_the_patrons_own_type_is_kept(text: str, asked: bool, patron_type: str | None) -> None:
    assert described_patron_type(text, asked=asked) == patron_type


@pytest.mark.parametrize(
    ("text", "other"),
    [("取消我的荐购", True), ("cancel my hold", True), ("取消订阅", False), ("stop", False),
     ("cancel my subscription to library news", False), ("unsubscribe me from emails", False)],
)  # fmt: skip
def test_cancelling_something_else_is_not_unsubscribing(text: str, other: bool) -> None:
    assert cancels_something_else(text) is other


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("I'd like to give feedback: 5 stars, great service", 5),
        ("我要给图书馆打5分", 5),
        ("评价一下，给个4星吧", 4),
        ("4/5", 4),
        ("5", 5),
        ("I want to give feedback", None),
        ("我要评价", None),
        ("3 stars for the staff, 5 for the building", None),
    ],
)
def test_a_rating_in_the_opening_message_is_the_answer(text: str, rating: int | None) -> None:
    assert rating_in_request(text) == rating


@pytest.mark.parametrize(("text", "rating"), [("不对，改成3分", 3), ("sorry, make that 3 stars", 3)])
def test_a_correction_may_open_with_several_words(text: str, rating: int) -> None:
    assert rating_correction(text) == rating


@pytest.mark.parametrize(("text", "yes"), [("yes", True), ("好的", True), ("delete", False), ("no", False)])
def test_a_bare_yes_is_an_affirmation(text: str, yes: bool) -> None:
    assert is_affirmation(text) is yes


@pytest.mark.parametrize(
    ("text", "ack"),
    [
        ("ok", True),
        ("alright then", True),
        ("好的呢", True),
        ("ok bye", False),
        # With thanks or praise, still only an acknowledgement (issue 23: "ok great" was greeted).
        ("ok great", True),
        ("got it thanks", True),
        ("嗯嗯好", True),
        ("好的谢谢", True),
        ("good morning", False),
        ("ok and what about e-books", False),
        ("sure, book it", False),
    ],
)
def test_a_bare_acknowledgement_is_not_goodbye(text: str, ack: bool) -> None:
    from bot.language import is_acknowledgement

    assert is_acknowledgement(text) is ack


@pytest.mark.parametrize(
    ("text", "cancel"),
    [
        ("nah, never mind then", True),
        ("算了算了", True),
        ("never mind the noise, the lockers on floor 2 are broken", False),
    ],
)
def test_a_short_message_that_says_never_mind_leaves_the_form(text: str, cancel: bool) -> None:
    from bot.engagement.feedback import is_cancel

    assert is_cancel(text) is cancel


@pytest.mark.parametrize(
    ("text", "asks"),
    [("My friend said the printers are broken, is that true?", True), ("打印机是不是坏了？", True),
     ("why is the wifi always down", False), ("能不能把空调调高一点？", False),
     ("经济学教材能多采购几本吗", False),
     ("could the library get more copies of the statistics textbook?", False),
     ("图书馆会买这本新书吗", False)],
)  # fmt: skip
def test_a_request_phrased_as_a_question_is_not_asking_about_a_fault(text: str, asks: bool) -> None:
    from bot.language import asks_about_it

    assert asks_about_it(text) is asks
