"""One run of one job: extract -> stage -> record -> load. Plain Python; no Celery here.

The order is what makes "drop nothing" hold:

1. the job's records are written to the object store (parts, then the manifest);
2. records that JSON cannot hold exactly are written to the dead-letter store;
3. in one ledger transaction, only while the run is still ``running``: the run is marked
   staged, its batches recorded as pending, its dead letters indexed, the job's state saved;
4. the loader merges the pending batches of each table.

Where the warehouse allows, its validation of the parts starts during 1 (``load.Prefill``);
nothing is merged before 3. A crash before 3 leaves unreferenced objects (removed later by
``housekeeping.remove_orphans``) and a run marked running (the sweeper marks it lost; the run
is redone); a ledger lost before 3 fails the run (or, if the ledger stays away, leaves it to
the sweeper) with the ledger's own error; a failure in 4 leaves the batches pending for the
next load, and the run shows ``staged``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from types import FrameType
from typing import Any

from . import deadletters
from .config import Settings
from .errors import (
    JankycronError,
    JobExited,
    LedgerUnavailable,
    SkipRun,
    TerminalError,
    TransientError,
    line_in,
)
from .job import Job, Routed, Run
from .ledger import REPLAY_PREFIX, Batch, DeadLetter, Ledger, RunStatus
from .load import Loader, LoadResult, Prefill, open_warehouse
from .load.warehouse import Warehouse
from .schedule import Interval, fmt, parse_fmt
from .staging import BatchWriter, RecordError, batch_prefix, encode, seq_prefix
from .store import Store, open_store

log = logging.getLogger(__name__)

PROGRESS_EVERY = 100_000
# A log record attribute: the run's failure is alerted by the caller (Sentry skips the record).
ALERTED_BY_CALLER = "jankycron_alerted_by_caller"


class Context:
    """The connections a run needs, opened on first use and closed together.

    ``jobs`` finds a job by name and ``alerts`` makes the alert sender (``alerts.Alerts``):
    with ``jobs``, a batch the loader quarantines is alerted to its job's routes."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None,
                 jobs: Callable[[str], Job | None] | None = None,
                 alerts: Callable[[], Any] | None = None):
        self.settings = settings
        self.progress = progress or (lambda msg: log.info("%s", msg))
        self.jobs, self.alerts = jobs, alerts

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger.open(self.settings)

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings)

    @cached_property
    def warehouse(self) -> Warehouse:
        return open_warehouse(self.settings)

    @cached_property
    def loader(self) -> Loader:
        locks = None
        if self.settings.lock_url:
            from .load.lock import RedisLocks

            locks = RedisLocks(self.settings.lock_url, wait=self.settings.lock_wait)
        return Loader(self.settings, self.ledger, self.store, self.warehouse, self.progress,
                      locks, on_corrupt=self._alert_corrupt)

    def _alert_corrupt(self, batch: Batch, reason: str) -> None:
        job = self.jobs(batch.job) if self.jobs else None
        if job is None:
            log.warning("batch %s quarantined (no job %s to alert): %s", batch.id, batch.job,
                        reason)
            return
        if self.alerts:
            sender = self.alerts()
        else:
            from .alerts import Alerts  # noqa: PLC0415 - alerts imports this module

            sender = Alerts(self.settings)
        sender.batch_corrupt(job, self.ledger.run(batch.run_id), batch.table, reason)

    def close(self) -> None:
        for name in ("warehouse", "ledger"):
            if name in self.__dict__:
                self.__dict__.pop(name).close()


def describe(exc: BaseException, job: Job | None = None) -> str:
    """One line for the ledger and the CLI: the error and, for job bugs, where it happened."""
    if isinstance(exc, JankycronError):
        return str(exc)
    line = line_in(exc, job.source_file) if job is not None and job.source_file else None
    where = f" ({Path(job.source_file).name} line {line})" if job and line else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _shown(record: Any) -> str:
    """A rejected record as text for the dead-letter store, as close to the original as we can."""
    try:
        return repr(record)[:100_000]
    except Exception:  # a record whose repr fails is still kept, by type
        return f"<unprintable {type(record).__name__}>"


