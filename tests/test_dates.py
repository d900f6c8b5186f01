"""An operator names intervals by date: every path (run and backfill, `--local` and through the
workers, rerun) refuses an interval that has not ended, a date it cannot take, or an empty one,
in one `error:` line, before anything runs or is enqueued. Through the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from conftest import Workspace

from jankycron.ledger import Ledger, RunStatus
from jankycron.schedule import Interval

BROKER = os.environ.get("JANKYCRON_TEST_CELERY_REDIS", "redis://127.0.0.1:6379/11")

JOB = '''
from jankycron import job

@job(schedule="0 3 * * *", table="orders", key="id")
def orders(run):
    yield {"id": 1}
'''


def today() -> str:
    """The interval starting today at 03:00 ends tomorrow: it has never ended yet."""
    return datetime.now(UTC).date().isoformat()


def tomorrow_3am() -> str:
    d = datetime.now(UTC).date() + timedelta(days=1)
    return f"{d.isoformat()}T03:00:00Z"


def bad_dates() -> list[tuple[str, list[str]]]:
    """(--date value, words the error line must hold)."""
    return [
        ("", ["--date is empty"]),
        ("   ", ["--date is empty"]),
        ("9999-12-31", ["--date 9999-12-31 is out of range", "1970-01-01 to 9998-12-31"]),
        ("0001-01-01", ["--date 0001-01-01 is out of range"]),
        ("0001-01-01T00:00+01:00", ["out of range"]),
        ("2030-01-01", ["interval 2030-01-01T03:00:00Z..2030-01-02T03:00:00Z has not ended",
                        "run it after 2030-01-02T03:00:00Z"]),
        (today(), [f"interval {today()}T03:00:00Z..", "has not ended",
                   f"run it after {tomorrow_3am()}"]),
    ]


def one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1, no traceback, and stderr is exactly one `error: ...` line with the words."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for word in words:
        assert word in lines[0], f"{word!r} missing from {lines[0]!r}"
    return lines[0]


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """A real Redis as the broker (the test's database, flushed before and after)."""
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def test_run_local_refuses_bad_and_unfinished_dates_in_one_line(ws: Workspace) -> None:
    """`run --local --date D` for an interval that has not ended, a date at the ends of the
    calendar, or an empty value: one line, exit 1, and no run in the ledger (a run dated 2030
    would have silenced the job's missed-run alert)."""
    ws.write_job("orders", JOB)
    for value, words in bad_dates():
        one_error_line(ws.cli("run", "orders", "--date", value, "--local"), *words)
    assert ws.cli_json("history") == []


def test_the_workers_path_refuses_the_same_before_enqueueing(duck_ws: Workspace,
                                                             broker: redis.Redis) -> None:
    """Without --local, `run` and `backfill` check the interval before they enqueue: the same
    line, and nothing reaches the (real, reachable) broker."""
    duck_ws.write_job("orders", JOB)
    env = {"JANKYCRON_BROKER_URL": BROKER}
    for value, words in bad_dates():
        one_error_line(duck_ws.cli("run", "orders", "--date", value, "--no-wait", env=env),
                       *words)
    one_error_line(duck_ws.cli("backfill", "orders", "--start", "2026-11-01", "--end",
                               "2030-01-01", "--no-wait", env=env),
                   "reaches interval", "which has not ended")
    one_error_line(duck_ws.cli("backfill", "orders", "--start", "", "--end", "2026-11-01",
                               "--no-wait", env=env), "--start is empty")
    assert broker.dbsize() == 0, broker.keys()
    assert duck_ws.cli_json("history") == []


def test_a_backfill_into_the_future_runs_nothing_and_names_the_last_valid_end(
        duck_ws: Workspace) -> None:
    """A range that reaches an interval still in progress is refused as a whole (a backfill
    never runs half a range), naming that interval and the last --end that can run now."""
    duck_ws.write_job("orders", JOB)
    in_progress = datetime.now(UTC) - timedelta(hours=3)  # the day its interval started on
    last_valid = (in_progress.date() - timedelta(days=1)).isoformat()
    for end in (today(), "2030-01-01", "9999-12-31"):
        line = one_error_line(duck_ws.cli("backfill", "orders", "--start", "2026-11-01",
                                          "--end", end, "--local"),
                              f"backfill 2026-11-01..{end} reaches interval", "has not ended")
        assert line.endswith(f"; the last --end that can run now is {last_valid}"), line
    one_error_line(duck_ws.cli("backfill", "orders", "--start", "2026-11-05", "--end",
                               "2026-11-01", "--local"),
                   "--end 2026-11-01 is before --start 2026-11-05")
    one_error_line(duck_ws.cli("backfill", "orders", "--start", "0001-01-01", "--end",
                               "2026-11-01", "--local"), "--start 0001-01-01 is out of range")
    assert duck_ws.cli_json("history") == []


def test_rerun_failed_leaves_an_interval_that_has_not_ended(duck_ws: Workspace,
                                                            broker: redis.Redis) -> None:
    """An old ledger (or the API) may hold a failed run of an interval that has not ended:
    `rerun --failed` says so and does not enqueue it. An empty --since is an error."""
    duck_ws.write_job("orders", JOB)
    ledger = Ledger(duck_ws.env["JANKYCRON_STATE_URL"])
    future = Interval(datetime(2030, 1, 1, 3, tzinfo=UTC), datetime(2030, 1, 2, 3, tzinfo=UTC))
    ledger.finish_run(ledger.start_run("orders", future), RunStatus.FAILED, error="boom")
    ledger.close()
    env = {"JANKYCRON_BROKER_URL": BROKER}
    proc = duck_ws.cli("rerun", "--failed", "--no-wait", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "nothing to rerun"
    assert ("warning: orders: interval 2030-01-01T03:00:00Z..2030-01-02T03:00:00Z has not "
            "ended; run it after 2030-01-02T03:00:00Z: not rerun") in proc.stderr
    one_error_line(duck_ws.cli("rerun", "--failed", "--since", "", env=env), "--since is empty")
    assert broker.dbsize() == 0, broker.keys()


# ------------------------------------------------------------------ far dates already recorded
PINNED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def recorded(ledger: Ledger, interval: Interval, started_at: datetime | None = None) -> str:
    """A successful run as an old ledger or the API may hold it."""
    run_id = ledger.start_run("orders", interval)
    ledger.finish_run(run_id, RunStatus.SUCCESS)
    if started_at is not None:
        ledger._exec("UPDATE jc_runs SET started_at = ? WHERE id = ?",
                     (started_at.strftime("%Y-%m-%dT%H:%M:%SZ"), run_id))
    return run_id


def nightly(day: int) -> Interval:
    start = datetime(2026, 11, day, 3, tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


FAR = [Interval(datetime(9999, 12, 31, 3, tzinfo=UTC), datetime(9999, 12, 31, 4, tzinfo=UTC)),
       Interval(datetime(1970, 1, 1, 3, tzinfo=UTC), datetime(1970, 1, 2, 3, tzinfo=UTC))]


def test_the_status_page_copes_with_far_dates_and_early_runs(duck_ws: Workspace) -> None:
    """Runs dated 9999 and 1970 in the ledger, and ?date= at the ends of the calendar: every
    page renders; no rerun command is offered that the CLI would refuse; and a success that
    started before its interval ended is a missed cell, as the missed-run check sees it."""
    from jankycron.web import create_app

    duck_ws.write_job("orders", JOB)
    ledger = Ledger(duck_ws.env["JANKYCRON_STATE_URL"])
    for interval in FAR:
        recorded(ledger, interval)
    recorded(ledger, nightly(24))
    early = recorded(ledger, nightly(25), started_at=datetime(2026, 11, 25, 20, tzinfo=UTC))
    ledger.close()
    app = create_app(duck_ws.settings)
    app.extensions["jankycron.status"].now = lambda: PINNED
    client = app.test_client()

    grid = client.get("/")
    assert grid.status_code == 200
    cells = dict(re.findall(r'data-day="([0-9-]+)" data-status="(\w+)"',
                            grid.get_data(as_text=True)))
    assert (cells["2026-11-24"], cells["2026-11-25"], cells["2026-11-26"]) == \
        ("success", "missed", "notdue")
    assert 'title="2026-11-25: missed (success, but it started before the interval ended)' \
        in grid.get_data(as_text=True)

    page = client.get("/jobs/orders")
    assert page.status_code == 200, page.get_data(as_text=True)[:2000]
    body = page.get_data(as_text=True)
    assert early in body and "9999-12-31" in body
    assert "--date 9999-12-31" not in body  # the CLI takes 1970-01-01 .. 9998-12-31
    assert "jankycron run orders --date 2026-11-24" in body
    for day in ("9999-12-31", "0001-01-01", "1969-12-31"):
        resp = client.get(f"/jobs/orders?date={day}")
        assert resp.status_code == 200, (day, resp.get_data(as_text=True)[:2000])
        assert "Not a date, or out of range" in resp.get_data(as_text=True)
    assert client.get("/jobs/orders?date=9998-12-31").status_code == 200
    # a day whose interval has not ended offers no command (the CLI would refuse it)
    today = client.get(f"/jobs/orders?date={PINNED.date().isoformat()}").get_data(as_text=True)
    assert f"--date {PINNED.date().isoformat()}" not in today

    (row,) = duck_ws.cli_json("jobs")  # the next run comes from the schedule, not the ledger
    now = datetime.now(UTC)
    fire = now.replace(hour=3, minute=0, second=0, microsecond=0)
    assert row["next_run"] == (fire if fire > now else fire + timedelta(days=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
