"""Cron schedules and data intervals. Pure functions; every time is an aware UTC datetime.

A run covers the half-open interval [previous fire time, this fire time): the nightly
``0 4 * * *`` run that fires at 2026-11-26 04:00 covers 2026-11-25 04:00 .. 2026-11-26 04:00.
Operators name an interval by the day it starts on (``--date 2026-11-25``).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from croniter import CroniterBadDateError, croniter

from .errors import ConfigError, JobDefinitionError


@dataclass(frozen=True, order=True)
class Interval:
    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"{fmt(self.start)}..{fmt(self.end)}"


def fmt(t: datetime) -> str:
    """ISO 8601 UTC with a Z, seconds precision: ``2026-11-25T04:00:00Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_fmt(text: str) -> datetime:
    """The inverse of ``fmt``: ``2026-11-25T04:00:00Z`` -> an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc(t: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """A 5-field cron expression, evaluated in UTC."""

    expr: str

    def __post_init__(self) -> None:
        if not isinstance(self.expr, str) or len(self.expr.split()) != 5:
            raise JobDefinitionError(
                f"schedule {self.expr!r}: expected 5 cron fields (minute hour day month weekday)"
            )
        if not croniter.is_valid(self.expr):
            raise JobDefinitionError(f"schedule {self.expr!r} is not a valid cron expression")
        check_fires(self.expr)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after``."""
        return croniter(self.expr, utc(after)).get_next(datetime).astimezone(UTC)

    def prev_fire(self, at: datetime) -> datetime:
        """The last fire time at or before ``at``."""
        at = utc(at)
        it = croniter(self.expr, at + timedelta(microseconds=1))
        return it.get_prev(datetime).astimezone(UTC)

    def interval_ending(self, fire: datetime) -> Interval:
        """The interval a run firing at ``fire`` covers."""
        fire = self.prev_fire(fire)
        start = croniter(self.expr, fire).get_prev(datetime).astimezone(UTC)
        return Interval(start, fire)

    def latest_complete(self, now: datetime) -> Interval:
        """The newest interval that has fully passed at ``now``."""
        return self.interval_ending(now)

    def intervals_starting(self, first: datetime, until: datetime) -> Iterator[Interval]:
        """Every interval whose start lies in [first, until), oldest first."""
        first, until = utc(first), utc(until)
        it = croniter(self.expr, first - timedelta(microseconds=1))
        start = it.get_next(datetime).astimezone(UTC)
        while start < until:
            end = it.get_next(datetime).astimezone(UTC)
            yield Interval(start, end)
            start = end

    def day_offsets(self) -> tuple[tuple[int, ...], bool]:
        """The seconds after midnight the schedule fires at on a day it fires (cron fires at
        every listed minute of every listed hour on each day it fires at all), and whether it
        fires every day (the day fields are all ``*``)."""
        return _day_offsets(self.expr)

    def fires_on(self, day: datetime) -> bool:
        """Does it fire at all on the UTC day starting at ``day`` (midnight)?"""
        return self.day_offsets()[1] or \
            self.next_fire(day - timedelta(microseconds=1)) < day + timedelta(days=1)

    def count_starting(self, first: datetime, until: datetime) -> int:
        """How many intervals start in [first, until), without walking them (a ``* * * * *``
        schedule has 1,440 a day): per day, a count over ``day_offsets`` (and one croniter call
        per day when the day fields restrict the days)."""
        first, until = utc(first), utc(until)
        if until <= first:
            return 0
        offsets, _ = self.day_offsets()
        n = 0
        day = datetime(first.year, first.month, first.day, tzinfo=UTC)
        while day < until:
            if self.fires_on(day):
                lo = max(0.0, (first - day).total_seconds())
                hi = min(86400.0, (until - day).total_seconds())
                n += bisect.bisect_left(offsets, hi) - bisect.bisect_left(offsets, lo)
            day += timedelta(days=1)
        return n

    def interval_on(self, day: date | datetime) -> Interval:
        """The interval that starts on ``day`` (a date) or exactly at ``day`` (a datetime).

        A schedule that fires several times a day has several intervals starting on one date;
        then a time is needed to say which (backfill runs them all).
        """
        if isinstance(day, datetime):
            found = list(self.intervals_starting(day, day + timedelta(microseconds=1)))
            if not found:
                nearest = self.next_fire(day - timedelta(microseconds=1))
                raise ConfigError(
                    f"no interval of {self.expr!r} starts at {fmt(day)}; next one starts at "
                    f"{fmt(nearest)}"
                )
            return found[0]
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        found = list(self.intervals_starting(start, start + timedelta(days=1)))
        if len(found) == 1:
            return found[0]
        if not found:
            raise ConfigError(f"no interval of {self.expr!r} starts on {day.isoformat()}")
        raise ConfigError(
            f"{len(found)} intervals of {self.expr!r} start on {day.isoformat()}; give a time "
            f"(--date {fmt(found[0].start)[:16]}) or use backfill for the whole day"
        )