def _seq(ctx: Context, interval: Interval, run_id: str) -> str | None:
    """The line-order stamp for staged lines, where the warehouse needs one (staging.SEQ_KEY)."""
    return seq_prefix(interval, run_id) if ctx.warehouse.needs_seq else None


def _key(ctx: Context, key: tuple[str, ...], prefill: Prefill | None = None
         ) -> tuple[str, ...] | None:
    """The merge key for the parts' key files, where the warehouse loads with them. Not while
    the batch is validated as it is staged (``prefill``): that load does not use them, and they
    cost ~5% of a run."""
    return key if ctx.warehouse.direct_loads and prefill is None else None


class JobCalledExit(SystemExit):
    """``os._exit(code)`` called by a job's code while it runs (see ``no_process_exit``)."""


_real_exit = os._exit
_exit_lock = threading.Lock()
_exit_guards = 0  # runs of job code in progress that hold os._exit (threads run several)


@contextlib.contextmanager
def no_process_exit() -> Iterator[None]:
    """While a job's code runs, ``os._exit`` raises ``JobCalledExit`` instead of ending the
    process on the spot (no cleanup: the run would stay ``running`` and ``run --local`` exit 0
    after that). The run then fails as for ``sys.exit``. Called from a thread the job started,
    it ends only that thread. Code holding its own reference (``from os import _exit``) is not
    covered; that run is found by its stopped heartbeat and marked lost by the sweeper."""
    global _exit_guards

    def refuse(code: int) -> None:
        if _in_signal_handler(sys._getframe(1)):  # the process's own shutdown: let it end
            _real_exit(code)
        raise JobCalledExit(code)

    with _exit_lock:
        if _exit_guards == 0:
            os._exit = refuse
        _exit_guards += 1
    try:
        yield
    finally:
        with _exit_lock:
            _exit_guards -= 1
            if _exit_guards == 0:
                os._exit = _real_exit


def _in_signal_handler(frame: FrameType | None) -> bool:
    """Is ``frame``, or a frame it was called from, a Python signal handler? Exits requested
    there (billiard's pool child on SIGTERM, Celery's warm shutdown in a solo worker) are the
    process's, not the job's."""
    codes = set()
    for signum in signal.valid_signals():
        try:
            code = getattr(signal.getsignal(signum), "__code__", None)
        except (OSError, ValueError):
            continue
        if code is not None:
            codes.add(code)
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def as_failure(exc: BaseException, job: Job) -> BaseException:
    """The error a run fails with: a ``sys.exit``/``os._exit`` inside the job becomes
    ``JobExited`` (the run fails; the process, a worker or the CLI, goes on); others are
    themselves (KeyboardInterrupt stays the operator's Ctrl-C)."""
    if not isinstance(exc, SystemExit):
        return exc
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and _in_signal_handler(tb.tb_frame):
        return exc
    line = line_in(exc, job.source_file) if job.source_file else None
    where = f" ({Path(job.source_file or '').name} line {line})" if line else ""
    what = (f"called os._exit({exc.code!r})" if isinstance(exc, JobCalledExit) else
            f"raised SystemExit({', '.join(map(repr, exc.args))})")
    return JobExited(f"it {what}{where}; a job ends by returning or raising an error, not by "
                     "exiting")


