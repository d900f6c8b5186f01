"""Cron schedules in UTC; a run covers [previous fire, this fire); --date names the start day."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from jankycron.errors import ConfigError, JobDefinitionError
from jankycron.schedule import (
    Interval,
    MaintenanceWindow,
    Schedule,
    backfill_intervals,
    parse_day,
    run_interval,
)
from jankycron.sources import email


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_nightly_run_covers_the_previous_day() -> None:
    s = Schedule("0 4 * * *")
    assert s.latest_complete(at(2026, 11, 26, 11, 0)) == Interval(at(2026, 11, 25, 4),
                                                                  at(2026, 11, 26, 4))
    # exactly at the fire time, the interval that just ended is complete
    assert s.latest_complete(at(2026, 11, 26, 4)).end == at(2026, 11, 26, 4)
    assert s.next_fire(at(2026, 11, 26, 4)) == at(2026, 11, 27, 4)


def test_date_means_the_interval_that_starts_on_that_day() -> None:
    s = Schedule("0 4 * * *")
    assert s.interval_on(date(2026, 11, 25)) == Interval(at(2026, 11, 25, 4), at(2026, 11, 26, 4))


def test_weekly_schedule_has_no_interval_on_most_days() -> None:
    s = Schedule("0 0 * * 1")  # Mondays
    assert s.interval_on(date(2026, 11, 23)) == Interval(at(2026, 11, 23), at(2026, 11, 30))
    with pytest.raises(ConfigError, match="no interval"):
        s.interval_on(date(2026, 11, 24))


def test_hourly_schedule_needs_a_time_to_name_one_interval() -> None:
    s = Schedule("0 * * * *")
    with pytest.raises(ConfigError, match="24 intervals .* give a time"):
        s.interval_on(date(2026, 11, 25))
    assert s.interval_on(parse_day("2026-11-25T13:00")) == Interval(at(2026, 11, 25, 13),
                                                                     at(2026, 11, 25, 14))


def test_intervals_for_a_backfill_are_contiguous_and_oldest_first() -> None:
    got = list(Schedule("*/30 * * * *").intervals_starting(at(2026, 11, 25), at(2026, 11, 26)))
    assert len(got) == 48
    assert got[0].start == at(2026, 11, 25) and got[-1].end == at(2026, 11, 26)
    assert all(a.end == b.start for a, b in zip(got, got[1:], strict=False))


def test_month_end_and_leap_day() -> None:
    s = Schedule("0 0 1 * *")
    assert s.interval_on(date(2028, 2, 1)) == Interval(at(2028, 2, 1), at(2028, 3, 1))


@pytest.mark.parametrize("expr", ["0 4 * *", "61 * * * *", "every day", ""])
def test_bad_cron_is_a_clear_error(expr: str) -> None:
    with pytest.raises(JobDefinitionError, match="cron"):
        Schedule(expr)


@pytest.mark.parametrize("text", ["2026-13-01", "yesterday", "25/11/2026"])
def test_bad_date_is_a_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        parse_day(text)


def test_maintenance_window_contains_its_minutes_only() -> None:
    w = MaintenanceWindow.parse("mon 02:00-02:30")
    assert str(w) == "mon 02:00-02:30 UTC"
    monday = at(2026, 11, 23)  # a Monday
    assert not w.contains(monday.replace(hour=1, minute=59))
    assert w.contains(monday.replace(hour=2)) and w.contains(monday.replace(hour=2, minute=29))
    assert not w.contains(monday.replace(hour=2, minute=30))
    assert not w.contains(at(2026, 11, 24, 2, 10))  # Tuesday


def test_maintenance_windows_across_midnight_and_the_week_end() -> None:
    w = MaintenanceWindow.parse("sun 23:45-00:15, Wed 03:00-03:30")
    assert w.contains(at(2026, 11, 29, 23, 50))  # Sunday night
    assert w.contains(at(2026, 11, 30, 0, 10))  # Monday just after midnight
    assert not w.contains(at(2026, 11, 30, 0, 15))
    assert w.contains(at(2026, 11, 25, 3, 0))  # Wednesday


@pytest.mark.parametrize("text", ["monday", "mon 2-3", "xyz 02:00-02:30", "mon 02:00-02:00",
                                  "mon 25:00-02:00"])
def test_a_bad_maintenance_window_is_a_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match="JANKYCRON_MAINTENANCE_WINDOW"):
        MaintenanceWindow.parse(text)


# ------------------------------------------------------------------ what an operator may name
NOW = at(2026, 12, 1, 22, 17)  # the nightly 04:00 interval of Dec 1 has not ended yet


@pytest.mark.parametrize("text", ["", "  "])
def test_an_empty_date_is_an_error_not_the_default_interval(text: str) -> None:
    with pytest.raises(ConfigError, match="^--date is empty"):
        run_interval(Schedule("0 4 * * *"), text, NOW)
    assert run_interval(Schedule("0 4 * * *"), None, NOW) == Interval(at(2026, 11, 30, 4),
                                                                      at(2026, 12, 1, 4))


@pytest.mark.parametrize("text", ["0001-01-01", "9999-12-31", "1969-12-31T23:00",
                                  "0001-01-01T00:00+01:00", "9999-12-31T23:00-01:00"])
def test_a_date_at_the_ends_of_the_calendar_is_out_of_range(text: str) -> None:
    """Year 1 and 9999 are one clear line, not an OverflowError from croniter or datetime."""
    for schedule in ("0 4 * * *", "0 * * * *", "0 0 1 * *"):
        with pytest.raises(ConfigError, match="out of range: jankycron runs intervals from "
                                              "1970-01-01 to 9998-12-31"):
            run_interval(Schedule(schedule), text, NOW)
        with pytest.raises(ConfigError, match="out of range"):
            backfill_intervals(Schedule(schedule), text, "2026-11-01", NOW)


def test_the_earliest_interval_leaves_room_for_a_shifted_window() -> None:
    """email_events reads its hour shifted back by the provider's lag: the first interval an
    operator may name can still be shifted (and croniter can step back from it)."""
    schedule = Schedule("0 * * * *")
    first = run_interval(schedule, "1970-01-01T00:00", NOW)
    assert first == Interval(at(1970, 1, 1, 0), at(1970, 1, 1, 1))
    seen = []

    class Provider:  # the EmailProvider protocol: pull() asks it for the shifted window
        name, lag = "test", timedelta(minutes=30)

        def events(self, start: datetime, end: datetime) -> list:
            seen.append((start, end))
            return []

    email.pull(first.start, first.end, Provider(), now=NOW)
    assert seen == [(at(1969, 12, 31, 23, 30), at(1970, 1, 1, 0, 30))]
    assert backfill_intervals(schedule, "1970-01-01", "1970-01-01", NOW)[0] == first


def test_an_interval_that_has_not_ended_says_when_it_can_run() -> None:
    nightly = Schedule("0 4 * * *")
    with pytest.raises(ConfigError) as e:
        run_interval(nightly, "2026-12-01", NOW)
    assert str(e.value) == ("interval 2026-12-01T04:00:00Z..2026-12-02T04:00:00Z has not "
                            "ended; run it after 2026-12-02T04:00:00Z")
    with pytest.raises(ConfigError, match="2030-01-01T04:00:00Z.* has not ended"):
        run_interval(nightly, "2030-01-01", NOW)
    # the moment it ends, it can run
    assert run_interval(nightly, "2026-12-01", at(2026, 12, 2, 4)).end == at(2026, 12, 2, 4)
    with pytest.raises(ConfigError, match="22:00:00Z..2026-12-01T23:00:00Z has not ended"):
        run_interval(Schedule("0 * * * *"), "2026-12-01T22:00", NOW)


def test_a_backfill_into_the_future_is_refused_with_the_last_end_that_can_run() -> None:
    nightly = Schedule("0 4 * * *")
    for end in ("2026-12-01", "2026-12-25", "9999-12-31"):
        with pytest.raises(ConfigError) as e:
            backfill_intervals(nightly, "2026-11-01", end, NOW)
        assert str(e.value) == (
            f"backfill 2026-11-01..{end} reaches interval 2026-12-01T04:00:00Z..2026-12-02T"
            "04:00:00Z, which has not ended (run it after 2026-12-02T04:00:00Z); the last "
            "--end that can run now is 2026-11-30")
    got = backfill_intervals(nightly, "2026-11-01", "2026-11-30", NOW)
    assert len(got) == 30 and got[-1].end == at(2026, 12, 1, 4)
    # a range entirely in the future has no --end to suggest
    with pytest.raises(ConfigError, match=r"reaches interval 2026-12-05T04.*\(run it after "
                                          r"2026-12-06T04:00:00Z\)$"):
        backfill_intervals(nightly, "2026-12-05", "2026-12-06", NOW)


def test_a_backfill_of_an_hourly_job_may_end_at_a_time() -> None:
    """The last valid end of today's hours is a time; --start/--end take times as bounds."""
    hourly = Schedule("0 * * * *")
    with pytest.raises(ConfigError, match="reaches interval 2026-12-01T22:00:00Z..2026-12-01"
                                          "T23:00:00Z.*the last --end that can run now is "
                                          "2026-12-01T21:00$"):
        backfill_intervals(hourly, "2026-11-30", "2026-12-01", NOW)
    got = backfill_intervals(hourly, "2026-11-30", "2026-12-01T21:00", NOW)
    assert len(got) == 24 + 22 and got[-1] == Interval(at(2026, 12, 1, 21), at(2026, 12, 1, 22))
    assert backfill_intervals(hourly, "2026-12-01T10:00", "2026-12-01T12:00", NOW) == [
        Interval(at(2026, 12, 1, h), at(2026, 12, 1, h + 1)) for h in (10, 11, 12)]


