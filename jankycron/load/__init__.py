"""The shared loader: pending batches of a table -> validated, merged rows + dead letters.

For one table it takes every pending batch (an older pending batch of the same job and interval
is superseded by the newer one), streams their lines into the warehouse session, validates them
in ranges that are halved around failures until every bad line is isolated (k bad lines among
n cost O(k log n) validations), writes the bad ones to the dead-letter store with the
warehouse's reason, and merges the good ones by key in one transaction that also records the
batch ids in the warehouse. Where the warehouse can, it first tries a direct load instead
(``Session.load_direct``; PostgreSQL: ``load.direct``), which leaves the same rows in one pass
or changes nothing. The ledger is updated after the commit; a loader that dies between the two
finds its batches recorded in the warehouse next time and does not load them again.

A batch whose staged objects are damaged (``errors.CorruptBatch``: every part is checked as it
is read, ``staging.open_part``) is quarantined: marked ``corrupt`` in the ledger with the
one-line reason (its run fails), reported once through ``on_corrupt`` (an alert), and the
table's load starts again without it, so the other batches load in the same call. Nothing of
it lands: every check happens before the merge commits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .. import deadletters
from ..config import Settings
from ..errors import ConfigError, CorruptBatch, TerminalError, TransientError, WarehouseError
from ..ledger import Batch, BatchStatus, DeadLetter, Ledger
from ..schedule import fmt
from ..staging import Part, open_part
from ..store import Store
from .lock import RedisLocks
from .warehouse import (
    AlreadyLoaded,
    Column,
    Loaded,
    Session,
    Warehouse,
    batch_parts,
    isolate,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
# Told once of each batch quarantined: the batch and the one-line reason (runner: an alert).
OnCorrupt = Callable[[Batch, str], None]
# Appended to the reason of a quarantined batch whose job's reruns do not replace.
NOT_REREAD = ("; its job's source cannot be re-read (rerun_replaces=False), so a rerun will "
              "not replace it: the staged objects are kept for recovery by hand")
# batch id -> (status, rows loaded, rows rejected, JSON keys with no column, counted,
# rows replaced by a later line of the batch with the same key)
Outcomes = dict[str, tuple[str, int, int, dict[str, int], int]]


def open_warehouse(settings: Settings) -> Warehouse:
    scheme = urlsplit(settings.warehouse_url).scheme
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresWarehouse

        return PostgresWarehouse(settings.warehouse_url, settings.statement_timeout)
    if scheme == "duckdb":
        from .duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.warehouse_url, settings.statement_timeout)
    if scheme == "redshift":
        from ..store import open_store
        from .redshift import RedshiftWarehouse

        return RedshiftWarehouse(settings.warehouse_url, settings.statement_timeout,
                                 open_store(settings), settings.redshift_iam_role,
                                 settings.redshift_region)
    raise ConfigError(f"JANKYCRON_WAREHOUSE_URL: no loader for {scheme}://")


@dataclass
class LoadResult:
    table: str
    batches: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_replaced: int = 0  # replaced by a later record of the same batch with the same key
    superseded: int = 0
    validations: int = 0
    direct: bool = False  # loaded straight into the table (load.direct), not validated
    dropped_keys: dict[str, int] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)  # why, per batch quarantined now


class SchemaCache:
    """Columns per table, read from the warehouse and kept for ``ttl`` seconds."""

    def __init__(self, warehouse: Warehouse, ttl: float = 600.0):
        self.warehouse, self.ttl = warehouse, ttl
        self._cache: dict[str, tuple[float, list[Column]]] = {}

    def columns(self, table: str, fresh: bool = False) -> list[Column]:
        hit = self._cache.get(table)
        if hit and not fresh and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        cols = self.warehouse.columns(table)  # a missing table is not cached: it may come
        self._cache[table] = (time.monotonic(), cols)
        return cols

    def invalidate(self, table: str) -> None:
        self._cache.pop(table, None)


@dataclass
class Filled:
    """A session whose ``raw`` and ``stage`` hold batches' lines, validated."""

    session: Session
    ranges: dict[str, tuple[int, int]]  # batch id -> its lines in raw
    bad: list[tuple[int, str]]  # (line, reason) of every line the warehouse refused
    parts: list[Part] | None = None  # for a prefilled session: the parts it holds, as read


