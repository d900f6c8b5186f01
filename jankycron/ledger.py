"""The ledger: runs, staged batches, job state and the dead-letter index.

SQLite (embedded default) or PostgreSQL, chosen by ``JANKYCRON_STATE_URL``. Times are stored
as ISO 8601 UTC text (``2026-11-25T04:00:00Z``), which sorts and reads the same on both.

A batch is pending until the loader has merged it (``loaded``) or a newer batch of the same
job, interval and table replaced it (``superseded``). A run's row counts are the sum of its
batches', so a run whose load failed shows ``staged`` until a later load finishes it.

A batch whose staged objects are damaged is ``corrupt`` (quarantined, with the reason in its
``error``): no longer pending, and its run ``failed`` with that reason once none of its batches
is pending. A newer batch of the same job, interval and table that loads supersedes it (unless
the job's reruns do not replace), and the run becomes ``superseded``, keeping the reason.

Opening a ledger whose schema is current takes no table lock: it reads one row of ``jc_meta``
(the schema version) outside any transaction. Only an older ledger is upgraded, once, under an
advisory lock (see ``Ledger._upgrade``).

Lock order. Every transaction that writes several tables takes them in this order, so that two
of them cannot wait on each other: ``jc_schedule``, ``jc_batches``, ``jc_deadletters``,
``jc_job_state``, ``jc_table_state``, and ``jc_runs`` last (a run's row is the roll-up of the
others); rows of one table in ascending id. PostgreSQL may still abort a transaction as a
deadlock victim or a serialization failure (a schema upgrade's DDL beside running loads, rows
locked by a statement's plan); such a transaction is run again from the start (``Ledger.atomic``,
``RETRIES`` tries with jittered backoff), and only when every try failed does the caller see
``LedgerUnavailable`` (transient: the run's task is retried), never a failed run.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .config import Settings, redact
from .errors import ConfigError, LedgerUnavailable
from .schedule import Interval, fmt, parse_fmt
from .scrub import TEXT_LIMIT, Scrubber, safe_text

log = logging.getLogger(__name__)


class RunStatus:
    RUNNING = "running"
    STAGED = "staged"  # extracted and staged; waiting for (or retrying) the load
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"  # a newer run of the same interval replaced this one's data
    RETRIED = "retried"  # this attempt hit a TransientError; a later attempt (a new run) follows
    LOST = "lost"  # its worker stopped heartbeating (killed); the sweeper re-enqueued it


class BatchStatus:
    PENDING = "pending"
    LOADED = "loaded"
    SUPERSEDED = "superseded"
    CORRUPT = "corrupt"  # quarantined: a staged object is damaged (the batch's error says how)


SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jc_runs (
        id TEXT PRIMARY KEY, job TEXT NOT NULL, interval_start TEXT NOT NULL,
        interval_end TEXT NOT NULL, status TEXT NOT NULL,
        rows_extracted INTEGER NOT NULL DEFAULT 0, rows_staged INTEGER NOT NULL DEFAULT 0,
        rows_loaded INTEGER NOT NULL DEFAULT 0, rows_rejected INTEGER NOT NULL DEFAULT 0,
        dropped_keys TEXT, started_at TEXT NOT NULL, finished_at TEXT, error TEXT)""",
    "CREATE INDEX IF NOT EXISTS jc_runs_job ON jc_runs (job, interval_start)",
    """CREATE TABLE IF NOT EXISTS jc_batches (
        id TEXT PRIMARY KEY, run_id TEXT NOT NULL, job TEXT NOT NULL, table_name TEXT NOT NULL,
        interval_start TEXT NOT NULL, interval_end TEXT NOT NULL, manifest_key TEXT NOT NULL,
        rows INTEGER NOT NULL, key_counts TEXT NOT NULL, status TEXT NOT NULL,
        created_at TEXT NOT NULL, loaded_at TEXT, rows_loaded INTEGER NOT NULL DEFAULT 0,
        rows_rejected INTEGER NOT NULL DEFAULT 0, dropped_keys TEXT)""",
    "CREATE INDEX IF NOT EXISTS jc_batches_pending ON jc_batches (table_name, status)",
    """CREATE TABLE IF NOT EXISTS jc_table_state (
        table_name TEXT PRIMARY KEY, failures INTEGER NOT NULL, last_failure_at TEXT,
        last_error TEXT)""",
    """CREATE TABLE IF NOT EXISTS jc_job_state (
        job TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS jc_deadletters (
        batch_id TEXT NOT NULL, phase TEXT NOT NULL, line INTEGER NOT NULL,
        table_name TEXT NOT NULL, job TEXT NOT NULL, run_id TEXT NOT NULL,
        reason TEXT NOT NULL, record TEXT NOT NULL, object_key TEXT NOT NULL,
        created_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open',
        PRIMARY KEY (batch_id, phase, line))""",
    # Per job, for beat (see celery_app / housekeeping): since when it is scheduled, the end of
    # the newest interval already enqueued, and the last success a missed-run alert was sent for.
    """CREATE TABLE IF NOT EXISTS jc_schedule (
        job TEXT PRIMARY KEY, since TEXT NOT NULL, fired_until TEXT, missed_alerted TEXT)""",
]

