"""The missed-run check works from the schedule's expected intervals: the newest interval that
should have landed by now must have a run that landed, whatever other runs the ledger holds (a
run dated 2030, say, from an old ledger or the API). Plain Python: housekeeping over a real
ledger (SQLite and PostgreSQL) with a fixed clock, alerts through the real sender to a webhook
on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import http_server

from jankycron.alerts import Alerts
from jankycron.config import Settings
from jankycron.discovery import Registry
from jankycron.housekeeping import check_missed, grace
from jankycron.job import job
from jankycron.ledger import Ledger, RunStatus
from jankycron.schedule import Interval, fmt

SETTINGS = Settings.from_env({})
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def nightly(day: int) -> Interval:
    """The 04:00 interval starting on 2026-11-<day>."""
    start = datetime(2026, 11, day, 4, tzinfo=UTC)
    return Interval(start, start + timedelta(days=1))


class Hook:
    """A real HTTP server recording the alerts posted to it."""

    def __init__(self) -> None:
        self.alerts: list[dict] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                hook.alerts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.fixture
def hook() -> Iterator[tuple[Hook, str]]:
    h = Hook()
    with http_server(h.handler()) as url:
        yield h, url


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path) -> Iterator[Ledger]:
    url = (f"sqlite:///{tmp_path / 'state.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    ledger = Ledger(url)
    yield ledger
    ledger.close()


class Beat:
    """The nightly ``orders`` job as beat watches it: seen since 2026-11-01."""

    def __init__(self, ledger: Ledger, url: str, hook: Hook):
        @job(schedule="0 4 * * *", table="orders", key="id", timeout="30m", alert=f"{url}/h")
        def orders(run):
            yield from ()

        self.job, self.ledger, self.hook = orders, ledger, hook
        self.registry = Registry({"orders": orders})
        ledger.schedule_state("orders")
        ledger._exec("UPDATE jc_schedule SET since = ? WHERE job = ?",
                     ("2026-11-01T00:00:00Z", "orders"))

    def check(self, now: datetime = NOW) -> list[str]:
        return check_missed(self.ledger, self.registry, Alerts(SETTINGS, now=now), SETTINGS, now)

    def run(self, interval: Interval, status: str = RunStatus.SUCCESS,
            started_at: datetime | None = None) -> None:
        run_id = self.ledger.start_run("orders", interval)
        if status != RunStatus.RUNNING:
            self.ledger.finish_run(run_id, status)
        at = fmt(started_at or interval.end + timedelta(minutes=1))
        self.ledger._exec("UPDATE jc_runs SET started_at = ? WHERE id = ?", (at, run_id))

    def missed(self) -> list[str]:
        return [a["text"] for a in self.hook.alerts if a["event"] == "run_missed"]


@pytest.fixture
def beat(ledger: Ledger, hook: tuple[Hook, str]) -> Beat:
    return Beat(ledger, hook[1], hook[0])


def test_the_interval_due_now_is_checked_by_the_schedule(beat: Beat) -> None:
    """At 12:00 on Nov 26 the interval Nov 25 04:00 .. Nov 26 04:00 is due (its grace: the
    30 min timeout and two heartbeats): while it has not landed the job is overdue, and once it
    has, it is not."""
    assert grace(beat.job, SETTINGS) == timedelta(minutes=31)
    beat.run(nightly(24))
    assert beat.check() == ["orders"]
    (text,) = beat.missed()
    assert text == ("jankycron: job orders missed: last successful interval ended "
                    "2026-11-25T04:00:00Z; a success was expected by 2026-11-26T04:31:00Z "
                    "(interval 2026-11-25T04:00:00Z..2026-11-26T04:00:00Z)")
    beat.run(nightly(25))
    assert beat.check() == []


def test_the_missed_alert_carries_the_interval_in_fields(beat: Beat) -> None:
    """A webhook consumer (a pager rule, a ticket bot) gets the missed interval as ``start`` and
    ``end``, not only inside the text; ``run_id`` is null: there is no run to name."""
    beat.run(nightly(24))
    assert beat.check() == ["orders"]
    (alert,) = [a for a in beat.hook.alerts if a["event"] == "run_missed"]
    assert (alert["start"], alert["end"]) == ("2026-11-25T04:00:00Z", "2026-11-26T04:00:00Z")
    assert alert["run_id"] is None and alert["job"] == "orders"


def test_a_run_dated_2030_does_not_silence_the_missed_alert(beat: Beat) -> None:
    """Before `run --date` refused intervals that have not ended, one run dated 2030 made the
    newest done interval end in 2030, and no missed-run alert came for that job again."""
    beat.run(nightly(24))
    beat.run(Interval(datetime(2030, 1, 1, 4, tzinfo=UTC), datetime(2030, 1, 2, 4, tzinfo=UTC)),
             started_at=NOW - timedelta(days=3))
    assert beat.check() == ["orders"]
    # the alert names the newest interval done before the one expected, not the one in 2030
    (text,) = beat.missed()
    assert "last successful interval ended 2026-11-25T04:00:00Z" in text
    assert "2030" not in text


def test_a_run_far_in_the_past_does_not_stand_for_today(beat: Beat) -> None:
    beat.run(Interval(datetime(1970, 1, 1, 4, tzinfo=UTC), datetime(1970, 1, 2, 4, tzinfo=UTC)))
    assert beat.check() == ["orders"]
    assert "last successful interval ended 1970-01-02T04:00:00Z" in beat.missed()[0]


def test_a_run_that_started_before_its_interval_ended_does_not_count(beat: Beat) -> None:
    """A success of the expected interval that started while the interval was still going
    (the old `run --date` of today, or the API) read part of its data only."""
    beat.run(nightly(24))
    beat.run(nightly(25), started_at=datetime(2026, 11, 25, 18, tzinfo=UTC))
    assert beat.check() == ["orders"]
    assert len(beat.missed()) == 1
    # a run started a few seconds early (clock skew between beat and a worker) still counts
    beat.run(nightly(25), started_at=nightly(25).end - timedelta(seconds=5))
    assert beat.check() == []


def test_one_alert_per_episode(beat: Beat) -> None:
    """Not again on every check, nor when the next interval is due too; again only after a
    newer interval landed and the job fell behind once more."""
    beat.run(nightly(24))
    for hours in (0, 1, 24, 25):
        assert beat.check(NOW + timedelta(hours=hours)) == ["orders"]
    assert len(beat.missed()) == 1
    beat.run(nightly(25))
    beat.run(nightly(26))
    assert beat.check(NOW + timedelta(days=1)) == []
    assert beat.check(NOW + timedelta(days=2)) == ["orders"]
    assert len(beat.missed()) == 2
    assert "last successful interval ended 2026-11-27T04:00:00Z" in beat.missed()[1]


def test_skipped_counts_and_failed_does_not(beat: Beat) -> None:
    beat.run(nightly(25), RunStatus.FAILED)
    assert beat.check() == ["orders"]
    assert "no successful run yet" in beat.missed()[0]
    beat.run(nightly(25), RunStatus.SKIPPED)
    assert beat.check() == []


def test_a_job_is_not_expected_before_beat_first_saw_it(beat: Beat) -> None:
    beat.ledger._exec("UPDATE jc_schedule SET since = ? WHERE job = ?",
                      ("2026-11-26T10:00:00Z", "orders"))
    assert beat.check() == []
    # a run far in the future does not move the watch either
    beat.run(Interval(datetime(2030, 1, 1, 4, tzinfo=UTC), datetime(2030, 1, 2, 4, tzinfo=UTC)))
    assert beat.check() == []
    assert beat.check(NOW + timedelta(days=1)) == ["orders"]


def test_an_older_manual_run_does_not_make_beats_first_interval_overdue(beat: Beat) -> None:
    """Beat first sees the job at 11:59:50 on Nov 26 and fires the interval that ended at 04:00
    that day; its run is in progress. The ledger also holds a manual run of Nov 20 (from `run
    --date` before beat was deployed): that must not move the watch back to Nov 21 and make the
    interval beat is running look missed seconds after beat started."""
    beat.ledger._exec("UPDATE jc_schedule SET since = ? WHERE job = ?",
                      ("2026-11-26T11:59:50Z", "orders"))
    beat.run(nightly(20), started_at=datetime(2026, 11, 24, 9, tzinfo=UTC))
    beat.run(nightly(25), RunStatus.RUNNING, started_at=NOW - timedelta(seconds=5))
    assert beat.check() == []
    assert beat.check(NOW + timedelta(hours=3)) == []  # it ended before beat saw the job
    assert beat.missed() == []
    # the next interval, which ends after beat first saw the job, is expected
    assert beat.check(NOW + timedelta(days=1)) == ["orders"]
    assert "(interval 2026-11-26T04:00:00Z..2026-11-27T04:00:00Z)" in beat.missed()[0]


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.STAGED, RunStatus.RETRIED])
def test_a_late_run_in_progress_gets_its_grace(beat: Beat, status: str) -> None:
    """Workers were down until 11:50: the run of the expected interval started then and is
    still running (or staged, or retrying). It is not called missed until its grace (31 min)
    from its start is over; then it is."""
    beat.run(nightly(24))
    beat.run(nightly(25), status, started_at=NOW - timedelta(minutes=10))
    assert beat.check() == []
    assert beat.check(NOW + timedelta(minutes=20)) == []
    assert beat.missed() == []
    assert beat.check(NOW + timedelta(minutes=22)) == ["orders"]
    assert len(beat.missed()) == 1


def test_the_freshness_gauge_ignores_intervals_that_have_not_ended(beat: Beat) -> None:
    """/metrics' newest loaded interval end is the other dead man's switch (a staleness alert
    in Prometheus): a success dated 2030 must not make the job look fresh there either."""
    from prometheus_client.parser import text_string_to_metric_families

    from jankycron.web import create_app

    beat.run(nightly(24))
    beat.run(Interval(datetime(2030, 1, 1, 4, tzinfo=UTC), datetime(2030, 1, 2, 4, tzinfo=UTC)))
    client = create_app(Settings.from_env({"JANKYCRON_STATE_URL": beat.ledger.url})).test_client()
    text = client.get("/metrics").get_data(as_text=True)
    (end,) = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "jankycron_last_success_interval_end_timestamp_seconds"]
    assert end == nightly(24).end.timestamp()
