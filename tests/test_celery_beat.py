"""Beat on RedBeat: jobs fire from their schedule and their rows land; a rerun through the
workers lands once; with two beats one is active and the other takes over when it dies; a
job removed from jobs/ leaves the schedule; after downtime each missed interval runs once."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from celery_helpers import Cluster, cluster_fixture, hooks_fixture, wait_until  # noqa: F401

from jankycron import job
from jankycron.housekeeping import fire
from jankycron.ledger import Ledger
from jankycron.schedule import Interval

TABLE = "CREATE TABLE items (id bigint NOT NULL, label text)"
EVERY_MINUTE = '''
from jankycron import job

@job(schedule="* * * * *", table="items", key="id")
def {name}(run):
    minute = int(run.start.timestamp()) // 60
    for i in range(3):
        yield {{"id": minute * 10 + i, "label": "{name} %d" % i}}
'''


def rows_of(cluster: Cluster, start: str) -> list[tuple]:
    minute = int(datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp()) // 60
    return cluster.rows(f"SELECT count(*), count(DISTINCT id) FROM items WHERE id / 10 = "
                        f"{minute}")


def test_a_job_fires_from_beat_and_a_rerun_from_the_cli_lands_once(cluster: Cluster) -> None:
    cluster.rows(TABLE)
    cluster.ws.write_job("items", EVERY_MINUTE.format(name="items"))
    cluster.worker()
    cluster.beat()
    fired = wait_until(lambda: [r for r in cluster.runs("items") if r["status"] == "success"],
                       "beat to fire the job and its run to succeed")[0]
    assert rows_of(cluster, fired["start"]) == [(3, 3)]

    proc = cluster.ws.cli("run", "items", "--date", fired["start"][:16], check=True)
    assert f"items {fired['start']}..{fired['end']}: success; 3 extracted, 3 loaded" in \
        proc.stdout
    assert "queued (task " in proc.stderr
    assert rows_of(cluster, fired["start"]) == [(3, 3)]  # replaced, not added
    same = [r["status"] for r in cluster.runs("items") if r["start"] == fired["start"]]
    assert same == ["success", "success"]


def test_two_beats_fire_each_slot_once_and_the_standby_takes_over(cluster: Cluster) -> None:
    cluster.rows(TABLE)
    cluster.ws.write_job("items", EVERY_MINUTE.format(name="items"))
    cluster.worker()
    active = cluster.beat("beat-a")
    wait_until(lambda: active.count("Sending due task job:items") >= 2, "beat A to tick")
    standby = cluster.beat("beat-b")
    wait_until(lambda: "beat: Starting..." in standby.text(), "beat B to start")
    ticks = active.count("Sending due task job:items")
    wait_until(lambda: active.count("Sending due task job:items") >= ticks + 3,
               "beat A to tick on with B standing by")
    assert "Sending due task" not in standby.text()  # the standby waits for the lock
    assert "Acquired lock" not in standby.text()
    wait_until(lambda: [r for r in cluster.runs("items") if r["status"] == "success"],
               "the job's run")

    active.kill(signal.SIGKILL)
    wait_until(lambda: standby.count("Sending due task job:items") >= 3,
               "beat B to take over once A's lock expired")
    assert "beat: Acquired lock" in standby.text()
    runs = cluster.runs("items")
    starts = [r["start"] for r in runs]
    assert runs and len(starts) == len(set(starts)), f"a slot fired twice: {starts}"
    for r in runs:
        assert rows_of(cluster, r["start"]) in ([(3, 3)], [(0, 0)])  # loaded once, or running


def test_a_job_removed_from_jobs_leaves_the_schedule_at_the_next_start(
        cluster: Cluster) -> None:
    cluster.ws.write_job("kept", EVERY_MINUTE.format(name="kept"))
    gone = cluster.ws.write_job("gone", EVERY_MINUTE.format(name="gone").replace(
        'table="items"', 'table="old_items"'))
    first = cluster.beat("beat-1")
    wait_until(lambda: first.count("Sending due task job:gone"), "beat to schedule both jobs")
    assert cluster.redis.exists("jankycron:beat:job:gone", "jankycron:beat:load:old_items") == 2
    first.stop()

    gone.unlink()
    second = cluster.beat("beat-2")
    wait_until(lambda: second.count("Sending due task job:kept") >= 2, "beat to restart")
    assert "Sending due task job:gone" not in second.text()  # (DEBUG: it logs the clean-up)
    assert cluster.redis.exists("jankycron:beat:job:gone", "jankycron:beat:load:old_items") == 0
    assert cluster.redis.zscore("jankycron:beat::schedule", "jankycron:beat:job:gone") is None
    assert cluster.redis.exists("jankycron:beat:job:kept")


# ------------------------------------------------------------------------- catch-up policy
def hourly(catchup: bool):
    @job(schedule="0 * * * *", table="items", key="id", catchup=catchup)
    def hourly_job(run):
        yield {}

    return hourly_job


def fired(ledger: Ledger, job, now: datetime) -> list[Interval]:
    sent: list[Interval] = []
    fire(ledger, job, now, lambda j, interval: sent.append(interval))
    return sent


def test_after_downtime_each_missed_interval_runs_once_oldest_first(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    job = hourly(catchup=True)
    t = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    h = timedelta(hours=1)
    assert fired(ledger, job, t) == [Interval(t - 1.5 * h, t - 0.5 * h)]  # first sight: latest
    assert fired(ledger, job, t + 0.4 * h) == []  # no new interval yet, nothing twice
    later = t + 5 * h  # beat was down for five fires
    assert fired(ledger, job, later) == [Interval(t + (n - 0.5) * h, t + (n + 0.5) * h)
                                         for n in range(5)]
    assert fired(ledger, job, later) == []  # a second beat, or a redelivered tick


def test_without_catchup_only_the_latest_missed_interval_runs(tmp_path: Path, caplog) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    job = hourly(catchup=False)
    t = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)
    fired(ledger, job, t)
    later = t + timedelta(hours=5)
    assert fired(ledger, job, later) == [job.schedule.latest_complete(later)]
    assert "skipped 4 missed interval(s)" in caplog.text
    assert "catchup=False" in caplog.text
