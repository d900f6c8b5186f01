"""Beat's bookkeeping, in plain Python over the ledger; the Celery tasks are thin adapters.

- ``fire``: the intervals of a job to enqueue now, by its catch-up policy, each exactly once
  (a compare-and-set in the ledger, so a second beat or a redelivered tick enqueues nothing);
- ``sweep``: runs whose worker stopped heartbeating become ``lost``, alert, and run again;
- ``check_missed``: alerts when the newest interval a job's schedule says should have landed
  by now has not (a dead man's switch: it runs on whichever worker takes the ops queue);
- ``remove_orphans``: staged objects of runs that ended without recording a batch for them
  (killed mid-extraction, or the ledger was lost before the batch was recorded) are removed
  once the run ended ``JANKYCRON_ORPHAN_GRACE`` ago.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .config import Settings
from .discovery import Registry
from .job import Job
from .ledger import REPLAY_PREFIX, Ledger, RunStatus
from .schedule import Interval, fmt, parse_fmt
from .staging import batch_prefix
from .store import Store

log = logging.getLogger(__name__)

MAX_CATCHUP = 1000  # intervals enqueued by one catch-up; older ones are left to `backfill`
HARD_KILL_AFTER = 60.0  # seconds past a job's timeout before its worker is killed (celery_app)
BACKOFF_CAP = 900.0  # seconds; far below the broker's visibility timeout (REFERENCE §6)
Enqueue = Callable[[Job, Interval], Any]
Recover = Callable[[Job, Interval, dict[str, Any]], Any]  # with the lost run's row


def backoff(base: float, attempt: int, rng: Callable[[], float] = random.random) -> float:
    """The delay before retrying after failed attempt ``attempt`` (1, 2, ...): exponential from
    ``base``, at most BACKOFF_CAP, with "equal jitter" (a random point in the upper half), so
    that retries of many runs spread out and each delay is still at least the one before."""
    ceiling = min(BACKOFF_CAP, base * 2 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


def lost_after(settings: Settings) -> float:
    """Seconds without a heartbeat after which a running run is declared lost."""
    return 3 * settings.heartbeat


def grace(job: Job, settings: Settings) -> timedelta:
    """How long after an interval ends its data may take to land: every attempt at its full
    timeout, the longest backoff between them, and two housekeeping periods of lag."""
    waits = sum(min(BACKOFF_CAP, settings.retry_backoff * 2 ** n) for n in range(job.retries))
    return timedelta(seconds=job.timeout * (job.retries + 1) + waits + 2 * settings.heartbeat)


# ---------------------------------------------------------------------------------- fire
def due_intervals(job: Job, fired_until: datetime | None, now: datetime
                  ) -> tuple[list[Interval], int]:
    """The intervals to enqueue at ``now`` when everything up to ``fired_until`` was enqueued,
    oldest first, and how many missed ones the catch-up policy skips."""
    latest = job.schedule.latest_complete(now)
    if fired_until is None:  # first sight of the job: its latest interval (older: backfill)
        return [latest], 0
    if latest.end <= fired_until:
        return [], 0
    missed = list(job.schedule.intervals_starting(fired_until, latest.end)) or [latest]
    keep = min(len(missed), MAX_CATCHUP) if job.catchup else 1
    return missed[-keep:], len(missed) - keep


def fire(ledger: Ledger, job: Job, now: datetime, enqueue: Enqueue) -> list[Interval]:
    """Enqueue the job's due intervals (see ``due_intervals``); returns them."""
    old = ledger.schedule_state(job.name)["fired_until"]
    intervals, skipped = due_intervals(job, parse_fmt(old) if old else None, now)
    if not intervals:
        return []
    new = fmt(intervals[-1].end)
    if not ledger.advance_fired(job.name, old, new):
        log.info("[%s] due intervals already enqueued by another trigger", job.name)
        return []
    if skipped:
        how = ("catch-up is off for this job (catchup=False)" if not job.catchup else
               f"a catch-up enqueues at most {MAX_CATCHUP}")
        log.warning("[%s] skipped %d missed interval(s) before %s: %s; run them with "
                    "`jankycron backfill` if needed", job.name, skipped, intervals[0], how)
    try:
        for interval in intervals:
            enqueue(job, interval)
    except BaseException:
        ledger.advance_fired(job.name, new, old)  # the next tick tries again
        raise
    log.info("[%s] enqueued %s", job.name, ", ".join(str(i) for i in intervals))
    return intervals