@pytest.mark.parametrize(("start", "end", "message"), [
    ("2026-11-05", "2026-11-01", "--end 2026-11-01 is before --start 2026-11-05"),
    ("", "2026-11-01", "--start is empty"),
    ("2026-11-01", " ", "--end is empty"),
    ("2026-11-01", "someday", "--end 'someday' is not a date"),
])
def test_a_bad_backfill_range_is_one_clear_error(start: str, end: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        backfill_intervals(Schedule("0 4 * * *"), start, end, NOW)


@pytest.mark.parametrize("expr", ["* * * * *", "*/5 2-4 * * 1-5", "0 4 * * *", "0 0 29 2 *",
                                  "7,13 */3 1,15 * 0", "30 1 * 2 *"])
def test_counting_intervals_agrees_with_walking_them(expr: str) -> None:
    """The status page counts a frequent job's slots instead of listing them: the count must
    be exactly what walking the schedule gives, over any span (partial days, restricted
    days, leap days)."""
    schedule = Schedule(expr)
    rng = random.Random(expr)
    for _ in range(25):
        first = at(2027, 1, 1) + timedelta(seconds=rng.randrange(0, 500 * 86400))
        until = first + timedelta(seconds=rng.randrange(0, 4 * 86400))
        assert schedule.count_starting(first, until) == sum(
            1 for _ in schedule.intervals_starting(first, until))