# Columns added after the first release: (table, column, type), added when missing, so an
# existing ledger upgrades itself on open (CREATE TABLE IF NOT EXISTS does not add columns).
COLUMNS = [
    ("jc_runs", "attempt", "INTEGER"),  # 1, 2, ...: which try of a Celery task this run is
    ("jc_runs", "task_id", "TEXT"),  # the Celery task that ran it (the CLI follows it)
    ("jc_runs", "heartbeat_at", "TEXT"),  # last sign of life of a running run
    # 0: a batch of a job whose reruns do not replace (Job.rerun_replaces); NULL counts as 1
    ("jc_batches", "replaces", "INTEGER"),
    # when housekeeping removed the staged objects of a run that recorded no batch for them
    ("jc_runs", "orphans_removed_at", "TEXT"),
    # lines a later line of the same batch (run) with the same key replaced: rows_extracted =
    # rows_loaded + rows_rejected + rows_replaced (0 for rows loaded before it was counted)
    ("jc_batches", "rows_replaced", "INTEGER NOT NULL DEFAULT 0"),
    ("jc_runs", "rows_replaced", "INTEGER NOT NULL DEFAULT 0"),
    ("jc_batches", "error", "TEXT"),  # why the batch is corrupt (kept once superseded)
    # the merge key the batch was staged for, as a JSON list; the loader refuses to merge it
    # by another (a table has one key); NULL: staged before this was recorded
    ("jc_batches", "merge_key", "TEXT"),
]
INDEXES = [
    "CREATE INDEX IF NOT EXISTS jc_runs_task ON jc_runs (task_id)",
    "CREATE INDEX IF NOT EXISTS jc_runs_status ON jc_runs (status)",
]
# SCHEMA, COLUMNS and INDEXES are append-only: the schema version is how many steps they hold,
# so a change (from any branch) raises it and every ledger upgrades once. A ledger written by
# newer code (a higher version) is current for older code: it only has more columns.
SCHEMA_VERSION = len(SCHEMA) + len(COLUMNS) + len(INDEXES)
META = "CREATE TABLE IF NOT EXISTS jc_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

RETRIES = 8  # tries of a transaction PostgreSQL aborted as a deadlock / serialization failure
RETRY_PAUSE = 0.05  # seconds before the 2nd try; doubles, at most 2 s, each time jittered

T = TypeVar("T")


REPLAY_PREFIX = "replay/"  # where replayed dead letters are staged (see runner.replay)


def now() -> str:
    return fmt(datetime.now(UTC))


def new_run_id() -> str:
    """Sortable by start time to the microsecond, ``20261126T114512123456Z-3fa2c1``: the newest
    of two runs of one interval is the one whose batch is loaded, even when both started
    within the same second."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class Batch:
    id: str
    run_id: str
    job: str
    table: str
    interval: Interval
    manifest_key: str
    rows: int
    key_counts: dict[str, int]
    replaces: bool = True  # does a newer run of its interval supersede it (Job.rerun_replaces)?
    merge_key: tuple[str, ...] | None = None  # the key it was staged for (None: not recorded)

    @property
    def is_replay(self) -> bool:
        """Replayed dead letters: not an extraction of its interval, so it neither supersedes
        nor is superseded by the interval's runs."""
        return self.manifest_key.startswith(REPLAY_PREFIX)


@dataclass(frozen=True)
class DeadLetter:
    batch_id: str
    phase: str  # "stage": could not be encoded; "load": the warehouse refused it
    line: int  # the record's line in the batch (load) or its position in the job's output
    table: str
    job: str
    run_id: str
    reason: str
    record: str
    object_key: str


