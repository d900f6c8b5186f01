"""One run of one job: extract -> stage -> record -> load. Plain Python; no Celery here.

The order is what makes "drop nothing" hold:

1. the job's records are written to the object store (parts, then the manifest);
2. records that JSON cannot hold exactly are written to the dead-letter store;
3. the batches are recorded in the ledger as pending and the job's state is saved;
4. the loader merges the pending batches of each table.

Where the warehouse allows, its validation of the parts starts during 1 (``load.Prefill``);
nothing is merged before 3. A crash before 3 leaves unreferenced objects and a run marked
running (the run is redone); a failure in 4 leaves the batches pending for the next load, and
the run shows ``staged``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from . import deadletters
from .config import Settings
from .errors import JankycronError, SkipRun, TerminalError, TransientError, line_in
from .job import Job, Routed, Run
from .ledger import REPLAY_PREFIX, DeadLetter, Ledger, RunStatus
from .load import Loader, LoadResult, Prefill, open_warehouse
from .load.warehouse import Warehouse
from .schedule import Interval, parse_fmt
from .staging import BatchWriter, RecordError, batch_prefix, encode
from .store import Store, open_store

log = logging.getLogger(__name__)

PROGRESS_EVERY = 100_000


class Context:
    """The connections a run needs, opened on first use and closed together."""

    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None):
        self.settings = settings
        self.progress = progress or (lambda msg: log.info("%s", msg))

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
                      locks)

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
                                 settings.part_size, prefill.part_staged if prefill else None)
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
                line = encode(record)
            except RecordError as e:
                rejects.append(DeadLetter(f"{run.run_id}.{table}", "stage", extracted, table,
                                          job.name, run.run_id, str(e), _shown(record), ""))
                continue
            writers[table].write_line(line, record)
            if extracted % PROGRESS_EVERY == 0:
                ctx.progress(f"{job.name}: extracted {extracted:,} records")
        staged = [w.close() for w in writers.values()]
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    deadletters.write(store, ctx.ledger, rejects)
    for b in staged:
        ctx.ledger.add_batch(run.run_id, job.name, run.interval, b.table, b.manifest_key, b.rows,
                             b.key_counts)
    return extracted, sum(b.rows for b in staged)


def run_job(ctx: Context, job: Job, interval: Interval, *, load: bool = True) -> dict[str, Any]:
    """Extract, stage and (with ``load``) load one interval of a job; returns the ledger row.

    Raises the job's exception (or the loader's) after recording it; a ``SkipRun`` is recorded
    as ``skipped`` and not raised.
    """
    ledger = ctx.ledger
    run_id = ledger.start_run(job.name, interval)
    run = Run(job, interval, run_id, dict(ledger.get_state(job.name)))
    run.log.info("extracting %s", interval)
    # Validate in the warehouse while the job extracts, where the backend can (load.Prefill).
    prefills = {t: ctx.loader.prefill(t, key, f"{run_id}.{t}")
                for t, key in job.tables.items()} if load else {}
    try:
        extracted, staged = extract(ctx, job, run, prefills)
    except BaseException as e:
        for p in prefills.values():
            if p:
                p.discard()
        if isinstance(e, SkipRun):
            ledger.finish_run(run_id, RunStatus.SKIPPED, error=str(e) or None)
            run.log.info("skipped: %s", e)
            return ledger.run(run_id)
        ledger.finish_run(run_id, RunStatus.FAILED, error=describe(e, job))
        run.log.error("failed: %s", describe(e, job),
                      exc_info=not isinstance(e, JankycronError))
        raise
    try:
        ledger.save_state(job.name, run.state)
        ledger.finish_run(run_id, RunStatus.STAGED, rows_extracted=extracted,
                          rows_staged=staged, rows_rejected=extracted - staged)
        run.log.info("staged %d of %d records", staged, extracted)
        if load:
            load_tables(ctx, job.tables, run_id=run_id, prefills=prefills)
    finally:
        for p in prefills.values():  # the ones a failed load did not reach
            if p:
                p.discard()
    return ledger.run(run_id)


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
                             ctx.settings.part_size)
        try:
            for d in sorted(items, key=lambda d: (d["run_id"], d["line"])):
                writer.write_line(d["record"].encode() + b"\n", json.loads(d["record"]))
            staged = writer.close()
        except BaseException as e:
            writer.abort()
            ledger.finish_run(new_run, RunStatus.FAILED, error=describe(e))
            raise
        ledger.add_batch(new_run, job_name, interval, table, staged.manifest_key, staged.rows,
                         staged.key_counts)
        ledger.mark_replayed(items)  # their records are in the pending replay batch now
        ledger.finish_run(new_run, RunStatus.STAGED, rows_extracted=staged.rows,
                          rows_staged=staged.rows, rows_rejected=0)
        ctx.progress(f"{table}: replaying {staged.rows:,} dead letter(s) of job {job_name}")
        runs.append(new_run)
    if runs:
        load_tables(ctx, {table: key}, run_id=runs[-1])
    return [ledger.run(r) for r in runs], len(letters) - len(replayable)
