"""Quiet hours: the daily window, in a patron's own time, in which no campaign message is sent."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


class QuietHoursError(ValueError):
    """PATRONBOT_QUIET_HOURS is not "HH:MM-HH:MM"."""


@dataclass(frozen=True)
class QuietHours:
    """A daily window (in the patron's local time) in which no campaign message is sent."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """ "21:00-08:00" (may wrap midnight); "" turns quiet hours off."""
        if not text.strip():
            return None
        try:
            start, end = (dt.time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise QuietHoursError(
                f"quiet hours {text!r} are not HH:MM-HH:MM (for example 21:00-08:00; empty for none)"
            ) from None
        if start == end:
            raise QuietHoursError(f"quiet hours {text!r} start and end at the same time")
        return cls(start=start, end=end)

    def contains(self, local: dt.time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, moment: dt.datetime) -> dt.datetime:
        """The first moment at or after `moment` (aware, local) outside the quiet hours."""
        if not self.contains(moment.timetz().replace(tzinfo=None)):
            return moment
        day = moment.date()
        if self.start > self.end and moment.time() >= self.start:
            day += dt.timedelta(days=1)
        return dt.datetime.combine(day, self.end, tzinfo=moment.tzinfo)