class Prefill:
    """Validates a batch's parts in the warehouse while the job is still extracting.

    A ``--local`` run would otherwise do all the warehouse work after the Python work; fed part
    by part (``part_staged`` is called as each part lands in the store), the warehouse works on
    the other core meanwhile. The loader uses the result only if, at load time, this batch is
    the table's only pending batch and its manifest lists exactly the parts fed; otherwise it
    discards it and loads as usual. Any error here just discards it too.
    """

    def __init__(self, loader: Loader, table: str, key: tuple[str, ...], batch_id: str):
        self.loader, self.table, self.key, self.batch_id = loader, table, key, batch_id
        self.parts: list[Part] = []
        self.result = LoadResult(table)
        self.session: Session | None = None
        self.bad: list[tuple[int, str]] = []
        self.lines = 0
        self.failed: BaseException | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=f"jankycron-prefill-{table}",
                                        daemon=True)
        self._thread.start()

    def part_staged(self, part_key: str) -> None:
        self._queue.put(part_key)

    def _work(self) -> None:
        while (part_key := self._queue.get()) is not None:
            if self.failed is not None:
                continue
            try:
                if self.session is None:
                    columns = self.loader.schema.columns(self.table)
                    self.session = self.loader.warehouse.session(self.table, columns, self.key)
                with open_part(self.loader.store, part_key) as part:
                    count = self.session.add_lines(part)
                    read = Part(part_key, part.lines, sha256=part.sha256)
                if count:
                    self.bad += isolate(self.session, self.lines + 1, self.lines + count,
                                        self.result)
                self.lines += count
                self.parts.append(read)
            except Exception as e:  # the ordinary load path will meet it again
                log.info("%s: validating while extracting stopped: %s", self.table, e)
                self.failed = e

    def finish(self) -> Filled | None:
        """Wait for the parts fed so far; the validated session, or None if it failed."""
        self._queue.put(None)
        self._thread.join()
        if self.failed is not None or self.session is None:
            self.discard()
            return None
        return Filled(self.session, {self.batch_id: (1, self.lines)}, self.bad, self.parts)

    def discard(self) -> None:
        """Stop and close; safe to call again, and after ``finish``."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.session is not None:
            with contextlib.suppress(Exception):
                self.session.close()
            self.session = None


def _line_ranges(batches: list[Batch]) -> dict[str, tuple[int, int]]:
    """Each batch's lines, numbered across the batches in order, from their staged counts."""
    ranges, n = {}, 0
    for b in batches:
        ranges[b.id] = (n + 1, n + b.rows)
        n += b.rows
    return ranges


def choose(pending: list[Batch]) -> tuple[list[Batch], list[Batch]]:
    """Split pending batches into those to load and those a newer run of the same job and
    interval superseded (a rerun replaces). ``pending`` is ordered by interval, then run id."""
    newest: dict[tuple, Batch] = {}
    for b in pending:
        if b.replaces and not b.is_replay:
            newest[(b.job, b.interval)] = b
    superseded = [b for b in pending if b.replaces and not b.is_replay
                  and newest[(b.job, b.interval)] is not b]
    gone = {b.id for b in superseded}
    return [b for b in pending if b.id not in gone], superseded


def _check_key(table: str, key: tuple[str, ...], batches: list[Batch]) -> None:
    """A table has one merge key: refuse to merge batches staged for another (two jobs, or
    two versions of one, feeding it by different keys would delete each other's rows). They
    stay pending; a rerun of their interval with the agreed key supersedes them."""
    other = [b for b in batches if b.merge_key is not None and b.merge_key != key]
    if other:
        b = other[0]
        raise TerminalError(
            f"table {table}: not merged by ({', '.join(key)}): {len(other)} pending batch(es) "
            f"were staged for merge key ({', '.join(b.merge_key or ())}), e.g. {b.id} of job "
            f"{b.job}; a table has one merge key (see jankycron check). They stay pending; "
            "after a key change, rerun their intervals to restage them")