@functools.lru_cache(maxsize=256)
def _day_offsets(expr: str) -> tuple[tuple[int, ...], bool]:
    minutes, hours, *days = croniter(expr).expanded
    minutes = range(60) if minutes == ["*"] else minutes
    hours = range(24) if hours == ["*"] else hours
    return (tuple(sorted(h * 3600 + m * 60 for h in hours for m in minutes)),
            all(d == ["*"] for d in days))


FIRES_WITHIN_YEARS = 5  # a schedule must fire within this horizon, both ways from now


def check_fires(expr: str, now: datetime | None = None) -> None:
    """Refuse a cron expression that croniter accepts but that never fires, or fires less
    often than every FIRES_WITHIN_YEARS years (``0 0 31 2 *``, ``0 0 30 2 *``): a run covers
    [previous fire, this fire), so both must exist. The search is bounded by that horizon."""
    now = utc(now or datetime.now(UTC))
    try:
        for backwards in (False, True):
            it = croniter(expr, now, max_years_between_matches=FIRES_WITHIN_YEARS)
            fire = (it.get_prev if backwards else it.get_next)(datetime)
            if abs(utc(fire) - now) > timedelta(days=366 * FIRES_WITHIN_YEARS):
                raise CroniterBadDateError(expr)
    except CroniterBadDateError:
        raise JobDefinitionError(
            f"schedule {expr!r} never fires (no fire time within {FIRES_WITHIN_YEARS} years); "
            "check the day of month against the month") from None


# The span of dates an operator may name (``--date``, ``--start``/``--end``, ``--since``):
# well inside what ``datetime`` holds (years 1..9999), so that croniter stepping to the
# neighbouring fire, a day added to ``--end``, or a job shifting its window (email_events reads
# its hour shifted back by the provider's lag) can never overflow. Before 1970 is a typo
# in practice (and negative Unix times trip many APIs); after 9998 is far beyond "not ended".
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)  # exclusive


def parse_day(value: str, what: str = "--date") -> date | datetime:
    """``2026-11-25`` -> date; ``2026-11-25T04:00`` (UTC unless an offset is given) -> datetime.

    ``what`` names the option in the error: an empty value, one that is not a date or a time,
    and one outside EARLIEST..LATEST are each a one-line ConfigError.
    """
    day = _read_day(value, what)
    if not EARLIEST <= day_start(day) < LATEST:
        raise _out_of_range(value, what)
    return day


def _read_day(value: str, what: str) -> date | datetime:
    text = (value or "").strip()
    if not text:
        raise ConfigError(f"{what} is empty: give a day (YYYY-MM-DD) or a time "
                          "(YYYY-MM-DDTHH:MM, UTC)")
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except OverflowError:  # an offset that moves year 1 or 9999 out of datetime's range
        raise _out_of_range(value, what) from None
    except ValueError:
        raise ConfigError(
            f"{what} {value!r} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM)"
        ) from None


def _out_of_range(value: str, what: str) -> ConfigError:
    return ConfigError(f"{what} {value.strip()} is out of range: jankycron runs intervals from "
                       f"{EARLIEST:%Y-%m-%d} to {LATEST - timedelta(days=1):%Y-%m-%d}")


def day_start(day: date | datetime) -> datetime:
    """A day's midnight UTC; a datetime (already UTC) as it is."""
    if isinstance(day, datetime):
        return day
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def ensure_ended(interval: Interval, now: datetime) -> Interval:
    """``interval``, if it has ended at ``now``; a run of an interval still in progress would
    read part of its data and look done (and the status page and history would say so)."""
    if interval.end > now:
        raise ConfigError(f"interval {interval} has not ended; run it after {fmt(interval.end)}")
    return interval


