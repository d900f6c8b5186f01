"""The shared loader: pending batches of a table -> validated, merged rows + dead letters.

For one table it takes every pending batch (an older pending batch of the same job and interval
is superseded by the newer one), streams their lines into the warehouse session, validates them
in ranges that are halved around failures until every bad line is isolated (k bad lines among
n cost O(k log n) validations), writes the bad ones to the dead-letter store with the
warehouse's reason, and merges the good ones by key in one transaction that also records the
batch ids in the warehouse. The ledger is updated after the commit; a loader that dies between
the two finds its batches recorded in the warehouse next time and does not load them again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .. import deadletters
from ..config import Settings
from ..errors import ConfigError, TerminalError
from ..ledger import Batch, BatchStatus, DeadLetter, Ledger
from ..staging import Store, open_part, read_manifest
from .warehouse import AlreadyLoaded, Column, Loaded, Session, Warehouse

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def open_warehouse(settings: Settings) -> Warehouse:
    scheme = urlsplit(settings.warehouse_url).scheme
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresWarehouse

        return PostgresWarehouse(settings.warehouse_url, settings.statement_timeout)
    if scheme == "duckdb":
        from .duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.warehouse_url, settings.statement_timeout)
    raise ConfigError(f"JANKYCRON_WAREHOUSE_URL: the {scheme}:// loader is not built yet; use "
                      "postgresql:// or duckdb://")


@dataclass
class LoadResult:
    table: str
    batches: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    superseded: int = 0
    validations: int = 0
    dropped_keys: dict[str, int] = field(default_factory=dict)


class SchemaCache:
    """Columns per table, read from the warehouse and kept for ``ttl`` seconds."""

    def __init__(self, warehouse: Warehouse, ttl: float = 600.0):
        self.warehouse, self.ttl = warehouse, ttl
        self._cache: dict[str, tuple[float, list[Column]]] = {}

    def columns(self, table: str) -> list[Column]:
        hit = self._cache.get(table)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        cols = self.warehouse.columns(table)
        self._cache[table] = (time.monotonic(), cols)
        return cols


def isolate(session: Session, lo: int, hi: int, result: LoadResult) -> list[tuple[int, str]]:
    """Validate lines lo..hi into stage; return (line, reason) for every line that fails."""
    result.validations += 1
    error = session.validate(lo, hi)
    if error is None:
        return []
    if lo == hi:
        return [(lo, session.probe(lo) or error)]
    mid = (lo + hi) // 2
    return isolate(session, lo, mid, result) + isolate(session, mid + 1, hi, result)


class Loader:
    def __init__(self, settings: Settings, ledger: Ledger, store: Store, warehouse: Warehouse,
                 progress: Progress | None = None):
        self.settings, self.ledger, self.store, self.warehouse = settings, ledger, store, warehouse
        self.schema = SchemaCache(warehouse)
        self.progress = progress or (lambda msg: log.info("%s", msg))

    def load_table(self, table: str, key: tuple[str, ...]) -> LoadResult:
        """Load every pending batch of ``table`` now."""
        result = LoadResult(table)
        for _ in range(3):  # another loader may finish some of the batches under our feet
            try:
                return self._load_once(table, key, result)
            except AlreadyLoaded as raced:
                self._record_loaded(raced.loaded)
        return result

    def _record_loaded(self, loaded: list[Loaded]) -> None:
        self.ledger.batches_done(
            {x.batch_id: (BatchStatus.LOADED, x.rows_loaded, x.rows_rejected, {})
             for x in loaded})

    def _load_once(self, table: str, key: tuple[str, ...], result: LoadResult) -> LoadResult:
        pending = self.ledger.pending_batches(table)
        if not pending:
            return result
        columns = self.schema.columns(table)
        names = {c.name for c in columns}
        missing = [k for k in key if k not in names]
        if missing:
            raise TerminalError(f"table {table} has no column {', '.join(missing)} "
                                "(its merge key)")
        session = self.warehouse.session(table, columns, key)
        try:
            done = session.already_loaded([b.id for b in pending])
            if done:  # committed by a loader that died before it updated the ledger
                self._record_loaded(done)
                gone = {d.batch_id for d in done}
                pending = [b for b in pending if b.id not in gone]
            newest: dict[tuple, Batch] = {}
            for b in pending:  # ordered by interval, then run id: the last one is the newest
                newest[(b.job, b.interval)] = b
            batches = [b for b in pending if newest[(b.job, b.interval)] is b]
            superseded = [b for b in pending if newest[(b.job, b.interval)] is not b]
            if not pending:
                return result
            rows = sum(b.rows for b in batches)
            self.progress(f"{table}: loading {len(batches)} batch(es), {rows:,} rows")
            clock = time.monotonic()
            ranges: dict[str, tuple[int, int]] = {}
            n = 0
            for b in batches:
                count = 0
                for part_key in read_manifest(self.store, b.manifest_key):
                    with open_part(self.store, part_key) as part:
                        count += session.add_lines(part)
                ranges[b.id] = (n + 1, n + count)
                n += count
            log.info("%s: read %d staged lines in %.2fs", table, n, time.monotonic() - clock)
            clock = time.monotonic()
            bad = isolate(session, 1, n, result) if n else []
            log.info("%s: %d validation(s) in %.2fs", table, result.validations,
                     time.monotonic() - clock)
            if bad:
                self.progress(f"{table}: {len(bad):,} row(s) refused by the warehouse "
                              f"({result.validations} validations)")
            letters, rejected = self._dead_letters(session, batches, ranges, bad)
            deadletters.write(self.store, self.ledger, letters)
            outcomes: dict[str, tuple[str, int, int, dict[str, int]]] = {}
            loaded: list[Loaded] = []
            for b in batches:
                lo, hi = ranges[b.id]
                dropped = {k: c for k, c in b.key_counts.items() if k not in names}
                ok = hi - lo + 1 - rejected.get(b.id, 0)
                outcomes[b.id] = (BatchStatus.LOADED, ok, rejected.get(b.id, 0), dropped)
                loaded.append(Loaded(b.id, ok, rejected.get(b.id, 0)))
                for k, c in dropped.items():
                    result.dropped_keys[k] = result.dropped_keys.get(k, 0) + c
            clock = time.monotonic()
            session.merge(loaded, json.dumps(result.dropped_keys, sort_keys=True)[:4000])
            log.info("%s: merged in %.2fs", table, time.monotonic() - clock)
        finally:
            session.close()
        for b in superseded:
            outcomes[b.id] = (BatchStatus.SUPERSEDED, 0, 0, {})
        self.ledger.batches_done(outcomes)
        result.batches += len(batches)
        result.superseded += len(superseded)
        result.rows_loaded += sum(x.rows_loaded for x in loaded)
        result.rows_rejected += sum(x.rows_rejected for x in loaded)
        self.progress(f"{table}: merged {result.rows_loaded:,} rows, "
                      f"{result.rows_rejected:,} dead-lettered")
        return result

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