class Loader:
    def __init__(self, settings: Settings, ledger: Ledger, store: Store, warehouse: Warehouse,
                 progress: Progress | None = None, locks: RedisLocks | None = None,
                 on_corrupt: OnCorrupt | None = None):
        self.settings, self.ledger, self.store, self.warehouse = settings, ledger, store, warehouse
        self.on_corrupt = on_corrupt
        self.schema = SchemaCache(warehouse)
        self.progress = progress or (lambda msg: log.info("%s", msg))
        self.locks = locks  # one loader per table across processes (None: the warehouse's
        # own table lock and jankycron_loads still prevent double merges)

    def plan(self, table: str, key: tuple[str, ...]) -> dict:
        """What ``load_table`` would do now, without doing it (``jankycron load --dry-run``)."""
        batches, superseded = choose(self.ledger.pending_batches(table))
        columns = self.schema.columns(table) if batches else []
        rows = sum(b.rows for b in batches)
        sql = self.warehouse.plan_sql(table, columns, key, rows) if batches else []
        planned = []
        for b in batches:
            entry = {"id": b.id, "job": b.job, "start": fmt(b.interval.start),
                     "end": fmt(b.interval.end), "rows": b.rows,
                     "manifest": self.store.url(b.manifest_key), "parts": None, "damaged": None}
            try:  # the manifest only: the parts are checked when the load reads them
                entry["parts"] = len(batch_parts(self.store, b))
            except CorruptBatch as e:
                entry["damaged"] = str(e)  # the load will quarantine it
            planned.append(entry)
        return {
            "table": table, "key": list(key), "rows": rows,
            "batches": planned,
            "superseded": [b.id for b in superseded],
            "quarantined": self.ledger.corrupt_batches(table),
            "sql": sql,
        }

    def prefill(self, table: str, key: tuple[str, ...], batch_id: str) -> Prefill | None:
        """Start validating a batch while it is being staged (see ``Prefill``)."""
        if not self.warehouse.supports_prefill:
            return None
        return Prefill(self, table, key, batch_id)

    def load_table(self, table: str, key: tuple[str, ...],
                   prefill: Prefill | None = None) -> LoadResult:
        """Load every pending batch of ``table`` now (waiting for the table's lock)."""
        result = LoadResult(table)
        filled = prefill.finish() if prefill else None
        if filled and prefill:
            result.validations += prefill.result.validations
        lock = None
        try:
            lock = self.locks.acquire(table) if self.locks else None
            schema_retried = False
            races = 0
            while races < 3:  # another loader may finish some batches under our feet
                try:
                    return self._load_once(table, key, result, filled,
                                           lock.ensure_owned if lock else None)
                except AlreadyLoaded as raced:
                    self._record_loaded(raced.loaded, self.ledger.pending_batches(table))
                    filled, races = None, races + 1
                except CorruptBatch as e:  # quarantined; the load starts again without it
                    self._quarantine(table, e, result)
                    filled = None
                except WarehouseError as e:
                    # The table changed since its columns were cached (a column dropped or
                    # retyped): read them again and retry once; a real refusal fails again.
                    if isinstance(e, TransientError) or schema_retried:
                        raise
                    log.info("%s: %s; reading its columns again", table, e)
                    self.schema.invalidate(table)
                    schema_retried, filled = True, None
            return result
        finally:
            if filled:  # _load_once closes the sessions it takes; this one may be left over
                filled.session.close()
            if lock:
                lock.release()

    def _quarantine(self, table: str, e: CorruptBatch, result: LoadResult) -> None:
        """Mark the damaged batch ``corrupt`` (not pending any more: it is not retried) and
        tell ``on_corrupt`` once. An error no pending batch of the table owns is raised."""
        pending = self.ledger.pending_batches(table)
        batch = next((b for b in pending if b.id == e.batch_id), None) or next(
            (b for b in pending if e.key == b.manifest_key
             or e.key.startswith(b.manifest_key.rsplit("/", 1)[0] + "/")), None)
        if batch is None:
            raise e
        reason = str(e) + ("" if batch.replaces else NOT_REREAD)
        self.progress(f"{table}: batch {batch.id} quarantined: {reason}")
        result.quarantined.append(reason)
        if self.ledger.batch_corrupt(batch.id, reason) and self.on_corrupt:
            try:
                self.on_corrupt(batch, reason)
            except Exception as x:  # an alert never stops a load
                log.warning("%s: quarantine of %s not reported: %s", table, batch.id, x)

    def _record_loaded(self, loaded: list[Loaded], batches: list[Batch]) -> None:
        """Batches another loader merged (read back from ``jankycron_loads``, which keeps no
        replaced count: it is what is left of the batch's staged lines)."""
        staged = {b.id: b.rows for b in batches}
        self.ledger.batches_done(
            {x.batch_id: (BatchStatus.LOADED, x.rows_loaded, x.rows_rejected, {},
                          max(staged.get(x.batch_id, 0) - x.rows_loaded - x.rows_rejected, 0))
             for x in loaded})

    def _load_once(self, table: str, key: tuple[str, ...], result: LoadResult,
                   filled: Filled | None = None,
                   before_commit: Callable[[], None] | None = None) -> LoadResult:
        pending = self.ledger.pending_batches(table)
        if not pending:
            if filled:
                filled.session.close()
            return result
        columns = self.schema.columns(table)
        fold = str.lower if self.warehouse.folds_case else str
        names = {c.name for c in columns}
        if any(fold(k) not in names for b in pending for k in b.key_counts):
            # Keys with no column: dropped, unless the column was added since we cached.
            columns = self.schema.columns(table, fresh=True)
            names = {c.name for c in columns}
        missing = [k for k in key if fold(k) not in names]
        if missing:
            raise TerminalError(f"table {table} has no column {', '.join(missing)} "
                                "(its merge key)")
        session = filled.session if filled else self.warehouse.session(table, columns, key)
        try:
            done = session.already_loaded([b.id for b in pending])
            if done:  # committed by a loader that died before it updated the ledger
                self._record_loaded(done, pending)
                gone = {d.batch_id for d in done}
                pending = [b for b in pending if b.id not in gone]
            batches, superseded = choose(pending)
            if not pending:
                return result
            _check_key(table, key, batches)
            rows = sum(b.rows for b in batches)
            self.progress(f"{table}: loading {len(batches)} batch(es), {rows:,} rows")
            if filled and not self._fits(filled, batches, columns):
                session.close()
                session, filled = self.warehouse.session(table, columns, key), None
            clock = time.monotonic()
            direct = False
            if filled:
                ranges, bad = filled.ranges, filled.bad
            else:  # straight into the table where the warehouse can; validated otherwise
                ranges, bad = _line_ranges(batches), []
                outcomes, loaded, dropped_keys = self._outcomes(batches, ranges, {}, fold, names)
                direct = session.load_direct(self.store, batches, loaded, dropped_keys,
                                             before_commit)
                if direct:
                    result.direct = True
                    log.info("%s: loaded directly in %.2fs", table, time.monotonic() - clock)
                else:
                    ranges, bad = session.fill(self.store, batches, result)
            if not direct:
                if bad:
                    self.progress(f"{table}: {len(bad):,} row(s) refused by the warehouse "
                                  f"({result.validations} validations)")
                letters, rejected = self._dead_letters(session, batches, ranges, bad)
                deadletters.write(self.store, self.ledger, letters)
                outcomes, loaded, dropped_keys = self._outcomes(batches, ranges, rejected, fold,
                                                                names)
                clock = time.monotonic()
                session.merge(loaded, dropped_keys, before_commit)
                log.info("%s: merged in %.2fs", table, time.monotonic() - clock)
            for x in loaded:  # the merge counted the replaced lines into ``loaded``
                status, _, rejected, dropped, *_ = outcomes[x.batch_id]
                outcomes[x.batch_id] = (status, x.rows_loaded, rejected, dropped, x.rows_replaced)
            self._count(result, outcomes)
        finally:
            session.close()
        return self._done(table, result, batches, superseded, outcomes, loaded)

    def _done(self, table: str, result: LoadResult, batches: list[Batch],
              superseded: list[Batch], outcomes: Outcomes,
              loaded: list[Loaded]) -> LoadResult:
        """After the commit: the batches' outcomes into the ledger, and into ``result``."""
        for b in superseded:
            outcomes[b.id] = (BatchStatus.SUPERSEDED, 0, 0, {}, 0)
        self.ledger.batches_done(outcomes)
        result.batches += len(batches)
        result.superseded += len(superseded)
        result.rows_loaded += sum(x.rows_loaded for x in loaded)
        result.rows_rejected += sum(x.rows_rejected for x in loaded)
        result.rows_replaced += sum(x.rows_replaced for x in loaded)
        replaced = (f", {result.rows_replaced:,} replaced by a later record with the same key"
                    if result.rows_replaced else "")
        self.progress(f"{table}: merged {result.rows_loaded:,} rows, "
                      f"{result.rows_rejected:,} dead-lettered{replaced}")
        return result

    @staticmethod
    def _outcomes(batches: list[Batch], ranges: dict[str, tuple[int, int]],
                  rejected: dict[str, int], fold: Callable[[str], str], names: set[str]
                  ) -> tuple[Outcomes, list[Loaded], str]:
        """Each batch's ledger outcome and ``jankycron_loads`` row, and the JSON keys with no
        column (dropped), counted, for ``jankycron_loads``."""
        outcomes: Outcomes = {}
        loaded: list[Loaded] = []
        dropped_all: dict[str, int] = {}
        for b in batches:
            lo, hi = ranges[b.id]
            dropped = {k: c for k, c in b.key_counts.items() if fold(k) not in names}
            ok = hi - lo + 1 - rejected.get(b.id, 0)
            outcomes[b.id] = (BatchStatus.LOADED, ok, rejected.get(b.id, 0), dropped, 0)
            loaded.append(Loaded(b.id, ok, rejected.get(b.id, 0)))
            for k, c in dropped.items():
                dropped_all[k] = dropped_all.get(k, 0) + c
        return outcomes, loaded, json.dumps(dropped_all, sort_keys=True)[:4000]

    @staticmethod
    def _count(result: LoadResult, outcomes: Outcomes) -> None:
        for outcome in outcomes.values():
            for k, c in outcome[3].items():
                result.dropped_keys[k] = result.dropped_keys.get(k, 0) + c

    def _fits(self, filled: Filled, batches: list[Batch], columns: list[Column]) -> bool:
        """Does the prefilled session hold exactly these batches' lines, for these columns?"""
        if [b.id for b in batches] != list(filled.ranges) or filled.session.columns != columns:
            return False
        (b,) = batches
        try:
            staged = batch_parts(self.store, b)
        except CorruptBatch:
            return False  # the usual load path meets it again, and quarantines the batch
        read = filled.parts or []
        return len(staged) == len(read) and sum(r.lines or 0 for r in read) == b.rows and all(
            s.key == r.key and s.lines in (None, r.lines) and s.sha256 in (None, r.sha256)
            for s, r in zip(staged, read, strict=True))

    @staticmethod
    def _dead_letters(session: Session, batches: list[Batch], ranges: dict[str, tuple[int, int]],
                      bad: list[tuple[int, str]]) -> tuple[list[DeadLetter], dict[str, int]]:
        if not bad:
            return [], {}
        raw = session.raw_lines(n for n, _ in bad)
        letters, rejected = [], {}
        for n, reason in bad:
            b = next(b for b in batches if ranges[b.id][0] <= n <= ranges[b.id][1])
            line = n - ranges[b.id][0] + 1
            letters.append(DeadLetter(b.id, "load", line, b.table, b.job, b.run_id, reason,
                                      raw[n], ""))
            rejected[b.id] = rejected.get(b.id, 0) + 1
        return letters, rejected
