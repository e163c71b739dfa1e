"""Campaign files checked whole before anything is stored; campaigns saved, paused, resumed, cancelled."""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from bot.crm.models import (
    CONSENT_PURPOSES,
    TRIGGER_EVENTS,
    Campaign,
    Delivery,
    Segment,
    SegmentMembership,
    utcnow,
)
from bot.outreach.messages import check_lengths, parse_buttons, parse_message
from bot.outreach.spec import Spec, SpecError, check_fields, load_spec

# APScheduler 3.9 imports pkg_resources, which warns on import; the warning says nothing to an operator.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

# What a follow-up question asks: how the patron's answer is recorded.
QUESTION_ASKS = ("csat", "nps", "helpful", "open")
# A campaign is never about the service itself: that consent is for answering the patron.
CAMPAIGN_PURPOSES = tuple(purpose for purpose in CONSENT_PURPOSES if purpose != "service")
# The zone a cron schedule without its own `timezone` runs in: the library's (knowledge/library.yml);
# the CLI passes the configured one.
DEFAULT_TIMEZONE = "Asia/Shanghai"
MAX_NAME_CHARS = 200

TOP_FIELDS = {"name", "segment", "purpose", "kind", "asks", "message", "buttons", "schedule"}
SCHEDULE_FIELDS = {"at", "cron", "timezone", "after"}
AFTER_FIELDS = {"event", "days"}


class CampaignError(Exception):
    """An operator's request about a stored campaign that cannot be done; the message says why."""


@dataclass(frozen=True)
class Schedule:
    """When a campaign is sent: once `at` a time, on a `cron` expression in a zone, or `after` an event."""

    kind: str  # "at", "cron" or "after"
    at: dt.datetime | None = None  # UTC
    cron: str | None = None
    timezone: str | None = None
    event: str | None = None
    days: float | None = None

    def as_json(self) -> dict[str, Any]:
        if self.kind == "at" and self.at is not None:
            return {"at": self.at.isoformat()}
        if self.kind == "cron":
            return {"cron": self.cron, "timezone": self.timezone}
        return {"after": {"event": self.event, "days": self.days}}


@dataclass(frozen=True)
class CampaignDefinition:
    """A campaign file, checked: what `save_campaign` stores."""

    name: str
    segment: str
    message: dict[str, str]
    purpose: str = "follow_up"
    kind: str = "announcement"
    asks: str | None = None
    buttons: list[dict[str, Any]] = field(default_factory=list)
    schedule: Schedule | None = None
    # The file it came from, so errors found when saving (an unknown segment) name its line too.
    spec: Spec = field(default_factory=lambda: Spec(data={}), compare=False, repr=False)


def _missing(spec: Spec, name: str, message: str) -> SpecError:
    """A required field that is absent: named at the top of the file, where it belongs."""
    return SpecError(f"missing: {message}", path=spec.path, line=1, field=name)