def run_interval(schedule: Schedule, value: str | None, now: datetime) -> Interval:
    """The interval ``jankycron run --date VALUE`` means (None: the latest complete one),
    refused with a one-line ConfigError unless it is a valid interval that has ended."""
    if value is None:
        return schedule.latest_complete(now)
    day = parse_day(value, "--date")
    try:
        interval = schedule.interval_on(day)
    except (OverflowError, ValueError):  # the next fire lies beyond datetime's years
        raise ConfigError(f"--date {value}: the interval starting then has not ended") from None
    return ensure_ended(interval, now)


def backfill_intervals(schedule: Schedule, start: str, end: str, now: datetime
                       ) -> list[Interval]:
    """The intervals ``jankycron backfill --start START --end END`` runs, oldest first: those
    starting from START's day (or time) up to END's day (inclusive; or up to and including a
    time). Refused with one line if the range is empty or reaches an interval that has not
    ended (naming it, and the last ``--end`` that can run now), so a backfill never runs part
    of a range, nor an interval still in progress."""
    first, last = parse_day(start, "--start"), _read_day(end, "--end")
    lo = day_start(first)
    if day_start(last) >= LATEST:  # "until whenever": refused below as not ended, with a hint
        hi = LATEST
    else:  # intervals start before `hi` (a day: the next midnight; a time: just after it)
        last = parse_day(end, "--end")
        hi = day_start(last) + (timedelta(microseconds=1) if isinstance(last, datetime)
                                else timedelta(days=1))
    if hi <= lo:
        raise ConfigError(f"--end {end} is before --start {start}")
    try:  # the first interval of the range that has not ended: the one in progress at `now`,
        # or the first one of a range that starts later
        current = schedule.prev_fire(now)
        pending = Interval(current, schedule.next_fire(current)) if lo <= current else \
            next(schedule.intervals_starting(lo, LATEST), None)
    except (OverflowError, ValueError):
        raise ConfigError(f"--start {start}: the intervals from then on have not ended") \
            from None
    if pending is not None and pending.start < hi:
        before = schedule.interval_ending(pending.start)
        hint = ""
        if before.start >= lo:  # an --end that covers only ended intervals
            hint = (f"; the last --end that can run now is {before.start.date().isoformat()}"
                    if before.start.date() != pending.start.date() else
                    f"; the last --end that can run now is {fmt(before.start)[:16]}")
        raise ConfigError(f"backfill {start}..{end} reaches interval {pending}, which has not "
                          f"ended (run it after {fmt(pending.end)}){hint}")
    intervals = list(schedule.intervals_starting(lo, hi))
    if not intervals:
        raise ConfigError(f"no interval of {schedule.expr!r} starts in {start}..{end}")
    return intervals


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class MaintenanceWindow:
    """Weekly windows in UTC when warehouse failures are expected (Redshift's maintenance),
    e.g. ``mon 02:00-02:30``; several separated by commas. A window may cross midnight."""

    spans: tuple[tuple[int, int], ...]  # (start, end) in minutes from Monday 00:00

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        spans = []
        for part in text.split(","):
            words = part.strip().lower().split()
            try:
                day, times = words
                start_s, end_s = times.split("-")
                start = _DAYS.index(day[:3]) * 1440 + _minutes(start_s)
                length = (_minutes(end_s) - _minutes(start_s)) % 1440
            except (ValueError, IndexError):
                raise ConfigError(
                    f"JANKYCRON_MAINTENANCE_WINDOW={text!r}: expected windows like "
                    "'mon 02:00-02:30' (UTC), separated by commas") from None
            if length == 0:
                raise ConfigError(f"JANKYCRON_MAINTENANCE_WINDOW={text!r}: empty window")
            spans.append((start, start + length))
        return cls(tuple(spans))

    def contains(self, t: datetime) -> bool:
        t = utc(t)
        minute = t.weekday() * 1440 + t.hour * 60 + t.minute
        week = 7 * 1440
        return any(start <= minute < end or start <= minute + week < end
                   for start, end in self.spans)

    def __str__(self) -> str:
        return ", ".join(
            f"{_DAYS[s // 1440]} {s % 1440 // 60:02d}:{s % 60:02d}-"
            f"{e % 1440 // 60:02d}:{e % 60:02d}" for s, e in self.spans) + " UTC"


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    if not (0 <= int(h) < 24 and 0 <= int(m) < 60):
        raise ValueError(hhmm)
    return int(h) * 60 + int(m)