def extract(ctx: Context, job: Job, run: Run,
            prefills: dict[str, Prefill | None] | None = None) -> tuple[int, int]:
    """Run the job's generator into staged batches; returns (extracted, staged) counts.

    ``prefills`` (table -> Prefill) are told of every part as it lands in the store.
    """
    store, settings = ctx.store, ctx.settings
    writers = {}
    for t in job.tables:
        prefill = (prefills or {}).get(t)
        writers[t] = BatchWriter(store, t, batch_prefix(t, job.name, run.interval, run.run_id),
                                 settings.part_size, prefill.part_staged if prefill else None,
                                 seq=_seq(ctx, run.interval, run.run_id),
                                 key=_key(ctx, job.tables[t], prefill))
    rejects: list[DeadLetter] = []
    extracted = 0
    try:
        records = job(run)
        if records is None:
            raise TerminalError(f"job {job.name} returned nothing: it must yield dicts")
        for item in records:
            extracted += 1
            table, record = item if isinstance(item, Routed) else (job.table, item)
            try:
                writers[table].write_line(encode(record), record)
            except RecordError as e:
                rejects.append(DeadLetter(f"{run.run_id}.{table}", "stage", extracted, table,
                                          job.name, run.run_id, str(e), _shown(record), ""))
                continue
            if extracted % PROGRESS_EVERY == 0:
                ctx.progress(f"{job.name}: extracted {extracted:,} records")
        staged = [w.close() for w in writers.values()]
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    rows = sum(b.rows for b in staged)
    ledger = ctx.ledger
    # Recorded in one transaction, all or nothing: the run staged, its batches, its dead
    # letters' index and the job's state. A ledger lost here leaves objects no batch refers
    # to (housekeeping.remove_orphans); a run the sweeper declared lost meanwhile (its
    # interval may have run again) records nothing, so its data can never load twice.
    # Tables in the ledger's lock order (the run's row last); run again whole if PostgreSQL
    # aborts it as a deadlock victim (the dead letters' objects have fixed keys).
    def record(_: Any) -> None:
        for b in staged:
            ledger.add_batch(run.run_id, job.name, run.interval, b.table, b.manifest_key,
                             b.rows, b.key_counts, replaces=job.rerun_replaces,
                             key=job.tables[b.table])
        deadletters.write(store, ledger, rejects)
        ledger.save_state(job.name, run.state)
        if not ledger.finish_run(run.run_id, RunStatus.STAGED, rows_extracted=extracted,
                                 rows_staged=rows, rows_rejected=extracted - rows,
                                 only_from=RunStatus.RUNNING):
            status = ledger.run(run.run_id)["status"]
            raise TerminalError(f"run {run.run_id} is {status} in the ledger (declared so while "
                                "it ran): its staged data is not recorded")

    ledger.atomic(record)
    return extracted, rows


class Heartbeat:
    """Marks a running run alive in the ledger every ``period`` seconds, from a thread with its
    own ledger connection, so that the sweeper can tell a killed worker's run from a slow one."""

    def __init__(self, settings: Settings, run_id: str):
        self.settings, self.run_id = settings, run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"jankycron-heartbeat-{run_id}")
        self._thread.start()

    def _beat(self) -> None:
        ledger = None
        try:
            while not self._stop.wait(self.settings.heartbeat):
                try:
                    ledger = ledger or Ledger.open(self.settings)
                    ledger.heartbeat(self.run_id)
                except Exception as e:  # a ledger blip; a longer outage makes the run "lost"
                    log.warning("heartbeat of run %s not recorded: %s", self.run_id, e)
                    ledger = None
        finally:
            if ledger is not None:
                ledger.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_job(ctx: Context, job: Job, interval: Interval, *, load: bool = True,
            attempt: int | None = None, task_id: str | None = None) -> dict[str, Any]:
    """Extract, stage and (with ``load``) load one interval of a job; returns the ledger row.

    Raises the job's exception (or the loader's) after recording it; a ``SkipRun`` is recorded
    as ``skipped`` and not raised. While it runs, the run heartbeats in the ledger.
    ``attempt`` and ``task_id`` (from the Celery task) are recorded on the run.
    """
    ledger = ctx.ledger
    run_id = ledger.start_run(job.name, interval, attempt=attempt, task_id=task_id,
                              heartbeat=True)
    heartbeat = Heartbeat(ctx.settings, run_id)
    try:
        return _run(ctx, job, interval, run_id, load)
    finally:
        heartbeat.stop()