def _text(spec: Spec, value: Any, at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise spec.error(at, "expected a non-empty text")
    return value.strip()


def _choice(spec: Spec, value: Any, at: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise spec.error(at, f"expected one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _zone(spec: Spec, value: Any, at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise spec.error(at, "expected a time zone name, like Asia/Shanghai")
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise spec.error(at, f"{value!r} is not a known time zone (like Asia/Shanghai or UTC)") from None
    return value.strip()


def _at(spec: Spec, value: Any, now: dt.datetime) -> dt.datetime:
    when: dt.datetime | None = None
    if isinstance(value, dt.datetime):  # YAML reads an unquoted timestamp itself
        when = value
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            when = None
    if when is None:
        raise spec.error(
            "schedule.at", 'expected an ISO 8601 time with its offset, like "2027-03-01T09:00:00+08:00"'
        )
    if when.tzinfo is None or when.utcoffset() is None:
        raise spec.error("schedule.at", "the time has no offset: add one, like +08:00 (or Z for UTC)")
    when = when.astimezone(dt.UTC)
    if when <= now:
        raise spec.error("schedule.at", f"{when.isoformat()} is in the past")
    return when


def _cron(spec: Spec, value: Any, zone: str, now: dt.datetime) -> str:
    if not isinstance(value, str) or not value.strip():
        raise spec.error("schedule.cron", 'expected a cron expression, like "0 9 * * MON"')
    expression = " ".join(value.split())
    try:
        trigger = CronTrigger.from_crontab(expression, timezone=ZoneInfo(zone))
    except ValueError as error:
        raise spec.error("schedule.cron", f"not a valid cron expression ({error})") from None
    if trigger.get_next_fire_time(None, now) is None:
        raise spec.error("schedule.cron", "the expression never fires")
    return expression


def _after(spec: Spec, value: Any) -> Schedule:
    if not isinstance(value, Mapping):
        raise spec.error("schedule.after", "expected {event: low_rating, days: 3}")
    check_fields(spec, value, at="schedule.after", allowed=AFTER_FIELDS)
    if "event" not in value:
        raise spec.error("schedule.after", f"missing event (one of {', '.join(TRIGGER_EVENTS)})")
    event = _choice(spec, value.get("event"), "schedule.after.event", TRIGGER_EVENTS)
    days = value.get("days")
    if isinstance(days, bool) or not isinstance(days, int | float) or math.isnan(days):
        raise spec.error("schedule.after.days", "expected a number of days, like 3 or 0.5")
    if days <= 0:
        raise spec.error("schedule.after.days", "must be more than 0")
    return Schedule(kind="after", event=event, days=float(days))


def _schedule(spec: Spec, value: Any, now: dt.datetime, timezone: str) -> Schedule | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise spec.error("schedule", "expected at:, cron: or after: (or no schedule, for a draft)")
    check_fields(spec, value, at="schedule", allowed=SCHEDULE_FIELDS)
    kinds = [kind for kind in ("at", "cron", "after") if kind in value]
    if len(kinds) != 1:
        raise spec.error("schedule", "give exactly one of at:, cron: or after:")
    if "timezone" in value and kinds != ["cron"]:
        raise spec.error(
            "schedule.timezone", "only a cron schedule takes a time zone (at: carries its offset)"
        )
    if kinds == ["at"]:
        return Schedule(kind="at", at=_at(spec, value["at"], now))
    if kinds == ["cron"]:
        zone = _zone(spec, value["timezone"], "schedule.timezone") if "timezone" in value else timezone
        return Schedule(kind="cron", cron=_cron(spec, value["cron"], zone, now), timezone=zone)
    return _after(spec, value["after"])


def parse_campaign(spec: Spec, *, now: dt.datetime, timezone: str = DEFAULT_TIMEZONE) -> CampaignDefinition:
    """Check a campaign file whole; the first problem is a SpecError naming its file, line and field.
    `now` is what an `at:` time must be after; `timezone` the zone of a cron schedule that names none."""
    data = spec.data
    check_fields(spec, data, at="", allowed=TOP_FIELDS)
    if "name" not in data:
        raise _missing(spec, "name", "every campaign has a name")
    name = _text(spec, data["name"], "name")
    if len(name) > MAX_NAME_CHARS:
        raise spec.error("name", f"longer than {MAX_NAME_CHARS} characters")
    if "segment" not in data:
        raise _missing(spec, "segment", "the name of a saved segment (patronbot segment save)")
    segment = _text(spec, data["segment"], "segment")
    purpose = _choice(spec, data.get("purpose", "follow_up"), "purpose", CAMPAIGN_PURPOSES)
    kind = _choice(spec, data.get("kind", "announcement"), "kind", ("announcement", "question"))
    asks: str | None = None
    if kind == "question":
        if data.get("asks") is None:
            raise spec.error("kind", f"a question needs asks: ({', '.join(QUESTION_ASKS)})")
        asks = _choice(spec, data["asks"], "asks", QUESTION_ASKS)
    elif "asks" in data:
        raise spec.error("asks", "only a question asks something: add kind: question, or remove asks")
    message = parse_message(spec, data.get("message"))
    buttons = parse_buttons(spec, data.get("buttons"), list(message))
    schedule = _schedule(spec, data.get("schedule"), now, timezone)
    check_lengths(spec, message, buttons)
    return CampaignDefinition(
        name=name,
        segment=segment,
        message=message,
        purpose=purpose,
        kind=kind,
        asks=asks,
        buttons=buttons,
        schedule=schedule,
        spec=spec,
    )


def load_campaign_file(
    path: Path, *, now: dt.datetime | None = None, timezone: str = DEFAULT_TIMEZONE
) -> CampaignDefinition:
    """Read and check the campaign file at `path`."""
    return parse_campaign(load_spec(path), now=now or utcnow(), timezone=timezone)


def segment_size(session: Session, segment: Segment) -> int:
    """How many patrons the segment held when it was last refreshed (its membership rows)."""
    count = session.scalar(
        select(func.count()).select_from(SegmentMembership).where(SegmentMembership.segment_id == segment.id)
    )
    return int(count or 0)


def save_campaign(
    *,
    session: Session,
    definition: CampaignDefinition,
    staff_id: int | None = None,
    audience: Callable[[Session, Segment], int] | None = None,
) -> Campaign:
    """Store the campaign, or update the one of that name; refuses an unknown or empty segment, and a
    campaign that was cancelled or is done. A running or paused campaign keeps its status."""
    spec = definition.spec
    segment = session.scalars(select(Segment).where(Segment.name == definition.segment)).one_or_none()
    if segment is None:
        raise spec.error(
            "segment", f"no segment named {definition.segment!r}: save it first (patronbot segment save)"
        )
    if (audience or segment_size)(session, segment) == 0:
        raise spec.error("segment", f"segment {definition.segment!r} matches nobody: nothing would be sent")
    campaign = session.scalars(
        select(Campaign).where(Campaign.name == definition.name).with_for_update()
    ).one_or_none()
    if campaign is not None and campaign.status in ("cancelled", "done"):
        raise spec.error(
            "name", f"campaign {definition.name!r} is {campaign.status}: give the new campaign another name"
        )
    schedule = definition.schedule
    if campaign is None:
        campaign = Campaign(name=definition.name, created_by_id=staff_id)
        session.add(campaign)
    else:
        campaign.updated_at = utcnow()
    campaign.segment_id = segment.id
    campaign.purpose = definition.purpose
    campaign.kind = definition.kind
    campaign.asks = definition.asks
    campaign.message = dict(definition.message)
    campaign.buttons = [dict(button) for button in definition.buttons] or None
    campaign.schedule = schedule.as_json() if schedule is not None else None
    campaign.trigger_event = schedule.event if schedule is not None and schedule.kind == "after" else None
    campaign.trigger_days = schedule.days if schedule is not None and schedule.kind == "after" else None
    campaign.scheduled_at = schedule.at if schedule is not None and schedule.kind == "at" else None
    if campaign.status not in ("running", "paused"):
        campaign.status = "scheduled" if schedule is not None else "draft"
    session.flush()
    return campaign


def list_campaigns(*, session: Session) -> list[Campaign]:
    """Every campaign, the newest first."""
    return list(session.scalars(select(Campaign).order_by(Campaign.id.desc())))


def _campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id, with_for_update=True)
    if campaign is None:
        raise CampaignError(f"no campaign {campaign_id}: `patronbot campaign list` shows them")
    return campaign


def pause_campaign(*, session: Session, campaign_id: int) -> Campaign:
    """Hold the campaign: nothing more of it is sent until it is resumed (pausing it twice is harmless)."""
    campaign = _campaign(session, campaign_id)
    if campaign.status in ("cancelled", "done"):
        raise CampaignError(f"campaign {campaign_id} is {campaign.status}: there is nothing to pause")
    if campaign.status != "paused":
        campaign.status = "paused"
        campaign.updated_at = utcnow()
    return campaign


def resume_campaign(*, session: Session, campaign_id: int) -> Campaign:
    """Let a paused campaign go on: running again if a one-off run of it still has patrons to reach,
    else scheduled (or a draft, when it has no schedule)."""
    campaign = _campaign(session, campaign_id)
    if campaign.status != "paused":
        raise CampaignError(
            f"campaign {campaign_id} is {campaign.status}, not paused: there is nothing to resume"
        )
    schedule = schedule_of(campaign) or {}
    pending = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.campaign_id == campaign.id, Delivery.state == "pending")
    )
    # A recurring or triggered campaign is always waiting for its next occasion: scheduled, not running.
    one_off = "cron" not in schedule and "after" not in schedule
    if one_off and pending:
        campaign.status = "running"
    else:
        campaign.status = "scheduled" if schedule else "draft"
    campaign.updated_at = utcnow()
    return campaign