# --------------------------------------------------------------------------------- sweep
def sweep(ledger: Ledger, registry: Registry, alerts: Any, settings: Settings, now: datetime,
          enqueue: Recover) -> list[dict[str, Any]]:
    """Mark runs that stopped heartbeating as lost, alert, and enqueue their interval again
    (unless a newer run of it exists, e.g. Celery already redelivered the task)."""
    cutoff = now - timedelta(seconds=lost_after(settings))
    lost = []
    for run in ledger.stale_runs(cutoff):
        newer = ledger.newer_run(run)
        rerun = newer is None and run["job"] in registry
        detail = (f"no heartbeat since {run['heartbeat_at']} (worker killed or host lost); " +
                  ("enqueued again" if rerun else
                   f"newer run {newer['run_id']} is {newer['status']}" if newer else
                   "the job is no longer in jobs/, not enqueued again"))
        if not ledger.mark_lost(run["run_id"], f"lost: {detail}"):
            continue  # it finished meanwhile, or another sweeper took it
        log.warning("[%s %s] lost: %s", run["job"], run["run_id"], detail)
        task_id = run["task_id"]
        run = ledger.run(run["run_id"])
        if run["job"] in registry:
            job = registry.get(run["job"])
            alerts.run_lost(job, run, detail)
            if rerun:
                enqueue(job, Interval(parse_fmt(run["start"]), parse_fmt(run["end"])),
                        {**run, "task_id": task_id})
        lost.append(run)
    return lost


# -------------------------------------------------------------------------------- missed
EARLY_START = timedelta(minutes=1)  # clock skew allowed between beat and the workers
IN_PROGRESS = (RunStatus.RUNNING, RunStatus.STAGED, RunStatus.RETRIED)


def landed(run: dict[str, Any], interval: Interval) -> bool:
    """Does ``run`` stand for ``interval``'s data having landed? It is done (success or
    skipped) and started after the interval ended: a run that started earlier (``run --date``
    before it refused unfinished intervals, or through the API) read part of the data only."""
    return (run["status"] in (RunStatus.SUCCESS, RunStatus.SKIPPED)
            and parse_fmt(run["started_at"]) >= interval.end - EARLY_START)


def check_missed(ledger: Ledger, registry: Registry, alerts: Any, settings: Settings,
                 now: datetime) -> list[str]:
    """Alert for each job whose newest expected interval has not landed: the newest interval
    of its schedule that should be done by now (it ended more than ``grace`` ago) has no run
    that ``landed``. Runs of other intervals, a later or far-off one included, do not count.
    One alert per episode: not again until a newer interval (before the expected one) is done.
    Jobs are watched from when beat first saw them (``jc_schedule.since``): an interval that
    ended before that is never expected, whatever older runs (manual ones) the ledger holds.
    A run of the expected interval still in progress (running, staged, retrying) that started
    late is given the grace from its start. Returns the overdue jobs' names."""
    overdue = []
    for job in registry:
        try:  # one job that cannot be checked must not stop the others' missed-run alerts
            if _check_missed_job(ledger, job, alerts, settings, now):
                overdue.append(job.name)
        except Exception as e:
            log.error("[%s] missed-run check failed: %s: %s", job.name, type(e).__name__, e)
    return overdue


