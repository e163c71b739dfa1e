"""The patron-relationship actions against a real CRM: feedback, complaints, handoff, profile, erasure."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actions import handoff
from actions.crm import crm_engine
from actions.feedback import ActionRecordHelpful, ActionSubmitFeedback, ValidateFeedbackForm
from actions.handoff import ActionCheckHandoff, ActionFallback, ActionHandoff, ActionStaffRelay
from actions.privacy import ActionEraseMyData, ValidateDeleteForm
from actions.profile import ActionSaveProfile
from actions.reports import ActionStartReport, ActionSubmitReport, ValidateReportForm
from bot.channels.quiet import QUIET
from bot.crm.models import ChannelIdentity, Consent, Escalation, Feedback, Interaction, Patron, Suggestion
from bot.crm.patrons import PatronKey
from bot.engagement.escalations import resolve_escalation, staff_reply
from bot.privacy.requests import ErasureRound, carry_out, note_requests, pending_patrons

# A Wednesday 10:00 and 22:00 in Shanghai (the facts file's time zone): staffed, and not.
STAFFED = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
UNSTAFFED = dt.datetime(2026, 11, 25, 14, 0, tzinfo=dt.UTC)


@pytest.fixture
def crm_for_actions(crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    crm_engine.cache_clear()
    monkeypatch.setattr(handoff, "_now", lambda: STAFFED)
    yield crm
    crm_engine().dispose()
    crm_engine.cache_clear()


def make_tracker(
    text: str,
    *,
    intent: str = "give_feedback",
    entities: dict[str, str] | None = None,
    slots: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    sender: str = "rest:patron-1",
    message_id: str | None = None,
) -> Tracker:
    return Tracker(
        sender_id=sender,
        slots={"language": None, **(slots or {})},
        latest_message={
            "text": text,
            "intent": {"name": intent, "confidence": 0.99},
            "entities": [{"entity": k, "value": v} for k, v in (entities or {}).items()],
            **({"message_id": message_id} if message_id else {}),
        },
        events=events or [],
        paused=False,
        followup_action=None,
        active_loop={},
        latest_action_name="action_listen",
    )


def run(action: Any, tracker: Tracker) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    dispatcher = CollectingDispatcher()
    events = action.run(dispatcher, tracker, {})
    if asyncio.iscoroutine(events):
        events = asyncio.run(events)
    return events, dispatcher.messages


def rows(crm: Engine, model: Any) -> list[Any]:
    with Session(crm, future=True) as session:
        return list(session.execute(select(model).order_by(model.id)).scalars())


def slot_values(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {event["name"]: event["value"] for event in events if event.get("event") == "slot"}


def test_did_this_help_is_recorded_with_the_answer_topic(crm_for_actions: Engine) -> None:
    _, yes = run(
        ActionRecordHelpful(),
        make_tracker("/give_feedback", entities={"helpful": "yes"}, slots={"last_faq": "renew-online"}),
    )
    _, no = run(ActionRecordHelpful(), make_tracker("/give_feedback", entities={"helpful": "no"}))
    assert yes[0]["response"] == "utter_helpful_thanks"
    assert no[0]["response"] == "utter_helpful_sorry"
    feedback = rows(crm_for_actions, Feedback)
    assert [(f.helpful, f.csat) for f in feedback] == [(True, None), (False, None)]
    assert feedback[0].topic == "renewal"
    assert feedback[1].topic is None


def test_a_second_tap_on_the_same_answer_changes_it_instead_of_counting_twice(
    crm_for_actions: Engine,
) -> None:
    from bot.crm.database import session_scope
    from bot.engagement.feedback import HELPFUL_WINDOW, record_helpful

    about: str | None = None  # the slot that remembers which answer the last tap was under
    for tapped_value in ("yes:renew-online", "yes:renew-online", "no:renew-online", "yes:wifi"):
        tap = make_tracker(
            "/give_feedback", entities={"helpful": tapped_value}, slots={"helpful_about": about}
        )
        events, _ = run(ActionRecordHelpful(), tap)
        about = slot_values(events)["helpful_about"]
    assert [(f.topic, f.helpful) for f in rows(crm_for_actions, Feedback)] == [
        ("renewal", False),
        ("tech_services", True),
    ]
    # 👍 under another answer of the same topic is an answer of its own, not a change of the first.
    tap = make_tracker(
        "/give_feedback", entities={"helpful": "yes:renewal-limits"}, slots={"helpful_about": about}
    )
    run(ActionRecordHelpful(), tap)
    assert [(f.topic, f.helpful) for f in rows(crm_for_actions, Feedback)][-1] == ("renewal", True)
    assert len(rows(crm_for_actions, Feedback)) == 3
    # Much later, the same answer found helpful again is a new answer.
    first = rows(crm_for_actions, Feedback)[0]
    later = first.created_at + HELPFUL_WINDOW + dt.timedelta(minutes=1)
    with session_scope(crm_for_actions) as session:
        record_helpful(session=session, patron_id=first.patron_id, helpful=True, topic="renewal", now=later)
    assert len(rows(crm_for_actions, Feedback)) == 4


def test_a_tap_on_an_earlier_answer_is_recorded_against_that_answer(crm_for_actions: Engine) -> None:
    from actions.buttons import helpful_buttons

    [_, no] = helpful_buttons("en", "renew-online")
    assert no["payload"] == '/give_feedback{"helpful": "no:renew-online"}'
    # The latest answer was about Wi-Fi; the patron taps 👎 under the earlier renewal answer.
    run(
        ActionRecordHelpful(),
        make_tracker(no["payload"], entities={"helpful": "no:renew-online"}, slots={"last_faq": "wifi"}),
    )
    [feedback] = rows(crm_for_actions, Feedback)
    assert (feedback.helpful, feedback.topic) == (False, "renewal")


def validate(slot: str, value: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    form = ValidateFeedbackForm()
    dispatcher = CollectingDispatcher()
    result = getattr(form, f"validate_{slot}")(value, dispatcher, make_tracker(value), {})
    return result, dispatcher.messages


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("4", "4"),
        ("给5分", "5"),
        ("⭐⭐", "2"),
        ("very satisfied", "5"),
        ("7", None),
        ("hello", None),
        # A rating word inside the answer; "一" in "一般" is not a 1, nor "十" in "十分满意" a 10.
        ("我觉得一般", "3"),
        ("一般吧", "3"),
        ("十分满意", "5"),
        ("不太满意", "2"),
        ("四分", "4"),
        # The scale or a range is not the rating; two ratings, a negative one or another scale are
        # asked again rather than guessed.
        ("on a scale of 1-5, 4", "4"),
        ("满分5分，给4分", "4"),
        ("4 out of 5", "4"),
        ("4 or 5", None),
        ("-1", None),
        ("5/10", None),
        # Negations and hedges read as patrons mean them: "不是很满意" is not "很满意".
        ("不是很满意", "2"),
        ("不是很好", "2"),
        ("没有很满意", "2"),
        ("不怎么满意", "2"),
        ("说实话不是特别满意", "2"),
        ("并不满意", "2"),
        ("not very satisfied", "2"),
        ("I'm not really happy with it", "2"),
        ("wasn't that helpful", "2"),
        ("not bad", "3"),
        ("不差", "3"),
        ("还不错", "4"),
        ("很不满意", "1"),
        ("非常不满意", "1"),
    ],
)
def test_a_rating_is_read_from_what_the_patron_typed(typed: str, expected: str | None) -> None:
    result, messages = validate("csat", typed)
    assert result == {"csat": expected}
    assert bool(messages) == (expected is None)  # only a bad rating is answered with a hint


def test_a_comment_can_be_skipped_or_correct_the_rating() -> None:
    assert validate("comment", "跳过")[0] == {"comment": "-"}
    assert validate("comment", "the staff were kind")[0] == {"comment": "the staff were kind"}
    corrected, messages = validate("comment", "actually 3")
    assert corrected == {"csat": "3", "comment": None}
    assert messages[0]["response"] == "utter_rating_changed"
    assert validate("comment", "改成2分")[0] == {"csat": "2", "comment": None}


@pytest.mark.parametrize(
    "comment", ["no printer on level 1", "No wifi on floor 2", "其实3楼太吵了", "不对，2楼打印机坏了"]
)
def test_a_comment_with_a_number_in_it_stays_a_comment(comment: str) -> None:
    assert validate("comment", comment) == ({"comment": comment}, [])


@pytest.mark.parametrize("typed", ["never mind", "算了", "取消", "cancel", "no"])
def test_the_rating_question_can_be_left(typed: str) -> None:
    assert validate("csat", typed) == ({"csat": None, "requested_slot": None}, [])


FEEDBACK_DOMAIN = {"forms": {"feedback_form": {"required_slots": ["csat", "comment", "nps"]}}}


def run_feedback_form(typed: str, requested: str) -> list[dict[str, Any]]:
    """The whole validation action, as Rasa calls it while the form asks for `requested`."""
    tracker = make_tracker(
        typed,
        intent="cancel",
        slots={"requested_slot": requested, requested: typed},
        events=[{"event": "user", "text": typed}, {"event": "slot", "name": requested, "value": typed}],
    )
    tracker.active_loop = {"name": "feedback_form"}
    events: list[dict[str, Any]] = asyncio.run(
        ValidateFeedbackForm().run(CollectingDispatcher(), tracker, FEEDBACK_DOMAIN)
    )
    return events


def test_never_mind_at_the_rating_question_ends_the_form() -> None:
    # rasa-sdk asks the next missing slot after validation; the last requested_slot event decides.
    events = run_feedback_form("never mind", "csat")
    assert [e["value"] for e in events if e.get("name") == "requested_slot"][-1] is None
    assert slot_values(events)["csat"] is None
    # A real rating goes on to the comment.
    events = run_feedback_form("4", "csat")
    assert slot_values(events)["csat"] == "4"
    assert [e["value"] for e in events if e.get("name") == "requested_slot"][-1] == "comment"


@pytest.mark.parametrize(("slot", "left"), [("csat", "1"), ("comment", "rude staff"), ("nps", "3")])
def test_a_value_left_from_an_abandoned_form_is_asked_again(slot: str, left: str) -> None:
    """Slots outlive a form left by "stop": starting it again must not record the old answer."""
    form = ValidateFeedbackForm()
    dispatcher = CollectingDispatcher()
    result = getattr(form, f"validate_{slot}")(left, dispatcher, make_tracker("I want to give feedback"), {})
    assert result == {slot: None}
    assert dispatcher.messages == []
    # A rating tapped with the message that starts the form is the patron's answer.
    tapped = make_tracker('/give_feedback{"csat": "2"}', entities={"csat": "2"})
    assert form.validate_csat("2", CollectingDispatcher(), tapped, {}) == {"csat": "2"}


def test_a_form_left_before_rating_records_nothing(crm_for_actions: Engine) -> None:
    events, messages = run(ActionSubmitFeedback(), make_tracker("never mind", slots={"csat": None}))
    assert messages[0]["response"] == "utter_feedback_cancelled"
    assert slot_values(events) == {"csat": None, "comment": None, "nps": None}
    assert rows(crm_for_actions, Feedback) == []
    assert rows(crm_for_actions, Escalation) == []


def test_a_complaint_form_can_be_left_and_records_nothing(crm_for_actions: Engine) -> None:
    form = ValidateReportForm()
    left = form.validate_report_details("算了", CollectingDispatcher(), make_tracker("算了"), {})
    assert left == {"report_details": None, "requested_slot": None}
    kept = form.validate_report_details(" the lift is broken ", CollectingDispatcher(), make_tracker("x"), {})
    assert kept == {"report_details": "the lift is broken"}
    tap = '/give_feedback{"helpful": "yes"}'
    assert form.validate_report_details(tap, CollectingDispatcher(), make_tracker(tap), {}) == {
        "report_details": None
    }
    _, messages = run(
        ActionSubmitReport(),
        make_tracker("算了", intent="complaint", slots={"report_kind": "complaint", "report_details": None}),
    )
    assert messages[0]["response"] == "utter_report_cancelled"
    assert rows(crm_for_actions, Suggestion) == []
    assert rows(crm_for_actions, Escalation) == []


def test_a_detail_sent_after_the_report_is_added_to_it(crm_for_actions: Engine) -> None:
    from actions.reports import ActionAddReportDetail
    from bot.thread import PARSE_KEY

    complaint = {"report_kind": "complaint", "report_details": "阅览室空调太冷了，能不能调高一点"}
    events, _ = run(ActionSubmitReport(), make_tracker("x", intent="complaint", slots=complaint))
    number = slot_values(events)["last_report"]
    [report] = rows(crm_for_actions, Suggestion)
    assert number == str(report.id)

    def add(text: str, *, sender: str = "rest:patron-1") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        tracker = make_tracker(text, intent="add_detail", sender=sender, slots={"last_report": number})
        tracker.latest_message[PARSE_KEY] = {"report": number}
        return run(ActionAddReportDetail(), tracker)

    events, said = add("三楼东边")
    assert said[0]["response"] == "utter_detail_added"
    assert said[0]["number"] == number
    assert slot_values(events) == {"last_report": number}
    [report] = rows(crm_for_actions, Suggestion)
    assert report.text == "阅览室空调太冷了，能不能调高一点\n+ 三楼东边"
    # The escalation the librarian works is the report's: it reads the report with its details.
    [escalation] = rows(crm_for_actions, Escalation)
    assert report.escalation_id == escalation.id
    # Another patron cannot add to it: not understood, and the report unchanged.
    _, other = add("我也觉得冷", sender="rest:someone-else")
    assert other[0]["response"] == "utter_default"
    assert rows(crm_for_actions, Suggestion)[0].text == report.text


def domain_file() -> dict[str, Any]:
    """domain.yml as Rasa hands it to the action server (the slots' mappings with their not_intent)."""
    from bot.settings import PROJECT_ROOT

    domain: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text(encoding="utf-8"))
    return domain