def _run(ctx: Context, job: Job, interval: Interval, run_id: str, load: bool) -> dict[str, Any]:
    ledger = ctx.ledger
    run = Run(job, interval, run_id, dict(ledger.get_state(job.name)))
    run.log.info("extracting %s", interval)
    prefills: dict[str, Prefill | None] = {}
    try:
        # Validate in the warehouse while the job extracts, where the backend can
        # (load.Prefill); inside the try, so that a warehouse that is down fails the run.
        if load:
            prefills = {t: ctx.loader.prefill(t, key, f"{run_id}.{t}")
                        for t, key in job.tables.items()}
        with no_process_exit():  # the job's code runs in here
            extracted, staged = extract(ctx, job, run, prefills)
    except BaseException as e:
        for p in prefills.values():
            if p:
                p.discard()
        if isinstance(e, SkipRun):
            ledger.finish_run(run_id, RunStatus.SKIPPED, error=str(e) or None)
            run.log.info("skipped: %s", e)
            return ledger.run(run_id)
        failure = as_failure(e, job)
        _record_failure(ctx, run, describe(failure, job))
        # A transient failure is a warning: it is retried, and the alert (one per run, after
        # the last attempt) is the caller's; an ERROR line would page (Sentry) per attempt.
        # Marked so that Sentry drops this line's event: the alert for the run is the event
        # (alerts.Alerts.run_failed), one per run, not one per log line.
        run.log.log(logging.WARNING if isinstance(e, TransientError) else logging.ERROR,
                    "failed: %s", describe(failure, job),
                    exc_info=not isinstance(failure, JankycronError),
                    extra={ALERTED_BY_CALLER: True})
        if failure is not e:
            raise failure from e
        raise
    try:
        run.log.info("staged %d of %d records", staged, extracted)
        if load:
            load_tables(ctx, job.tables, run_id=run_id, prefills=prefills)
    finally:
        for p in prefills.values():  # the ones a failed load did not reach
            if p:
                p.discard()
    return ledger.run(run_id)


RECORD_FAILURE_WITHIN = 10.0  # seconds a failed run keeps trying to reach the ledger


def _record_failure(ctx: Context, run: Run, error: str) -> None:
    """Record a run as failed. While the ledger is unreachable, try again for up to
    RECORD_FAILURE_WITHIN seconds; then give up and leave the run ``running`` in the ledger:
    its heartbeat stops with this run, so the sweeper marks it ``lost``. Never raises
    LedgerUnavailable, so that the run's own error is the one raised."""
    deadline, delay = time.monotonic() + RECORD_FAILURE_WITHIN, 0.5
    while True:
        try:
            ctx.ledger.finish_run(run.run_id, RunStatus.FAILED, error=error,
                                  only_from=RunStatus.RUNNING)
            return
        except LedgerUnavailable as e:
            if time.monotonic() + delay > deadline:
                # A warning: the run's failure is raised to the caller, which alerts once.
                run.log.warning("failed (%s), and not recorded: %s; the run stays running in "
                                "the ledger until the sweeper marks it lost", error, e)
                return
            time.sleep(delay)
            delay = min(2 * delay, 4.0)


def due_tables(ctx: Context, tables: dict[str, tuple[str, ...]], now: datetime | None = None
               ) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """The tables among ``tables`` whose load is due: their load interval
    (``JANKYCRON_LOAD_INTERVAL[S]``) has passed since their last load, and they are not backing
    off after failed loads. Returns them and one line per table that waits, saying why."""
    now = now or datetime.now(UTC)
    due, waiting = dict(tables), []
    for t in list(due):
        last = ctx.ledger.last_load(t)
        wait = timedelta(seconds=ctx.settings.load_interval_of(t))
        retry = ctx.ledger.retry_at(t)
        if retry and now < retry[0]:
            waiting.append(f"{t}: backing off after {retry[1]} failed load(s) until "
                           f"{fmt(retry[0])}; last error: {retry[2]}")
            del due[t]
        elif last and now - last < wait:
            waiting.append(f"{t}: not due; last load {fmt(last)}, next after {fmt(last + wait)}")
            del due[t]
    return due, waiting


