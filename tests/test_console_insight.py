"""The console's feedback insight: CSAT and NPS by week, topic and channel, as JSON, CSV and a page."""

from __future__ import annotations

import csv
import datetime as dt
import io

from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from bot.crm.database import session_scope
from bot.crm.models import Feedback
from tests.console_helpers import signed_in, staff

MONDAY = dt.datetime(2026, 11, 30, 2, 0, tzinfo=dt.UTC)  # 10:00 in Shanghai, a Monday


def rated(crm: Engine) -> None:
    with session_scope(crm) as session:
        session.add_all(
            [
                Feedback(
                    csat=5,
                    topic="hours",
                    rasa_sender_id="telegram:1",
                    created_at=MONDAY - dt.timedelta(days=7),
                ),
                Feedback(
                    csat=2,
                    topic="hours",
                    rasa_sender_id="wechat:oA",
                    created_at=MONDAY - dt.timedelta(days=6),
                ),
                Feedback(nps=10, rasa_sender_id="wechat:oB", created_at=MONDAY + dt.timedelta(days=1)),
                Feedback(nps=9, rasa_sender_id="wechat:oC", created_at=MONDAY + dt.timedelta(days=2)),
                Feedback(nps=3, rasa_sender_id="rest:x", created_at=MONDAY + dt.timedelta(days=2)),
                Feedback(csat=4, topic="renewal", helpful=True, rasa_sender_id="rest:x", created_at=MONDAY),
                Feedback(helpful=False, topic="renewal", rasa_sender_id="rest:y", created_at=MONDAY),
                Feedback(comment="only words, no rating", created_at=MONDAY),
            ]
        )


def test_scores_by_week_topic_and_channel(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    rated(crm)
    signed_in(console, "lin")
    weeks = console.get("/api/feedback", params={"by": "week"}).json()["scores"]
    assert [(w["group"], w["csat"], w["csat_count"], w["nps"], w["nps_count"]) for w in weeks] == [
        ("2026-11-23", 3.5, 2, None, 0),
        ("2026-11-30", 4.0, 1, 33.3, 3),  # 2 promoters, 1 detractor of 3
    ]
    topics = {t["group"]: t for t in console.get("/api/feedback", params={"by": "topic"}).json()["scores"]}
    assert (
        topics["renewal"]["csat"],
        topics["renewal"]["helpful_share"],
        topics["renewal"]["helpful_count"],
    ) == (
        4.0,
        0.5,
        2,
    )
    channels = {
        c["group"]: c["nps"] for c in console.get("/api/feedback", params={"by": "channel"}).json()["scores"]
    }
    assert (channels["wechat"], channels["rest"]) == (100.0, -100.0)
    assert console.get("/api/feedback", params={"by": "patron"}).status_code == 400


def test_each_view_downloads_as_csv_and_the_page_draws_the_charts(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    rated(crm)
    signed_in(console, "lin")
    download = console.get("/feedback.csv", params={"by": "channel"})
    assert download.headers["content-type"].startswith("text/csv")
    assert 'filename="feedback-by-channel.csv"' in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert {row["group"]: row["nps_count"] for row in rows} == {"wechat": "2", "rest": "1", "telegram": "0"}
    page = console.get("/feedback").text
    assert page.count("<rect ") == 2 + 1  # CSAT in two weeks, NPS in one
    assert 'role="img" aria-labelledby="csat-chart-title"' in page
    assert "2026-11-23" in page


def test_no_ratings_yet_is_said_not_drawn(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    signed_in(console, "lin")
    page = console.get("/feedback", headers={"Accept-Language": "en"}).text
    assert "<svg" not in page
    assert "No ratings yet." in page