def run_form(form: Any, typed: str, *, intent: str, requested: str) -> list[dict[str, Any]]:
    """A whole validation action while the form asks for `requested`, and the patron's message was
    classified as `intent` (a service intent: the slot's from_text mapping took nothing from it)."""
    tracker = make_tracker(
        typed, intent=intent, slots={"requested_slot": requested}, events=[{"event": "user", "text": typed}]
    )
    tracker.active_loop = {"name": form.form_name()}
    events: list[dict[str, Any]] = asyncio.run(form.run(CollectingDispatcher(), tracker, domain_file()))
    return events


@pytest.mark.parametrize(
    ("typed", "intent"),
    [("the online renewal never works for me", "renewal"), ("网上续借总是失败", "renewal"),
     ("the wifi on level 3 keeps dropping", "tech_services"),
     ("the man at the loans desk was rude to me this morning", "give_feedback")],
)  # fmt: skip
def test_a_complaint_that_names_a_service_is_the_complaint(typed: str, intent: str) -> None:
    events = run_form(ValidateReportForm(), typed, intent=intent, requested="report_details")
    assert slot_values(events)["report_details"] == typed


@pytest.mark.parametrize(
    ("typed", "intent"),
    [("how do I renew?", "renewal"), ("续借", "renewal"), ("图书馆几点开门", "ask_hours"),
     ("stop sending me messages", "unsubscribe"), ("put me through to a librarian", "human_handoff"),
     ('/renewal', "renewal"), ("actually I'd rather just give feedback", "give_feedback"),
     ("谢谢", "thanks"), ("再见", "goodbye")],
)  # fmt: skip
def test_a_question_or_a_command_in_the_complaint_form_is_not_the_complaint(typed: str, intent: str) -> None:
    # Nothing fills the slot: Rasa rejects the form's turn and the rules answer it (or act on it).
    events = run_form(ValidateReportForm(), typed, intent=intent, requested="report_details")
    assert "report_details" not in slot_values(events)


