"""Campaign messages: rendering a patron's fields, the fallback language, the opt-out line, channel limits."""

from __future__ import annotations

import pytest

from bot.crm.models import Patron
from bot.outreach.messages import (
    LIMITS,
    OPT_OUT_HINTS,
    TemplateError,
    button_titles,
    campaign_text,
    fits,
    longest_text,
    patron_fields,
    render,
    template_fields,
    with_opt_out,
)

BOTH = {
    "en": "Hello {display_name}, the workshop is on 1 March.",
    "zh": "{display_name}您好，讲座 3 月 1 日举行。",
}


def test_render_uses_the_patrons_name_in_their_language() -> None:
    assert render(campaign_message=BOTH, language="en", fields={"display_name": "Ada"}) == (
        "en",
        "Hello Ada, the workshop is on 1 March.",
    )
    assert render(campaign_message=BOTH, language="zh", fields={"display_name": "李华"}) == (
        "zh",
        "李华您好，讲座 3 月 1 日举行。",
    )


def test_render_without_a_name_says_reader_in_the_language_used() -> None:
    assert render(campaign_message=BOTH, language="en", fields={})[1].startswith("Hello reader,")
    assert render(campaign_message=BOTH, language="zh", fields={"display_name": "  "})[1].startswith(
        "读者您好"
    )


def test_render_falls_back_to_the_other_language() -> None:
    english_only = {"en": "Hi {display_name}"}
    chinese_only = {"zh": "{display_name}您好"}
    assert render(campaign_message=english_only, language="zh", fields={}) == ("en", "Hi reader")
    assert render(campaign_message=chinese_only, language="en", fields={"display_name": "Ada"}) == (
        "zh",
        "Ada您好",
    )
    # A regional tag is the language itself; an unknown language gets Chinese first.
    assert render(campaign_message=BOTH, language="en-GB", fields={})[0] == "en"
    assert render(campaign_message=BOTH, language=None, fields={})[0] == "zh"


def test_patron_type_is_a_word_in_the_message_language() -> None:
    message = {
        "en": "As a {patron_type}, you may borrow 20 books.",
        "zh": "作为{patron_type}，您可借 20 册。",
    }
    fields = patron_fields(Patron(display_name="Ada", patron_type="postgraduate"))
    assert fields == {"display_name": "Ada", "patron_type": "postgraduate"}
    assert (
        render(campaign_message=message, language="en", fields=fields)[1]
        == "As a postgraduate, you may borrow 20 books."
    )
    assert render(campaign_message=message, language="zh", fields=fields)[1] == "作为研究生，您可借 20 册。"
    assert (
        render(campaign_message=message, language="zh", fields=patron_fields(Patron()))[1]
        == "作为读者，您可借 20 册。"
    )


def test_a_name_with_braces_is_shown_as_written() -> None:
    _used, text = render(campaign_message=BOTH, language="en", fields={"display_name": "{patron_type}"})
    assert text == "Hello {patron_type}, the workshop is on 1 March."


def test_every_campaign_text_ends_with_the_opt_out_line_in_the_patrons_language() -> None:
    used, text = campaign_text(campaign_message=BOTH, language="zh", fields={})
    assert used == "zh"
    assert text.splitlines()[-1] == OPT_OUT_HINTS["zh"]
    assert "退订" in text
    assert "暂停推送" in text
    used, text = campaign_text(campaign_message=BOTH, language="en", fields={})
    assert text.splitlines()[-1] == "Reply STOP to stop these messages, or PAUSE to pause them for 30 days."
    assert with_opt_out("Hi\n", "en") == "Hi\n\n" + OPT_OUT_HINTS["en"]


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("Hi {display_name.upper}", "reaches into"),
        ("Hi {display_name[0]}", "reaches into"),
        ("Hi {display_name!r}", "without a conversion"),
        ("Hi {display_name:>300}", "without a conversion"),
        ("Hi {first_name}", "not a field"),
        ("Hi {}", "must be named"),
        ("Hi {0}", "must be named"),
        ("Hi {display_name", "braces do not pair"),
    ],
)
def test_unsafe_or_unknown_fields_are_refused(template: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as error:
        template_fields(template)
    assert fragment in str(error.value)


def test_literal_braces_are_allowed() -> None:
    assert template_fields("{{not a field}} {display_name}") == ["display_name"]
    assert (
        render(campaign_message={"en": "{{x}} {display_name}"}, language="en", fields={})[1] == "{x} reader"
    )


def test_wechat_counts_bytes_so_chinese_fills_it_three_times_faster() -> None:
    chinese = "书" * 700  # 700 characters, 2,100 bytes
    assert not fits(chinese, "wechat")
    assert fits(chinese, "telegram")
    assert fits("书" * 682, "wechat")  # 2,046 bytes
    assert fits("b" * 2048, "wechat")
    assert not fits("b" * 2049, "wechat")
    assert fits("b" * 4096, "telegram")
    assert not fits("b" * 4097, "telegram")
    assert set(LIMITS) == {"telegram", "wechat", "webchat", "rest"}


def test_longest_text_counts_a_long_name_the_buttons_and_the_opt_out_line() -> None:
    text = longest_text("{display_name}您好", "zh", ["我要报名", "不了"])
    assert text.endswith("1. 我要报名\n2. 不了")
    assert OPT_OUT_HINTS["zh"] in text
    assert len(text) > 129  # the longest plausible name is 129 characters


def test_button_titles_are_rasa_buttons_in_the_language() -> None:
    buttons = [
        {"title": {"en": "Sign me up", "zh": "我要报名"}, "payload": "/affirm"},
        {"title": {"en": "No thanks"}, "payload": "/deny"},
    ]
    assert button_titles(buttons, "zh") == [
        {"title": "我要报名", "payload": "/affirm"},
        {"title": "No thanks", "payload": "/deny"},
    ]
    assert button_titles(buttons, "en")[0] == {"title": "Sign me up", "payload": "/affirm"}
    assert button_titles(None, "en") == []