class Ledger:
    def __init__(self, url: str, scrubber: Scrubber | None = None):
        self.url = url
        self.scrubber = scrubber or Scrubber()
        parts = urlsplit(url)
        self.kind = "sqlite" if parts.scheme == "sqlite" else "postgresql"
        self._depth = 0  # nesting of transaction(): inner ones join the outer one
        self._conflict: tuple[type[BaseException], ...] = ()  # aborted, safe to run again
        self.conn = self._connect()
        if self._retrying(self._version) < SCHEMA_VERSION:
            self.atomic(self._upgrade)

    def _connect(self) -> Any:
        url = self.url
        try:
            if self.kind == "sqlite":
                path = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
                if path is None or not str(path):
                    raise ConfigError("JANKYCRON_STATE_URL must look like sqlite:///path/state.db")
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA busy_timeout=30000")
                self._lost: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)
            else:
                import psycopg2

                # Keepalives: a ledger behind a dead network is noticed in ~25 s, not hours.
                conn = psycopg2.connect(url.replace("postgres://", "postgresql://", 1),
                                        connect_timeout=10, keepalives=1, keepalives_idle=10,
                                        keepalives_interval=5, keepalives_count=3)
                conn.autocommit = True
                self._lost = (psycopg2.OperationalError, psycopg2.InterfaceError)
                # 40001 serialization failure, 40P01 deadlock (an OperationalError subclass)
                self._conflict = (psycopg2.extensions.TransactionRollbackError,)
        except ConfigError:
            raise
        except (sqlite3.Error, OSError) as e:
            raise ConfigError(f"cannot open the ledger {redact(url)}: {e}") from None
        except Exception as e:  # psycopg2.OperationalError: server down, bad database
            raise LedgerUnavailable(f"ledger {redact(url)} is unreachable ({_first(e)})") \
                from None
        return conn

    @classmethod
    def open(cls, settings: Settings) -> Ledger:
        return cls(settings.state_url, settings.scrubber())

    def close(self) -> None:
        self.conn.close()

    # ---------------------------------------------------------------- plumbing
    def _text(self, text: str | None, limit: int | None = None) -> str | None:
        """Every error and reason the ledger stores passes through here: without secrets,
        NUL and lone surrogates escaped (PostgreSQL refuses NUL, UTF-8 surrogates), bounded
        with a visible marker (``scrub.safe_text``)."""
        if text is None:
            return None
        return safe_text(self.scrubber(str(text)), limit or TEXT_LIMIT)

    def _sql(self, sql: str) -> str:
        return sql if self.kind == "sqlite" else sql.replace("?", "%s")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The one place the drivers' errors for a ledger that cannot be reached or written
        (server down, connection cut, SQLite file locked or unwritable) become
        ``LedgerUnavailable``; SQL errors stay what they are."""
        try:
            yield
        except LedgerUnavailable:
            raise
        except self._conflict:
            raise  # not an outage: _retrying runs the statement or transaction again
        except self._lost as e:
            code = getattr(e, "sqlite_errorcode", None)
            if code is not None and code & 0xFF not in _SQLITE_UNAVAILABLE:
                raise  # an SQL mistake, not an outage
            raise LedgerUnavailable(f"ledger {redact(self.url)} is unreachable ({_first(e)})") \
                from None

    def _cursor(self) -> Any:
        """A cursor; a PostgreSQL connection that was lost is opened again (outside a
        transaction: inside one, the transaction is gone and the caller must start over)."""
        if self.kind == "postgresql" and self.conn.closed:
            if self._depth:
                raise LedgerUnavailable(f"ledger {redact(self.url)} is unreachable (the "
                                        "connection was lost mid-transaction)")
            self.conn = self._connect()
        return self.conn.cursor()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction; a ``transaction()`` inside another joins it (all or nothing).

        A ``with`` body cannot be run again: an outermost one that PostgreSQL aborts as a
        deadlock victim raises ``LedgerUnavailable``. Bookkeeping uses ``atomic``, which
        retries."""
        if self._depth:
            with self._transaction() as cur:
                yield cur
            return
        try:
            with self._transaction() as cur:
                yield cur
        except self._conflict as e:
            raise self._busy(e, 1) from None

    def atomic(self, body: Callable[[Any], T]) -> T:
        """``body(cursor)`` in one transaction, all or nothing, and its result. Run again from
        the start (after a jittered pause) when PostgreSQL aborts it as a deadlock victim or a
        serialization failure, ``RETRIES`` tries in all: so ``body`` must only touch the
        ledger, or do what is safe to do twice. Inside another transaction it joins that one
        (the outermost ``atomic`` retries the whole)."""
        def once() -> T:
            with self._transaction() as cur:
                return body(cur)

        return once() if self._depth else self._retrying(once)

    def _retrying(self, fn: Callable[[], T]) -> T:
        """The one place aborted transactions are retried (``atomic``, and every statement run
        outside a transaction: each is a transaction of its own)."""
        if self._depth or not self._conflict:
            return fn()
        for attempt in range(1, RETRIES + 1):
            try:
                return fn()
            except self._conflict as e:
                if attempt == RETRIES:
                    raise self._busy(e, attempt) from None
                pause = min(2.0, RETRY_PAUSE * 2 ** (attempt - 1))
                log.warning("ledger: %s; trying again (%d of %d)", _first(e), attempt + 1,
                            RETRIES)
                time.sleep(random.uniform(pause / 2, pause))
        raise AssertionError("unreachable")

    def _busy(self, e: BaseException, tries: int) -> LedgerUnavailable:
        return LedgerUnavailable(f"ledger {redact(self.url)} is busy ({_first(e)}; "
                                 f"{tries} tr{'y' if tries == 1 else 'ies'})")

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self._depth:
            self._depth += 1
            try:
                yield _Cursor(self._cursor(), self._sql, self._errors)
            finally:
                self._depth -= 1
            return
        with self._errors():
            cur = self._cursor()
            cur.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")
        self._depth = 1
        try:
            yield _Cursor(cur, self._sql, self._errors)
        except BaseException:
            self._depth = 0
            with suppress(Exception):  # a lost connection has rolled back already
                cur.execute("ROLLBACK")
            raise
        self._depth = 0
        with self._errors():
            cur.execute("COMMIT")

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        def once() -> list[dict[str, Any]]:
            with self._errors():
                cur = self._cursor()
                cur.execute(self._sql(sql), tuple(args))
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        return self._retrying(once)

    def _exec(self, sql: str, args: Iterable[Any] = ()) -> None:
        def once() -> None:
            with self._errors():
                self._cursor().execute(self._sql(sql), tuple(args))

        self._retrying(once)

    def _version(self) -> int:
        """The ledger's schema version (0: none recorded, a new or pre-versioning ledger), read
        outside any transaction: one row of ``jc_meta``, no lock on the other tables."""
        with self._errors():
            cur = self._cursor()
            try:
                cur.execute("SELECT value FROM jc_meta WHERE key = 'schema_version'")
            except Exception as e:
                if _missing_table(e):
                    return 0
                raise
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def _upgrade(self, cur: _Cursor) -> None:
        """Bring an older ledger to SCHEMA_VERSION: create the tables and indexes, add the
        columns of COLUMNS it lacks (idempotent), record the version. One transaction under
        an advisory lock, so two processes opening an old ledger at once do not race; the
        second finds the version current and does nothing. Its DDL locks tables, in SCHEMA's
        order, once per version: a deadlock with a load then is retried like any other."""
        if self.kind == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(4242001)")
        cur.execute(META)
        cur.execute("SELECT value FROM jc_meta WHERE key = 'schema_version'")
        row = cur.fetchone()
        if row and int(row[0]) >= SCHEMA_VERSION:
            return
        for stmt in SCHEMA:
            cur.execute(stmt)
        for table, column, kind in COLUMNS:
            if self.kind == "sqlite":
                cur.execute("SELECT 1 FROM pragma_table_info(?) WHERE name = ?", (table, column))
            else:
                cur.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = "
                            "current_schema() AND table_name = ? AND column_name = ?",
                            (table, column))
            if cur.fetchone() is None:  # PostgreSQL: IF NOT EXISTS too, for a concurrent open
                guard = "" if self.kind == "sqlite" else "IF NOT EXISTS "
                cur.execute(f"ALTER TABLE {table} ADD COLUMN {guard}{column} {kind}")
        for stmt in INDEXES:
            cur.execute(stmt)
        cur.execute("INSERT INTO jc_meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),))

    def _count(self, sql: str, args: Iterable[Any] = ()) -> int:
        """Execute and return how many rows it changed."""
        def once() -> int:
            with self._errors():
                cur = self._cursor()
                cur.execute(self._sql(sql), tuple(args))
                return cur.rowcount

        return self._retrying(once)

    # ---------------------------------------------------------------- runs
    def start_run(self, job: str, interval: Interval, *, attempt: int | None = None,
                  task_id: str | None = None, heartbeat: bool = False) -> str:
        """A new run, ``running``. ``heartbeat``: the run will heartbeat (``runner.run_job``
        does), so the sweeper may declare it lost when that stops."""
        run_id, at = new_run_id(), now()
        self._exec(
            "INSERT INTO jc_runs (id, job, interval_start, interval_end, status, started_at, "
            "attempt, task_id, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, job, fmt(interval.start), fmt(interval.end), RunStatus.RUNNING, at,
             attempt, task_id, at if heartbeat else None),
        )
        return run_id

    def heartbeat(self, run_id: str) -> None:
        self._exec("UPDATE jc_runs SET heartbeat_at = ? WHERE id = ? AND status = ?",
                   (now(), run_id, RunStatus.RUNNING))

    def note_attempt(self, run_id: str, attempt: int, error: str | None = None) -> None:
        """A staged run whose load is tried again (``attempt``), with the last error."""
        self._exec("UPDATE jc_runs SET attempt = ?, error = COALESCE(?, error) WHERE id = ?",
                   (attempt, self._text(error), run_id))

    def runs_of_task(self, task_id: str) -> list[dict[str, Any]]:
        """The runs a Celery task made (one per attempt), oldest first."""
        rows = self._rows("SELECT * FROM jc_runs WHERE task_id = ? ORDER BY id", (task_id,))
        return [_run_out(r) for r in rows]

    def stale_runs(self, before: datetime) -> list[dict[str, Any]]:
        """Running runs that heartbeat but whose last heartbeat is older than ``before``."""
        rows = self._rows("SELECT * FROM jc_runs WHERE status = ? AND heartbeat_at IS NOT NULL "
                          "AND heartbeat_at < ? ORDER BY id", (RunStatus.RUNNING, fmt(before)))
        return [{**_run_out(r), "heartbeat_at": r["heartbeat_at"], "task_id": r["task_id"]}
                for r in rows]

    def mark_lost(self, run_id: str, error: str) -> bool:
        """``running`` -> ``lost``; False if it was no longer running (it finished meanwhile,
        or another sweeper got it first)."""
        return self._count("UPDATE jc_runs SET status = ?, finished_at = ?, error = ? "
                           "WHERE id = ? AND status = ?",
                           (RunStatus.LOST, now(), self._text(error), run_id,
                            RunStatus.RUNNING)) == 1

    def newer_run(self, run: dict[str, Any]) -> dict[str, Any] | None:
        """The newest run of the same job and interval started after ``run``, if any."""
        rows = self._rows("SELECT * FROM jc_runs WHERE job = ? AND interval_start = ? AND "
                          "interval_end = ? AND id > ? ORDER BY id DESC LIMIT 1",
                          (run["job"], run["start"], run["end"], run["run_id"]))
        return _run_out(rows[0]) if rows else None

    def unrecorded_runs(self, before: datetime, limit: int = 500) -> list[dict[str, Any]]:
        """Runs that ended (failed, lost, retried) before ``before`` and whose staged objects
        housekeeping has not looked at yet, oldest first, each with ``recorded``: the tables it
        recorded a batch for (``housekeeping.remove_orphans`` leaves those alone)."""
        rows = self._rows(
            "SELECT * FROM jc_runs WHERE status IN (?, ?, ?) AND orphans_removed_at IS NULL "
            "AND COALESCE(finished_at, started_at) < ? ORDER BY id LIMIT ?",
            (RunStatus.FAILED, RunStatus.LOST, RunStatus.RETRIED, fmt(before), limit))
        out = []
        for r in rows:
            recorded = self._rows("SELECT table_name FROM jc_batches WHERE run_id = ?", (r["id"],))
            out.append({**_run_out(r), "recorded": {b["table_name"] for b in recorded}})
        return out

    def tables_of(self, job: str) -> set[str]:
        """Every table a job's runs recorded batches for."""
        return {r["table_name"] for r in self._rows(
            "SELECT DISTINCT table_name FROM jc_batches WHERE job = ?", (job,))}

    def orphans_removed(self, run_id: str) -> None:
        self._exec("UPDATE jc_runs SET orphans_removed_at = ? WHERE id = ?", (now(), run_id))

    def failed_runs(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Intervals whose newest run failed or was lost (started at or after ``since``),
        oldest interval first: what ``rerun --failed`` re-enqueues."""
        rows = self._rows(
            "SELECT r.* FROM jc_runs r WHERE r.status IN (?, ?) AND r.started_at >= ? AND NOT "
            "EXISTS (SELECT 1 FROM jc_runs n WHERE n.job = r.job AND n.interval_start = "
            "r.interval_start AND n.interval_end = r.interval_end AND n.id > r.id) "
            "ORDER BY r.interval_start, r.job",
            (RunStatus.FAILED, RunStatus.LOST, fmt(since) if since else ""))
        return [_run_out(r) for r in rows]

    def last_success(self, job: str, before: datetime | None = None) -> datetime | None:
        """The end of the newest interval of ``job`` that is done (loaded, or skipped); with
        ``before``, of those ending before it (a run of a later or far-off interval, possible
        in an old ledger or through the API, must not stand for the intervals now due)."""
        bound, args = (" AND interval_end < ?", [fmt(before)]) if before else ("", [])
        rows = self._rows("SELECT MAX(interval_end) AS e FROM jc_runs WHERE job = ? AND "
                          f"status IN (?, ?){bound}",
                          (job, RunStatus.SUCCESS, RunStatus.SKIPPED, *args))
        return parse_fmt(rows[0]["e"]) if rows and rows[0]["e"] else None

    def runs_of(self, job: str, interval: Interval) -> list[dict[str, Any]]:
        """Every run of ``job`` for exactly ``interval``, oldest first."""
        rows = self._rows("SELECT * FROM jc_runs WHERE job = ? AND interval_start = ? AND "
                          "interval_end = ? ORDER BY id",
                          (job, fmt(interval.start), fmt(interval.end)))
        return [_run_out(r) for r in rows]

    # ---------------------------------------------------------------- beat's bookkeeping
    def schedule_state(self, job: str) -> dict[str, Any]:
        """The job's row of jc_schedule, created (``since`` = now) on first sight."""
        self._exec("INSERT INTO jc_schedule (job, since) VALUES (?, ?) "
                   "ON CONFLICT (job) DO NOTHING", (job, now()))
        return self._rows("SELECT * FROM jc_schedule WHERE job = ?", (job,))[0]

    def advance_fired(self, job: str, old: str | None, new: str | None) -> bool:
        """Compare-and-set the end of the newest enqueued interval: True if it was still
        ``old`` (so this caller, and no other, enqueues the intervals in between)."""
        if old is None:
            return self._count("UPDATE jc_schedule SET fired_until = ? WHERE job = ? AND "
                               "fired_until IS NULL", (new, job)) == 1
        return self._count("UPDATE jc_schedule SET fired_until = ? WHERE job = ? AND "
                           "fired_until = ?", (new, job, old)) == 1

    def set_missed_alerted(self, job: str, marker: str) -> None:
        self._exec("UPDATE jc_schedule SET missed_alerted = ? WHERE job = ?", (marker, job))

    def finish_run(self, run_id: str, status: str, *, error: str | None = None,
                   rows_extracted: int | None = None, rows_staged: int | None = None,
                   rows_rejected: int | None = None, only_from: str | None = None) -> bool:
        """Set a run's outcome; with ``only_from``, only if its status is still that one (a
        run the sweeper declared lost meanwhile stays lost). True if the row changed."""
        sets, args = ["status = ?", "error = ?"], [status, self._text(error)]
        for name, value in (("rows_extracted", rows_extracted), ("rows_staged", rows_staged),
                            ("rows_rejected", rows_rejected)):
            if value is not None:
                sets.append(f"{name} = ?")
                args.append(value)
        if status != RunStatus.STAGED:
            sets.append("finished_at = ?")
            args.append(now())
        where = "id = ?" + (" AND status = ?" if only_from else "")
        return self._count(f"UPDATE jc_runs SET {', '.join(sets)} WHERE {where}",
                           (*args, run_id, *([only_from] if only_from else []))) == 1

    def run(self, run_id: str) -> dict[str, Any]:
        rows = self._rows("SELECT * FROM jc_runs WHERE id = ?", (run_id,))
        return _run_out(rows[0])

    def history(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        where, args = ("WHERE job = ?", [job]) if job else ("", [])
        rows = self._rows(
            f"SELECT * FROM jc_runs {where} ORDER BY started_at DESC, id DESC LIMIT ?",
            (*args, limit),
        )
        return [_run_out(r) for r in rows]

    def last_runs(self) -> dict[str, dict[str, Any]]:
        """The newest run of every job."""
        rows = self._rows(
            "SELECT r.* FROM jc_runs r JOIN (SELECT job, MAX(id) AS id FROM jc_runs GROUP BY job)"
            " m ON m.id = r.id"
        )
        return {r["job"]: _run_out(r) for r in rows}

    # ---------------------------------------------------------------- state
    def get_state(self, job: str) -> dict[str, Any]:
        rows = self._rows("SELECT state FROM jc_job_state WHERE job = ?", (job,))
        return json.loads(rows[0]["state"]) if rows else {}

    def save_state(self, job: str, state: dict[str, Any]) -> None:
        try:
            text = json.dumps(state, sort_keys=True, default=str)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"job {job}: run.state must be JSON-able: {e}") from None
        self._exec(
            "INSERT INTO jc_job_state (job, state, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (job) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (job, text, now()),
        )

    # ---------------------------------------------------------------- batches
    def add_batch(self, run_id: str, job: str, interval: Interval, table: str,
                  manifest_key: str, rows: int, key_counts: dict[str, int],
                  replaces: bool = True, key: tuple[str, ...] | None = None) -> str:
        batch_id = f"{run_id}.{table}"
        self._exec(
            "INSERT INTO jc_batches (id, run_id, job, table_name, interval_start, interval_end,"
            " manifest_key, rows, key_counts, status, created_at, replaces, merge_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (batch_id, run_id, job, table, fmt(interval.start), fmt(interval.end), manifest_key,
             rows, json.dumps(key_counts, sort_keys=True), BatchStatus.PENDING, now(),
             int(replaces), json.dumps(list(key)) if key else None),
        )
        return batch_id

    # ---------------------------------------------------------------- load retries
    def table_failed(self, table: str, error: str) -> None:
        self._exec(
            "INSERT INTO jc_table_state (table_name, failures, last_failure_at, last_error) "
            "VALUES (?, 1, ?, ?) ON CONFLICT (table_name) DO UPDATE SET failures = "
            "jc_table_state.failures + 1, last_failure_at = excluded.last_failure_at, "
            "last_error = excluded.last_error", (table, now(), self._text(error, 2000)))

    def table_loaded(self, table: str) -> None:
        self._exec("DELETE FROM jc_table_state WHERE table_name = ?", (table,))

    def retry_at(self, table: str, base: float = 30.0, cap: float = 900.0
                 ) -> tuple[datetime, int, str] | None:
        """After failed loads of ``table``: when to try again (exponential backoff from
        ``base`` seconds, at most ``cap``), how many failures, the last error."""
        rows = self._rows("SELECT failures, last_failure_at, last_error FROM jc_table_state "
                          "WHERE table_name = ?", (table,))
        if not rows:
            return None
        r = rows[0]
        delay = min(cap, base * 2 ** (r["failures"] - 1))
        return (parse_fmt(r["last_failure_at"]) + timedelta(seconds=delay), r["failures"],
                r["last_error"] or "")

    def last_load(self, table: str) -> datetime | None:
        """When a batch of ``table`` was last merged."""
        rows = self._rows("SELECT MAX(loaded_at) AS at FROM jc_batches WHERE table_name = ? AND "
                          "status = ?", (table, BatchStatus.LOADED))
        return parse_fmt(rows[0]["at"]) if rows and rows[0]["at"] else None

    def pending_batches(self, table: str | None = None) -> list[Batch]:
        where, args = ("AND table_name = ?", [table]) if table else ("", [])
        rows = self._rows(
            f"SELECT * FROM jc_batches WHERE status = ? {where} "
            "ORDER BY table_name, interval_start, id",
            (BatchStatus.PENDING, *args),
        )
        return [
            Batch(r["id"], r["run_id"], r["job"], r["table_name"],
                  Interval(parse_fmt(r["interval_start"]), parse_fmt(r["interval_end"])),
                  r["manifest_key"], r["rows"], json.loads(r["key_counts"]),
                  r["replaces"] is None or bool(r["replaces"]),
                  tuple(json.loads(r["merge_key"])) if r["merge_key"] else None)
            for r in rows
        ]

    def batch_corrupt(self, batch_id: str, error: str) -> bool:
        """Quarantine a pending batch (``corrupt``, with why) and roll its run up; False if it
        was no longer pending (another loader got there first: it reports, not us)."""
        at = now()

        def body(cur: _Cursor) -> bool:
            cur.execute("UPDATE jc_batches SET status = ?, error = ?, loaded_at = ? WHERE id = ? "
                        "AND status = ?", (BatchStatus.CORRUPT, error[:2000], at, batch_id,
                                           BatchStatus.PENDING))
            if cur.rowcount != 1:
                return False
            self._roll_up(cur, batch_id.rsplit(".", 1)[0], at)
            return True

        return self.atomic(body)

    def corrupt_batches(self, table: str | None = None) -> list[dict[str, Any]]:
        """Quarantined batches (not yet superseded by a rerun), oldest interval first."""
        where, args = ("AND table_name = ?", [table]) if table else ("", [])
        rows = self._rows(f"SELECT * FROM jc_batches WHERE status = ? {where} "
                          "ORDER BY table_name, interval_start, id",
                          (BatchStatus.CORRUPT, *args))
        return [{"id": r["id"], "run_id": r["run_id"], "job": r["job"],
                 "table": r["table_name"], "start": r["interval_start"],
                 "end": r["interval_end"], "rows": r["rows"],
                 "manifest_key": r["manifest_key"], "error": r["error"]} for r in rows]

    def batch_statuses(self, run_id: str) -> set[str]:
        """The statuses of a run's batches (empty: the run staged none, or is unknown)."""
        return {r["status"] for r in self._rows("SELECT status FROM jc_batches WHERE run_id = ?",
                                                (run_id,))}

    def batches_done(self, outcomes: dict[str, tuple]) -> None:
        """Record the load outcome per batch and roll the counts up into the runs.

        ``outcomes``: batch id -> (status, rows loaded, rows rejected, dropped keys[, rows
        replaced by a later line of the batch with the same key; 0 if left out]).
        """
        at = now()

        def body(cur: _Cursor) -> None:
            replaced: set[str] = set()  # runs of quarantined batches superseded here
            # batches in id order, then the runs (the module's lock order)
            for bid, (status, loaded, rejected, dropped, *more) in sorted(outcomes.items()):
                cur.execute(
                    "UPDATE jc_batches SET status = ?, loaded_at = ?, rows_loaded = ?, "
                    "rows_rejected = ?, dropped_keys = ?, rows_replaced = ? WHERE id = ?",
                    (status, at, loaded, rejected, json.dumps(dropped, sort_keys=True),
                     more[0] if more else 0, bid),
                )
                if status == BatchStatus.LOADED:
                    # Older quarantined batches of the interval: this rerun replaces them.
                    cur.execute(
                        "SELECT o.id FROM jc_batches o JOIN jc_batches b ON o.job = b.job AND "
                        "o.table_name = b.table_name AND o.interval_start = b.interval_start "
                        "AND o.interval_end = b.interval_end AND o.id < b.id WHERE b.id = ? "
                        "AND o.status = ? AND (o.replaces IS NULL OR o.replaces <> 0) "
                        "AND substr(b.manifest_key, 1, ?) <> ? "
                        "AND (b.replaces IS NULL OR b.replaces <> 0)",
                        (bid, BatchStatus.CORRUPT, len(REPLAY_PREFIX), REPLAY_PREFIX))
                    for (old,) in cur.fetchall():
                        cur.execute("UPDATE jc_batches SET status = ? WHERE id = ?",
                                    (BatchStatus.SUPERSEDED, old))
                        replaced.add(old.rsplit(".", 1)[0])
                    # A rerun's dead letters replace those of older runs of the same interval:
                    # the same bad record is listed once, from the newest extraction.
                    cur.execute(
                        "UPDATE jc_deadletters SET status = 'superseded' WHERE status = 'open' "
                        "AND batch_id IN (SELECT o.id FROM jc_batches o JOIN jc_batches b ON "
                        "o.job = b.job AND o.table_name = b.table_name AND o.interval_start = "
                        "b.interval_start AND o.interval_end = b.interval_end AND o.id < b.id "
                        "WHERE b.id = ? AND substr(b.manifest_key, 1, ?) <> ? "
                        "AND (b.replaces IS NULL OR b.replaces <> 0))",
                        (bid, len(REPLAY_PREFIX), REPLAY_PREFIX))
            run_ids = {bid.rsplit(".", 1)[0] for bid in outcomes} | replaced
            for run_id in sorted(run_ids):
                self._roll_up(cur, run_id, at)

        self.atomic(body)

    def _roll_up(self, cur: _Cursor, run_id: str, at: str) -> None:
        cur.execute("SELECT status, rows_loaded, rows_rejected, dropped_keys, rows_replaced, "
                    "error FROM jc_batches WHERE run_id = ?", (run_id,))
        batches = cur.fetchall()
        cur.execute("SELECT COUNT(*) FROM jc_deadletters WHERE run_id = ? AND phase = 'stage'",
                    (run_id,))
        stage_rejects = cur.fetchone()[0]
        loaded = sum(b[1] for b in batches)
        rejected = stage_rejects + sum(b[2] for b in batches)
        replaced = sum(b[4] for b in batches)
        dropped: dict[str, int] = {}
        for b in batches:
            for k, n in json.loads(b[3] or "{}").items():
                dropped[k] = dropped.get(k, 0) + n
        statuses = {b[0] for b in batches}
        # A quarantined batch (corrupt, or corrupt and since superseded) says why in its error.
        damaged = sorted(b[5] for b in batches if b[5])
        error = damaged[0] if damaged else None
        if BatchStatus.PENDING in statuses:
            if BatchStatus.CORRUPT in statuses:  # staged still; shown as soon as known
                cur.execute("UPDATE jc_runs SET error = ? WHERE id = ? AND status = ?",
                            (error, run_id, RunStatus.STAGED))
            return
        if BatchStatus.CORRUPT in statuses:
            status = RunStatus.FAILED
        elif statuses == {BatchStatus.SUPERSEDED} or damaged:
            status = RunStatus.SUPERSEDED
        else:
            status = RunStatus.SUCCESS
        # A run failed by a quarantined batch is rolled up again once a rerun supersedes it.
        cur.execute(
            "UPDATE jc_runs SET status = ?, rows_loaded = ?, rows_rejected = ?, dropped_keys = ?,"
            " rows_replaced = ?, finished_at = ?, error = ? WHERE id = ?"
            " AND (status = ? OR (status = ? AND ?))",
            (status, loaded, rejected, json.dumps(dropped, sort_keys=True), replaced, at, error,
             run_id, RunStatus.STAGED, RunStatus.FAILED, bool(damaged)),
        )

    # ---------------------------------------------------------------- dead letters
    def add_deadletters(self, letters: Iterable[DeadLetter]) -> None:
        at, letters = now(), list(letters)

        def body(cur: _Cursor) -> None:
            for d in letters:
                cur.execute(
                    "INSERT INTO jc_deadletters (batch_id, phase, line, table_name, job, run_id,"
                    " reason, record, object_key, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (batch_id, phase, line) DO UPDATE SET reason = excluded.reason",
                    (d.batch_id, d.phase, d.line, d.table, d.job, d.run_id,
                     self._text(d.reason, 2000), d.record, d.object_key, at),
                )

        self.atomic(body)

    def mark_replayed(self, letters: Iterable[dict[str, Any]]) -> None:
        """Take dead letters off the open list: their records are in a replay batch now."""
        letters = sorted(letters, key=lambda d: (d["batch_id"], d["phase"], d["line"]))

        def body(cur: _Cursor) -> None:
            for d in letters:
                cur.execute("UPDATE jc_deadletters SET status = 'replayed' WHERE batch_id = ? AND "
                            "phase = ? AND line = ?", (d["batch_id"], d["phase"], d["line"]))

        self.atomic(body)

    def deadletters(self, table: str | None = None, run_id: str | None = None,
                    limit: int | None = 1000) -> list[dict[str, Any]]:
        """Open dead letters (not superseded by a newer run of the same interval, not replayed),
        newest first."""
        where, args = ["status = 'open'"], []
        for column, value in (("table_name", table), ("run_id", run_id)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self._rows(
            f"SELECT * FROM jc_deadletters WHERE {' AND '.join(where)} "
            "ORDER BY created_at DESC, batch_id, line LIMIT ?",
            (*args, -1 if limit is None and self.kind == "sqlite" else limit),
        )
        return [
            {"table": r["table_name"], "job": r["job"], "run_id": r["run_id"],
             "batch_id": r["batch_id"], "line": r["line"], "phase": r["phase"],
             "reason": r["reason"], "record": r["record"], "object_key": r["object_key"],
             "created_at": r["created_at"]}
            for r in rows
        ]


class _Cursor:
    """A cursor that takes ``?`` placeholders on both backends (driver errors mapped by
    ``errors``, the ledger's ``_errors``)."""

    def __init__(self, cur: Any, translate: Any, errors: Any = None):
        self._cur, self._translate, self._errors = cur, translate, errors or nullcontext

    def execute(self, sql: str, args: Iterable[Any] = ()) -> None:
        with self._errors():
            self._cur.execute(self._translate(sql), tuple(args))

    def fetchall(self) -> list[tuple]:
        return self._cur.fetchall()

    def fetchone(self) -> tuple:
        return self._cur.fetchone()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


# SQLite's primary result codes for a ledger that cannot be used now (others are SQL errors):
# BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN.
_SQLITE_UNAVAILABLE = {5, 6, 8, 10, 13, 14}


def _missing_table(e: BaseException) -> bool:
    """``jc_meta`` does not exist yet (a new ledger, or one from before schema versions)."""
    return getattr(e, "pgcode", None) == "42P01" or (
        isinstance(e, sqlite3.OperationalError) and str(e).startswith("no such table"))


def _first(e: BaseException) -> str:
    """The first line of a driver's message (psycopg2's go on with hints), or its type."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _run_out(r: dict[str, Any]) -> dict[str, Any]:
    """A run as the CLI and ``history --json`` show it."""
    return {
        "run_id": r["id"], "job": r["job"], "start": r["interval_start"],
        "end": r["interval_end"], "status": r["status"],
        "rows_extracted": r["rows_extracted"], "rows_staged": r["rows_staged"],
        "rows_loaded": r["rows_loaded"], "rows_rejected": r["rows_rejected"],
        "rows_replaced": r.get("rows_replaced") or 0,
        "dropped_keys": json.loads(r["dropped_keys"] or "{}"),
        "started_at": r["started_at"], "finished_at": r["finished_at"], "error": r["error"],
        "attempt": r.get("attempt"),
    }