def test_a_feedback_comment_that_names_a_service_is_the_comment() -> None:
    typed = "the renewal page keeps logging me out"
    events = run_form(ValidateFeedbackForm(), typed, intent="renewal", requested="comment")
    assert slot_values(events)["comment"] == typed
    asked = run_form(ValidateFeedbackForm(), "how do I renew?", intent="renewal", requested="comment")
    assert "comment" not in slot_values(asked)
    # The rating question is not free text: a service named there is not taken as anything.
    rating = run_form(ValidateFeedbackForm(), typed, intent="renewal", requested="csat")
    assert "comment" not in slot_values(rating)


def test_nps_is_asked_only_where_the_library_turns_it_on(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.settings import PROJECT_ROOT, get_settings

    facts = (PROJECT_ROOT / "knowledge" / "library.yml").read_text(encoding="utf-8")
    path = tmp_path / "library.yml"
    monkeypatch.setenv("PATRONBOT_LIBRARY_FACTS", str(path))
    get_settings.cache_clear()
    slots = ["csat", "comment", "nps"]
    form = ValidateFeedbackForm()

    def required() -> list[str]:
        return asyncio.run(form.required_slots(slots, CollectingDispatcher(), make_tracker(""), {}))

    path.write_text(facts.replace("feedback_nps: false", "feedback_nps: true"), encoding="utf-8")
    assert required() == slots
    path.write_text(facts.replace("feedback_nps: true", "feedback_nps: false"), encoding="utf-8")
    assert required() == ["csat", "comment"]


def test_a_low_rating_is_recorded_and_opens_an_escalation(crm_for_actions: Engine) -> None:
    events, messages = run(
        ActionSubmitFeedback(),
        make_tracker("terrible", slots={"csat": "1", "comment": "rude staff", "nps": None}),
    )
    assert slot_values(events) == {"csat": None, "comment": None, "nps": None}
    assert messages[0]["response"] == "utter_feedback_low"
    assert "shortly" in messages[1]["text"]  # staffed hours
    [feedback] = rows(crm_for_actions, Feedback)
    assert (feedback.csat, feedback.comment, feedback.nps) == (1, "rude staff", None)
    [escalation] = rows(crm_for_actions, Escalation)
    assert (escalation.reason, escalation.rasa_sender_id, escalation.status) == (
        "low_rating",
        "rest:patron-1",
        "open",
    )


def test_a_good_rating_opens_no_escalation(crm_for_actions: Engine) -> None:
    _, messages = run(ActionSubmitFeedback(), make_tracker("5", slots={"csat": "5", "comment": "-"}))
    assert messages[0]["response"] == "utter_feedback_thanks"
    assert [(f.csat, f.comment) for f in rows(crm_for_actions, Feedback)] == [(5, None)]
    assert rows(crm_for_actions, Escalation) == []


def test_a_complaint_with_details_is_kept_and_one_without_is_asked_for() -> None:
    detailed, _ = run(
        ActionStartReport(), make_tracker("the reading room is far too noisy", intent="complaint")
    )
    assert slot_values(detailed) == {
        "report_kind": "complaint",
        "report_details": "the reading room is far too noisy",
    }
    bare, _ = run(ActionStartReport(), make_tracker("我要投诉", intent="complaint"))
    assert slot_values(bare) == {"report_kind": "complaint", "report_details": None}
    idea, _ = run(ActionStartReport(), make_tracker("I have a suggestion", intent="suggestion"))
    assert slot_values(idea)["report_kind"] == "suggestion"


def test_a_broken_facts_file_still_records_the_complaint_and_hands_it_over(
    crm_for_actions: Engine, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.settings import get_settings

    broken = tmp_path / "library.yml"
    broken.write_text("opening_hours: [unclosed", encoding="utf-8")
    monkeypatch.setenv("PATRONBOT_LIBRARY_FACTS", str(broken))
    get_settings.cache_clear()
    before = dt.datetime.now(dt.UTC)
    _, messages = run(
        ActionSubmitReport(),
        make_tracker(
            "", slots={"report_kind": "complaint", "report_details": "the lift has been broken for weeks"}
        ),
    )
    assert messages[0]["response"] == "utter_report_recorded"
    [report] = rows(crm_for_actions, Suggestion)
    assert report.text == "the lift has been broken for weeks"
    [escalation] = rows(crm_for_actions, Escalation)
    # Staffed hours unknown: due within a day.
    assert escalation.reason == "complaint"
    assert (
        before + dt.timedelta(hours=23) < escalation.due_at <= dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    )


def test_an_unexpected_error_in_a_crm_action_is_a_polite_reply_and_logs_no_patron_text(
    crm_for_actions: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    from actions.crm import with_crm

    def fails(session: Session) -> int:
        raise ValueError("the patron wrote: my phone is 13800000000")

    with caplog.at_level("ERROR"):
        assert with_crm(fails, doing="record feedback") is None
    assert "cannot record feedback: ValueError at test_patron_flows.py" in caplog.text
    assert "13800000000" not in caplog.text


def test_a_complaint_is_recorded_and_escalated_a_suggestion_only_recorded(crm_for_actions: Engine) -> None:
    _, complaint = run(
        ActionSubmitReport(),
        make_tracker("", slots={"report_kind": "complaint", "report_details": "the printer on floor 2 jams"}),
    )
    _, idea = run(
        ActionSubmitReport(),
        make_tracker(
            "",
            sender="rest:patron-2",
            slots={"report_kind": "suggestion", "report_details": "please buy more law e-books"},
        ),
    )
    reports = rows(crm_for_actions, Suggestion)
    assert [(r.kind, r.text) for r in reports] == [
        ("complaint", "the printer on floor 2 jams"),
        ("purchase", "please buy more law e-books"),
    ]
    assert complaint[0]["number"] == str(reports[0].id)
    assert idea[0]["number"] == str(reports[1].id)
    assert complaint[0]["when"]  # when a librarian answers
    [escalation] = rows(crm_for_actions, Escalation)
    assert (escalation.reason, escalation.priority) == ("complaint", "high")


def test_handoff_in_staffed_hours_quiets_the_bot_until_staff_resolve(
    crm_for_actions: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, messages = run(ActionHandoff(), make_tracker("talk to a librarian", intent="human_handoff"))
    assert slot_values(events) == {"handoff_active": True}
    assert messages[0]["response"] == "utter_handoff_opened"
    [escalation] = rows(crm_for_actions, Escalation)
    assert escalation.reason == "requested"
    # The patron is created in the language they wrote, before the ingester has copied anything, so a
    # librarian who resolves at once hands back in English (the ingester's copy is not waited for).
    assert [p.language for p in rows(crm_for_actions, Patron)] == ["en"]

    relay_events, relay = run(ActionStaffRelay(), make_tracker("hello?", intent="greet"))
    assert relay_events == []
    assert relay[0]["response"] == "utter_handoff_ack"  # nobody has it yet: the patron hears it is passed on
    # A librarian claims it: from then on the bot is silent, the librarian answers.
    with Session(crm_for_actions, future=True) as session, session.begin():
        claimed = session.get(Escalation, escalation.id)
        assert claimed is not None
        claimed.status = "assigned"
    relay_events, relay = run(ActionStaffRelay(), make_tracker("are you there?", intent="greet"))
    # Nothing said, only the marker that tells the channel the silence is meant (no apology).
    assert relay_events == []
    assert [(m.get("text"), m.get("response"), m.get("custom")) for m in relay] == [(None, None, QUIET)]
    # At every message Rasa asks the CRM whether a librarian still has the conversation.
    with_staff = make_tracker("hello?", intent="greet", slots={"handoff_active": True})
    assert run(ActionCheckHandoff(), with_staff)[0] == []  # unchanged

    with Session(crm_for_actions, future=True) as session, session.begin():
        resolve_escalation(session=session, escalation_id=escalation.id, staff="alice", note="answered")
    assert slot_values(run(ActionCheckHandoff(), with_staff)[0]) == {"handoff_active": False}
    # Had it been resolved between that check and the relay, the relay hands back itself.
    resumed_events, resumed = run(ActionStaffRelay(), make_tracker("hello?", intent="greet"))
    assert slot_values(resumed_events) == {"handoff_active": False}
    assert resumed[0]["response"] == "utter_handoff_resumed"


def test_complaints_and_low_ratings_leave_the_bot_talking(crm_for_actions: Engine) -> None:
    run(ActionSubmitFeedback(), make_tracker("1", slots={"csat": "1", "comment": "-"}))
    assert [e.reason for e in rows(crm_for_actions, Escalation)] == ["low_rating"]
    assert run(ActionCheckHandoff(), make_tracker("hi", intent="greet"))[0] == []


def test_handoff_outside_staffed_hours_says_when_and_keeps_the_bot(
    crm_for_actions: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff, "_now", lambda: UNSTAFFED)
    events, messages = run(ActionHandoff(), make_tracker("人工", intent="human_handoff"))
    assert events == []
    assert "09:00" in messages[1]["text"]
    [escalation] = rows(crm_for_actions, Escalation)
    assert [p.language for p in rows(crm_for_actions, Patron)] == ["zh"]
    assert run(ActionCheckHandoff(), make_tracker("hi", intent="greet"))[0] == []
    # Once a librarian replies, they have the conversation even outside staffed hours.
    with Session(crm_for_actions, future=True) as session, session.begin():
        staff_reply(session=session, escalation_id=escalation.id, staff="alice", text="I'm here")
    assert slot_values(run(ActionCheckHandoff(), make_tracker("hi", intent="greet"))[0]) == {
        "handoff_active": True
    }


def fallback_events(count: int) -> list[dict[str, Any]]:
    """`count` messages not understood, each but the latest answered by action_fallback."""
    user = {"event": "user", "parse_data": {"intent": {"name": "nlu_fallback"}}}
    answered = {"event": "action", "name": "action_fallback"}
    events: list[dict[str, Any]] = []
    for number in range(count):
        events += [{"event": "action", "name": "action_listen"}, user]
        if number < count - 1:
            events.append(answered)
    return events


def test_the_second_fallback_in_a_row_reaches_a_librarian(crm_for_actions: Engine) -> None:
    _, first = run(ActionFallback(), make_tracker("qwzx", events=fallback_events(1)))
    assert first[0]["response"] == "utter_default"
    assert rows(crm_for_actions, Escalation) == []
    events, second = run(ActionFallback(), make_tracker("qwzx", events=fallback_events(2)))
    assert second[0]["response"] == "utter_fallback_handoff"
    assert slot_values(events) == {"handoff_active": True}
    assert [e.reason for e in rows(crm_for_actions, Escalation)] == ["fallback"]
    # Understood messages in between reset the count.
    between = [
        *fallback_events(1),
        {"event": "action", "name": "action_fallback"},
        {"event": "user", "parse_data": {"intent": {"name": "greet"}}},
        {"event": "action", "name": "utter_greet"},
    ]
    _, again = run(ActionFallback(), make_tracker("qwzx", events=[*between, *fallback_events(1)]))
    assert again[0]["response"] == "utter_default"
    # After a handoff the count starts again: the third misunderstanding in a row is asked again,
    # not handed over a second time; the fourth joins the same escalation.
    _, third = run(ActionFallback(), make_tracker("qwzx", events=fallback_events(3)))
    assert third[0]["response"] == "utter_default"
    _, fourth = run(ActionFallback(), make_tracker("qwzx", events=fallback_events(4)))
    assert fourth[0]["response"] == "utter_fallback_handoff"
    assert [e.reason for e in rows(crm_for_actions, Escalation)] == ["fallback"]


def test_a_message_a_form_took_as_its_answer_is_not_a_misunderstanding(crm_for_actions: Engine) -> None:
    # "I want to give feedback" -> "5" -> "great service, ..." (the comment: the classifier could not
    # place it, the form took it) -> a stray "9": one misunderstanding, not the second in a row.
    comment = [
        {"event": "action", "name": "action_listen"},
        {"event": "user", "parse_data": {"intent": {"name": "nlu_fallback"}}},
        {"event": "action", "name": "feedback_form"},
        {"event": "action", "name": "action_submit_feedback"},
    ]
    _, said = run(ActionFallback(), make_tracker("9", events=[*comment, *fallback_events(1)]))
    assert said[0]["response"] == "utter_default"
    assert rows(crm_for_actions, Escalation) == []


def test_the_profile_is_kept_with_consent_and_the_answer_given_for_the_type(crm_for_actions: Engine) -> None:
    events, messages = run(
        ActionSaveProfile(),
        make_tracker(
            "/inform_profile",
            intent="inform_profile",
            entities={"patron_type": "postgraduate"},
            slots={"last_faq": "loan-limits", "language": "en"},
        ),
    )
    assert slot_values(events) == {"profile_asked": True, "patron_type": "postgraduate"}
    assert "postgraduate" in messages[0]["text"].lower() or "研究生" in messages[0]["text"]
    # The answer for their type carries "did this help?" like every answer.
    assert [b["payload"] for b in messages[0]["buttons"]][-1] == '/give_feedback{"helpful": "no:loan-limits"}'
    assert messages[-1]["response"] == "utter_ask_interests"
    _, interest = run(
        ActionSaveProfile(), make_tracker("I'm interested in databases", intent="inform_profile")
    )
    assert interest[-1]["response"] == "utter_ask_follow_up_consent"
    [patron] = rows(crm_for_actions, Patron)
    assert (patron.patron_type, patron.interests) == ("postgraduate", ["e_resources"])
    assert [(c.purpose, c.granted) for c in rows(crm_for_actions, Consent)] == [("profiling", True)]


ASKED_INTERESTS = [
    {"event": "bot", "text": "What interests you?", "metadata": {"utter_action": "utter_ask_interests"}}
]


def test_interests_typed_instead_of_tapped_are_kept_not_answered(crm_for_actions: Engine) -> None:
    """The classifier takes "databases and new books" for an e-resources question; after the interests
    question it is the answer (channels without buttons have only text)."""
    from actions.knowledge import ActionAnswerFaq

    typed = "databases and new books"
    _, messages = run(ActionAnswerFaq(), make_tracker(typed, intent="e_resources", events=ASKED_INTERESTS))
    assert messages[-1]["response"] == "utter_ask_follow_up_consent"
    [patron] = rows(crm_for_actions, Patron)
    assert patron.interests == ["e_resources", "new_books"]


@pytest.mark.parametrize(
    ("typed", "events"),
    [("how do I reach the databases?", ASKED_INTERESTS), ("databases and new books", [])],
)
def test_a_question_or_no_interests_question_is_answered_as_a_question(
    crm_for_actions: Engine, typed: str, events: list[dict[str, Any]]
) -> None:
    from actions.knowledge import ActionAnswerFaq

    _, messages = run(ActionAnswerFaq(), make_tracker(typed, intent="e_resources", events=events))
    assert all(message.get("response") != "utter_ask_follow_up_consent" for message in messages)
    assert rows(crm_for_actions, Patron) == []


def test_the_profile_question_can_be_skipped(crm_for_actions: Engine) -> None:
    events, messages = run(
        ActionSaveProfile(),
        make_tracker("/inform_profile", intent="inform_profile", entities={"patron_type": "skip"}),
    )
    assert slot_values(events) == {"profile_asked": True}
    assert messages[0]["response"] == "utter_profile_skipped"
    assert rows(crm_for_actions, Patron) == []


@pytest.mark.parametrize(
    ("typed", "confirmed"),
    [
        ("确认删除", "yes"),
        ("Delete", "yes"),
        ("delete my data", "yes"),
        ("删除我的数据", "yes"),
        ("no wait", "no"),
        ("算了", "no"),
        ("what would be deleted?", "no"),
    ],
)
def test_deletion_needs_an_explicit_yes(typed: str, confirmed: str) -> None:
    dispatcher = CollectingDispatcher()
    result = ValidateDeleteForm().validate_delete_confirmation(typed, dispatcher, make_tracker(typed), {})
    assert result == {"delete_confirmation": confirmed}


def test_a_confirmed_deletion_is_carried_out_by_the_ingester(crm_for_actions: Engine, crm_url: str) -> None:
    cancelled, said = run(ActionEraseMyData(), make_tracker("no", slots={"delete_confirmation": "no"}))
    assert slot_values(cancelled) == {"delete_confirmation": None}
    assert said[0]["response"] == "utter_delete_cancelled"
    events, said = run(ActionEraseMyData(), make_tracker("delete", slots={"delete_confirmation": "yes"}))
    assert slot_values(events) == {"delete_confirmation": None}  # a slot would be copied into new sessions
    assert said[0]["response"] == "utter_delete_scheduled"  # this reply is the request

    run(ActionRecordHelpful(), make_tracker("/give_feedback", entities={"helpful": "yes"}))  # a patron row
    with Session(crm_for_actions, future=True) as session, session.begin():
        keys = {PatronKey("rest", "patron-1"): 1_795_000_000.0, PatronKey("rest", "nobody"): 1_795_000_000.0}
        assert note_requests(session=session, keys=keys) == 1
    with Session(crm_for_actions, future=True) as session:
        assert len(pending_patrons(session=session)) == 1
    # Not yet: the tracker store may still be writing the turn that asked (see erasure_requests.SETTLE).
    early = carry_out(crm=crm_for_actions, crm_url=crm_url, rasa_stores=[], settle=dt.timedelta(hours=1))
    assert early == ErasureRound(erased=0, waiting=True)
    assert len(rows(crm_for_actions, Patron)) == 1
    done = carry_out(crm=crm_for_actions, crm_url=crm_url, rasa_stores=[], settle=dt.timedelta(0))
    assert done == ErasureRound(erased=1, waiting=False, senders=frozenset({"rest:patron-1"}))
    assert rows(crm_for_actions, Patron) == []
    assert rows(crm_for_actions, ChannelIdentity) == []
    assert [f.patron_id for f in rows(crm_for_actions, Feedback)] == [None]  # anonymous, kept
    with Session(crm_for_actions, future=True) as session:
        assert pending_patrons(session=session) == []
        assert session.execute(select(func.count()).select_from(Interaction)).scalar_one() == 0
    again = carry_out(crm=crm_for_actions, crm_url=crm_url, rasa_stores=[], settle=dt.timedelta(0))
    assert again == ErasureRound(erased=0, waiting=False)


def test_rating_buttons_carry_the_rating_as_an_entity() -> None:
    from actions.feedback import ActionAskCsat, ActionGoodbye

    for action in (ActionAskCsat(), ActionGoodbye()):
        _, [message] = run(action, make_tracker("bye", intent="goodbye"))
        payloads = [button["payload"] for button in message["buttons"]]
        assert payloads == [f'/give_feedback{{"csat": "{n}"}}' for n in range(1, 6)]


def test_profile_buttons_are_in_the_patron_language() -> None:
    from actions.buttons import interest_buttons, patron_type_buttons

    assert patron_type_buttons("zh")[1] == {
        "title": "研究生",
        "payload": '/inform_profile{"patron_type": "postgraduate"}',
    }
    assert interest_buttons("en")[-1] == {"title": "Skip", "payload": '/inform_profile{"interest": "skip"}'}


def test_a_rating_corrected_after_the_form_changes_it_instead_of_adding_one(crm_for_actions: Engine) -> None:
    """After a completed form, "不对，改成3分" started a new form and stored a second row (5 and 3)."""
    from actions.feedback import ActionStartFeedback

    run(ActionSubmitFeedback(), make_tracker("5", slots={"csat": "5", "comment": "-", "nps": None}))
    events, said = run(ActionStartFeedback(), make_tracker("不对，改成3分"))
    assert [event["event"] for event in events] == ["followup"]  # the form does not start
    assert said[0]["response"] == "utter_rating_changed"
    assert said[0]["csat"] == "3"
    assert [(row.csat, row.comment) for row in rows(crm_for_actions, Feedback)] == [(3, None)]
    # Lowered to a low rating: a librarian follows up, as for a low rating given at once.
    run(ActionStartFeedback(), make_tracker("actually 1"))
    assert [row.reason for row in rows(crm_for_actions, Escalation)] == ["low_rating"]


def test_an_old_rating_button_tapped_again_adds_no_row(crm_for_actions: Engine) -> None:
    from actions.feedback import ActionStartFeedback

    run(ActionSubmitFeedback(), make_tracker("4", slots={"csat": "4", "comment": "-", "nps": None}))
    tap = make_tracker('/give_feedback{"csat": "4"}', entities={"csat": "4"})
    events, said = run(ActionStartFeedback(), tap)
    assert said[0]["response"] == "utter_feedback_thanks"
    assert [event["event"] for event in events] == ["followup"]
    assert len(rows(crm_for_actions, Feedback)) == 1


def test_a_first_rating_starts_the_form(crm_for_actions: Engine) -> None:
    from actions.feedback import ActionStartFeedback

    assert run(ActionStartFeedback(), make_tracker("actually 3")) == ([], [])
    assert rows(crm_for_actions, Feedback) == []


def test_a_thumbs_up_while_the_rating_is_asked_is_recorded_not_refused(crm_for_actions: Engine) -> None:
    tap = make_tracker(
        '/give_feedback{"helpful": "yes:renew-online"}',
        entities={"helpful": "yes:renew-online"},
        slots={"requested_slot": "csat"},
    )
    dispatcher = CollectingDispatcher()
    result = ValidateFeedbackForm().validate_csat(tap.latest_message["text"], dispatcher, tap, {})
    assert result == {"csat": None, "helpful_about": "renew-online"}
    assert [m["response"] for m in dispatcher.messages] == ["utter_helpful_thanks"]
    [feedback] = rows(crm_for_actions, Feedback)
    assert (feedback.helpful, feedback.topic) == (True, "renewal")


@pytest.mark.parametrize("said", ["谢谢", "再见", "hello?", "actually I'd rather just give feedback"])
def test_words_that_are_not_a_complaint_are_not_its_details(said: str) -> None:
    tracker = make_tracker(said, slots={"requested_slot": "report_details"})
    result = ValidateReportForm().validate_report_details(said, CollectingDispatcher(), tracker, {})
    assert result == {"report_details": None}


@pytest.mark.parametrize("said", ["yes", "好的"])
def test_a_bare_yes_at_the_deletion_question_asks_again(said: str) -> None:
    result = ValidateDeleteForm().validate_delete_confirmation(
        said, CollectingDispatcher(), make_tracker(said), {}
    )
    assert result == {"delete_confirmation": None}


def test_reports_and_ratings_keep_their_conversation_for_the_ingester_to_link(
    crm_for_actions: Engine,
) -> None:
    run(ActionSubmitFeedback(), make_tracker("4", slots={"csat": "4", "comment": "-", "nps": None}))
    tracker = make_tracker("the lockers on level 1 are broken", slots={"report_details": "lockers broken"})
    tracker.slots["report_kind"] = "complaint"
    run(ActionSubmitReport(), tracker)
    assert [row.rasa_sender_id for row in rows(crm_for_actions, Feedback)] == ["rest:patron-1"]
    assert [row.rasa_sender_id for row in rows(crm_for_actions, Suggestion)] == ["rest:patron-1"]


def test_never_mind_while_a_librarian_has_the_conversation_leaves_it_with_them() -> None:
    from actions.handoff import ActionCancel

    _, said = run(ActionCancel(), make_tracker("算了", intent="cancel", slots={"handoff_active": True}))
    assert [m["response"] for m in said] == ["utter_handoff_ack"]
    _, said = run(ActionCancel(), make_tracker("算了", intent="cancel"))
    assert [m["response"] for m in said] == ["utter_cancel_ok"]


def test_a_turn_run_again_records_nothing_twice(crm_for_actions: Engine) -> None:
    """A Telegram or WeChat turn cut off by a kill before Rasa stored it runs again with the same
    message id: the rating, the tap, the complaint and its detail are each recorded once, and the patron
    is told the same (the same report number); another message records again."""
    from actions.reports import ActionAddReportDetail
    from bot.thread import PARSE_KEY

    sender = "telegram:4242"

    def twice(action: Any, text: str, message_id: str, **options: Any) -> list[list[dict[str, Any]]]:
        said = []
        for _ in range(2):
            tracker = make_tracker(text, sender=sender, message_id=message_id, **options)
            if options.get("intent") == "add_detail":
                tracker.latest_message[PARSE_KEY] = {"report": options["slots"]["last_report"]}
            said.append(run(action, tracker)[1])
        return said

    rating = {"csat": "2", "comment": "too noisy", "nps": None}
    first, again = twice(ActionSubmitFeedback(), "2", "telegram:100", slots=rating)
    assert first == again
    assert first[0]["response"] == "utter_feedback_low"
    [feedback] = rows(crm_for_actions, Feedback)
    assert (feedback.csat, feedback.comment) == (2, "too noisy")
    first, again = twice(ActionRecordHelpful(), "/give_feedback", "telegram:101", entities={"helpful": "no"})
    assert first == again == [{**first[0], "response": "utter_helpful_sorry"}]
    assert [f.helpful for f in rows(crm_for_actions, Feedback)] == [None, False]
    complaint = {"report_kind": "complaint", "report_details": "the lift is broken again"}
    first, again = twice(ActionSubmitReport(), "x", "telegram:102", intent="complaint", slots=complaint)
    [report] = rows(crm_for_actions, Suggestion)
    assert first == again
    assert first[0]["number"] == str(report.id)
    detail = {"slots": {"last_report": str(report.id)}, "intent": "add_detail"}
    first, again = twice(ActionAddReportDetail(), "on the third floor", "telegram:103", **detail)
    assert first == again
    assert first[0]["response"] == "utter_detail_added"
    [report] = rows(crm_for_actions, Suggestion)
    assert report.text == "the lift is broken again\n+ on the third floor"
    # One escalation: the low rating's, which the complaint joined.
    assert len(rows(crm_for_actions, Escalation)) == 1
    # The same words in a new message are a new rating.
    run(ActionSubmitFeedback(), make_tracker("2", sender=sender, message_id="telegram:104", slots=rating))
    assert [f.csat for f in rows(crm_for_actions, Feedback)] == [2, None, 2]


def test_the_same_message_run_twice_at_once_keeps_the_first_record(
    crm_for_actions: Engine, crm_url: str
) -> None:
    """Two runs of one message at the same moment (a duplicate delivery both processes took): the one
    that commits second fails on the turn's key, drops what it wrote, and answers with the first's row."""
    if not crm_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time (BEGIN IMMEDIATE): two runs cannot overlap")
    from actions.crm import with_crm_once
    from bot.crm.models import TurnEffect
    from bot.crm.patrons import get_or_create_patron
    from bot.engagement.feedback import record_feedback

    tracker = make_tracker("5", sender="telegram:7", message_id="telegram:55")
    runs = []

    def record(session: Session) -> int:
        runs.append(len(runs) + 1)
        if len(runs) == 1:  # the other run commits first, while this one is under way
            with Session(crm_for_actions, future=True) as other, other.begin():
                other.add(
                    TurnEffect(sender="telegram:7", message_id="telegram:55", action="rate", result=999)
                )
        patron_id = get_or_create_patron(session=session, key=PatronKey("telegram", "7"), language="en")
        return int(
            record_feedback(session=session, patron_id=patron_id, csat=5, rasa_sender_id="telegram:7").id
        )

    assert with_crm_once(record, tracker=tracker, action="rate", doing="rate") == 999
    assert runs == [1]  # the second attempt read the first run's result instead of recording
    assert rows(crm_for_actions, Feedback) == []


def test_erasure_removes_what_the_patrons_turns_recorded_once(crm_for_actions: Engine) -> None:
    from bot.crm.models import TurnEffect
    from bot.privacy.erasure import erase_patron

    for sender in ("telegram:4242", "telegram:5151"):
        tracker = make_tracker(
            "4", sender=sender, message_id="telegram:1", slots={"csat": "4", "comment": "-"}
        )
        run(ActionSubmitFeedback(), tracker)
    with Session(crm_for_actions, future=True) as session, session.begin():
        patron = session.execute(
            select(ChannelIdentity.patron_id).where(ChannelIdentity.external_id == "4242")
        ).scalar_one()
        report = erase_patron(
            session=session, patron_ref=str(patron), actor="test", reason="asked", rasa_stores=[]
        )
    assert report.deleted_rows["turn_effect"] == 1
    with Session(crm_for_actions, future=True) as session:
        left = session.execute(select(TurnEffect.sender)).scalars().all()
    assert left == ["telegram:5151"]