def load_tables(ctx: Context, tables: dict[str, tuple[str, ...]], run_id: str | None = None,
                prefills: dict[str, Prefill | None] | None = None) -> list[LoadResult]:
    """Load the pending batches of each table. A table that fails does not stop the others;
    its failure is counted for the retry backoff, noted on the run, and the first one is
    re-raised once every table was tried."""
    results, failures = [], []
    for table, key in tables.items():
        try:
            results.append(ctx.loader.load_table(table, key, (prefills or {}).get(table)))
            ctx.ledger.table_loaded(table)
        except JankycronError as e:
            window = ctx.settings.maintenance_window
            if isinstance(e, TransientError) and window and window.contains(datetime.now(UTC)):
                e = type(e)(f"{e} (inside the maintenance window {window}: expected; the "
                            "batches stay pending and load after it)")
            ctx.ledger.table_failed(table, str(e))
            if run_id:
                ctx.ledger.finish_run(run_id, RunStatus.STAGED,
                                      error=f"load of {table} pending: {e}")
            failures.append(e)
    if failures:
        first = failures[0]
        if len(failures) > 1:
            first = type(first)(f"{first} (and {len(failures) - 1} more table(s) failed)")
        raise first from None
    return results


def replay(ctx: Context, table: str, key: tuple[str, ...], run_id: str | None = None
           ) -> tuple[list[dict[str, Any]], int]:
    """Re-stage the open dead letters of ``table`` (e.g. after the table was widened) and load
    them; returns the replay runs and how many dead letters could not be replayed.

    Only records the warehouse refused can be replayed: they are stored as the exact JSON line
    that was staged. Records the job yielded in a form JSON cannot hold were never staged; the
    fix for those is in the job, and a rerun of the interval.
    """
    ledger = ctx.ledger
    letters = ledger.deadletters(table, run_id, limit=None)
    replayable = [d for d in letters if d["phase"] == "load"]
    by_job: dict[str, list[dict[str, Any]]] = {}
    for d in replayable:
        by_job.setdefault(d["job"], []).append(d)
    runs = []
    for job_name, items in sorted(by_job.items()):
        originals = [ledger.run(r) for r in sorted({d["run_id"] for d in items})]
        interval = Interval(min(parse_fmt(r["start"]) for r in originals),
                            max(parse_fmt(r["end"]) for r in originals))
        new_run = ledger.start_run(job_name, interval)
        writer = BatchWriter(ctx.store, table, f"{REPLAY_PREFIX}{table}/{new_run}",
                             ctx.settings.part_size, seq=_seq(ctx, interval, new_run),
                             key=_key(ctx, key))
        try:
            for d in sorted(items, key=lambda d: (d["run_id"], d["line"])):
                writer.write_line(d["record"].encode() + b"\n", json.loads(d["record"]))
            staged = writer.close()
        except BaseException as e:
            writer.abort()
            ledger.finish_run(new_run, RunStatus.FAILED, error=describe(e))
            raise
        ledger.add_batch(new_run, job_name, interval, table, staged.manifest_key, staged.rows,
                         staged.key_counts, key=key)
        ledger.mark_replayed(items)  # their records are in the pending replay batch now
        ledger.finish_run(new_run, RunStatus.STAGED, rows_extracted=staged.rows,
                          rows_staged=staged.rows, rows_rejected=0)
        ctx.progress(f"{table}: replaying {staged.rows:,} dead letter(s) of job {job_name}")
        runs.append(new_run)
    if runs:
        load_tables(ctx, {table: key}, run_id=runs[-1])
    return [ledger.run(r) for r in runs], len(letters) - len(replayable)