def _check_missed_job(ledger: Ledger, job: Job, alerts: Any, settings: Settings,
                      now: datetime) -> bool:
    """``check_missed`` for one job: is it overdue (alerting once per episode)?"""
    state = ledger.schedule_state(job.name)
    wait = grace(job, settings)
    expected = job.schedule.latest_complete(now - wait)
    # Not the oldest run's interval: a manual run of an older interval would make beat's
    # first interval (ended before beat saw the job, its run in progress) look overdue.
    if expected.end <= parse_fmt(state["since"]):
        return False
    runs = ledger.runs_of(job.name, expected)
    if any(landed(run, expected) for run in runs):
        return False
    if any(run["status"] in IN_PROGRESS and parse_fmt(run["started_at"]) + wait > now
           for run in runs):
        return False  # started late (workers were down, say): its attempts get their grace
    last = ledger.last_success(job.name, before=expected.end)
    marker = fmt(last) if last else "never"
    if state["missed_alerted"] == marker:
        return True  # already alerted for this episode
    log.warning("[%s] missed: interval %s has not landed (due by %s); newest done interval "
                "ends %s", job.name, expected, fmt(expected.end + wait), marker)
    alerts.run_missed(job, last, expected.end + wait, interval=expected)
    ledger.set_missed_alerted(job.name, marker)
    return True


# ------------------------------------------------------------------------------- orphans
@dataclass(frozen=True)
class Orphan:
    """Staged objects of one run and table that no ledger batch refers to: never loadable."""

    run_id: str
    job: str
    table: str
    status: str  # the run's: failed, lost or retried
    ended: str
    keys: tuple[str, ...]


def find_orphans(ledger: Ledger, store: Store, registry: Registry, settings: Settings,
                 now: datetime) -> tuple[list[Orphan], list[str]]:
    """The orphaned staged objects of runs that ended (failed, lost, retried) more than
    ``settings.orphan_grace`` ago (and started longer ago than the job's timeout plus the hard
    kill, so a lost run's worker that still runs has stopped), and the ids of the runs looked
    at. A table for which the
    run recorded a batch (pending, loaded, superseded) is never touched, nor dead letters."""
    orphans, looked = [], []
    for run in ledger.unrecorded_runs(now - timedelta(seconds=settings.orphan_grace)):
        job = registry.get(run["job"]) if run["job"] in registry else None
        if job is not None and parse_fmt(run["started_at"]) > now - timedelta(
                seconds=job.timeout + HARD_KILL_AFTER):
            continue  # a lost run's worker may be running still, until its timeout kills it
        tables = (set(job.tables) if job else set()) | ledger.tables_of(run["job"])
        interval = Interval(parse_fmt(run["start"]), parse_fmt(run["end"]))
        for table in sorted(tables - run["recorded"]):
            keys = [k for prefix in (batch_prefix(table, run["job"], interval, run["run_id"]),
                                     f"{REPLAY_PREFIX}{table}/{run['run_id']}")
                    for k in store.list(prefix + "/")]
            if keys:
                orphans.append(Orphan(run["run_id"], run["job"], table, run["status"],
                                      run["finished_at"] or run["started_at"], tuple(keys)))
        looked.append(run["run_id"])
    return orphans, looked


def remove_orphans(ledger: Ledger, store: Store, registry: Registry, settings: Settings,
                   now: datetime) -> list[Orphan]:
    """Delete what ``find_orphans`` finds, with one log line per run and table, and note each
    run looked at, so that it is not listed again. Returns what was removed."""
    orphans, looked = find_orphans(ledger, store, registry, settings, now)
    for o in orphans:
        for key in o.keys:
            store.delete(key)
        log.warning("[%s %s] removed %d staged object(s) of table %s that no batch refers to "
                    "(the run is %s since %s)", o.job, o.run_id, len(o.keys), o.table,
                    o.status, o.ended)
    for run_id in looked:
        ledger.orphans_removed(run_id)
    return orphans