def cancel_campaign(*, session: Session, campaign_id: int) -> int:
    """Cancel the campaign for good and every delivery of it not yet handed to the outbox; returns how
    many deliveries were cancelled. Deliveries already queued go on: their messages are on their way."""
    campaign = _campaign(session, campaign_id)
    if campaign.status == "done":
        raise CampaignError(f"campaign {campaign_id} is done: there is nothing left to cancel")
    if campaign.status != "cancelled":
        campaign.status = "cancelled"
        campaign.updated_at = utcnow()
    # Only pending rows: a sender moves a row on with `WHERE state = 'pending'`, so a row is either
    # cancelled here or queued there, never both.
    result = session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == campaign.id, Delivery.state == "pending")
        .values(state="cancelled")
        .execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult, result).rowcount or 0)


def schedule_of(campaign: Campaign) -> dict[str, Any] | None:
    """The campaign's stored schedule ({"at": ..} | {"cron": .., "timezone": ..} | {"after": {..}})."""
    schedule = campaign.schedule
    return dict(schedule) if isinstance(schedule, Mapping) else None


def describe_schedule(schedule: Mapping[str, Any] | None, *, zone: ZoneInfo | None = None) -> str:
    """A schedule in words, for lists: "once at 2027-03-01 09:00 Asia/Shanghai", "cron 0 9 * * MON
    (Asia/Shanghai)", "3 days after low_rating", or that it is a draft."""
    if not schedule:
        return "none (draft: sent by campaign run)"
    if "at" in schedule:
        when = dt.datetime.fromisoformat(str(schedule["at"]))
        shown = when.astimezone(zone) if zone is not None else when
        return f"once at {shown:%Y-%m-%d %H:%M} {zone.key if zone is not None else 'UTC'}"
    if "cron" in schedule:
        return f"cron {schedule['cron']} ({schedule.get('timezone') or DEFAULT_TIMEZONE})"
    after = schedule.get("after") or {}
    days = float(after.get("days") or 0)
    count = f"{days:g} day" + ("" if days == 1 else "s")
    return f"{count} after {after.get('event')}"
