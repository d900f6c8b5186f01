"""Cron schedules in UTC; a run covers [previous fire, this fire); --date names the start day."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from jankycron.errors import ConfigError, JobDefinitionError
from jankycron.schedule import Interval, MaintenanceWindow, Schedule, parse_day


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
