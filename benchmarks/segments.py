"""Segment membership over 100,000 patrons and 1,000,000 interactions on PostgreSQL (target: under 10 s)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from benchmarks.common import Result, Timer, postgres_schema, postgres_unavailable, skipped
from bot.crm.database import make_engine, session_scope
from bot.crm.migrate import upgrade
from bot.crm.models import utcnow
from bot.outreach.segments import parse_segment, refresh_membership, save_segment
from bot.outreach.spec import parse_spec

NAME = "segment_membership_refresh"
TARGET_S = 10.0
NAMES = [(NAME, "s", TARGET_S, "<")]
# A segment using a rule of every kind the SQL has (attributes, channel and source, activity, topics
# in a period, conversations, consent).
SEGMENT = """\
name: bench
rules:
  channel: [telegram, wechat]
  source: [poster-east, poster-west]
  patron_type: [undergraduate, postgraduate, faculty]
  active_within_days: 90
  asked_about: {topics: [research_help, e_resources], within_days: 60}
  conversations_at_least: 2
  consent: [follow_up]
"""

# Generated in the database (generate_series), so filling takes seconds, not the benchmark's minutes.
FILL = [
    """INSERT INTO patron
         (display_name, language, patron_type, interests, reachable, created_at, last_seen_at)
       SELECT 'p' || g, CASE WHEN g % 2 = 0 THEN 'zh' ELSE 'en' END,
              (ARRAY['undergraduate','postgraduate','faculty','staff','public'])[1 + g % 5], '[]', true,
              now() - interval '400 days', now() - (g % 365) * interval '1 day'
       FROM generate_series(1, :patrons) AS g""",
    """INSERT INTO channel_identity (patron_id, channel, external_id, source, created_at)
       SELECT id, (ARRAY['telegram','wechat','webchat','rest'])[1 + id % 4], 'x' || id,
              (ARRAY['poster-east','poster-west','qr-lib','none'])[1 + (id / 4) % 4], now()
       FROM patron""",
    """INSERT INTO conversation (patron_id, channel, rasa_sender_id, status, started_at, last_message_at)
       SELECT p.id, 'telegram', 'telegram:' || p.id || ':' || k, 'resolved', now(), now()
       FROM patron p, generate_series(1, 3) AS k WHERE (p.id + k) % 2 = 0""",
    """INSERT INTO interaction
         (patron_id, channel, direction, text, intent, event_key, occurred_at, recorded_at)
       SELECT 1 + (g % :patrons), 'telegram', CASE WHEN g % 2 = 0 THEN 'in' ELSE 'out' END, 'words',
              (ARRAY['greet','renewal','research_help','e_resources','holds','ask_hours'])[1 + g % 6],
              md5(g::text), now() - (g % 300) * interval '1 day', now()
       FROM generate_series(1, :interactions) AS g""",
    """INSERT INTO feedback (patron_id, csat, created_at) SELECT id, 1 + id % 5, now() FROM patron
       WHERE id % 3 = 0""",
    """INSERT INTO consent (patron_id, purpose, granted, recorded_at)
       SELECT id, 'follow_up', id % 4 <> 0, now() FROM patron""",
]


def run(*, quick: bool) -> list[Result]:
    patrons, interactions = (10_000, 100_000) if quick else (100_000, 1_000_000)
    params: dict[str, Any] = {"patrons": patrons, "interactions": interactions}
    reason = postgres_unavailable()
    if reason:
        return skipped(NAMES, "postgresql", reason, params)
    with postgres_schema("segments") as url:
        upgrade(url=url)
        engine = make_engine(url)
        try:
            with Timer() as fill, engine.begin() as connection:
                for statement in FILL:
                    connection.execute(text(statement), {"patrons": patrons, "interactions": interactions})
            with engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            definition = parse_segment(parse_spec(SEGMENT, path="bench.yml"))
            with session_scope(engine) as session:
                segment_id = save_segment(session=session, definition=definition).id
            now = utcnow()
            refresh_membership(engine=engine, segment_id=segment_id, now=now)  # warm the cache
            with Timer() as took:
                members = refresh_membership(engine=engine, segment_id=segment_id, now=now)
        finally:
            engine.dispose()
    params |= {"members": members, "fill_seconds": round(fill.elapsed, 2), "rules": SEGMENT}
    return [
        Result(
            name=NAME,
            database="postgresql",
            value=round(took.elapsed, 3),
            unit="s",
            target=TARGET_S,
            comparison="<",
            params=params,
        )
    ]


if __name__ == "__main__":
    import json
    import sys

    for result in run(quick="--quick" in sys.argv):
        print(json.dumps(result.as_dict(), indent=2))
