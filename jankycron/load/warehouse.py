"""What every warehouse backend provides to the loader core, and the SQL they share.

A load works on two session-local tables:

- ``raw``: one row per staged NDJSON line, numbered ``jc_line`` in manifest order;
- ``stage``: the target's columns (with its NOT NULL and CHECK rules, plus NOT NULL on the merge
  key) filled by *validation*: ``INSERT INTO stage SELECT jc_line, <typed column expressions>
  FROM raw WHERE jc_line BETWEEN lo AND hi``. A range that fails is split by the core until
  each bad line is isolated; the good ones stay in ``stage``.

The merge then runs in one transaction: lock the target against other merges, delete the rows
whose keys are in ``stage``, insert the newest ``stage`` row per key, and record the batch ids in
``jankycron_loads`` (so a loader that crashed after COMMIT knows, on restart, what is done).

Column expressions are strict on purpose: a decimal with more places than the column holds, a
timestamp in a DATE column, or an over-long string is an error (a dead letter), never rounded,
truncated or shifted. Timestamps with an offset are converted to UTC for ``timestamp`` columns.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from ..errors import CorruptBatch
from ..ledger import Batch
from ..staging import Part, of_batch, open_part, read_parts
from ..store import Store

log = logging.getLogger(__name__)

LOADS_TABLE = "jankycron_loads"
# What the warehouse has merged, written in the merge's own transaction.
LOADS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {LOADS_TABLE} (batch_id varchar(200) PRIMARY KEY,"
    " table_name varchar(127) NOT NULL, rows_loaded bigint NOT NULL,"
    " rows_rejected bigint NOT NULL, dropped_keys varchar(4000), loaded_at timestamp NOT NULL)"
)
FAIL_MARK = "jankycron: "


def clean_reason(message: str) -> str:
    """A warehouse error as one line (with PostgreSQL's DETAIL line, if any); our own
    strictness checks read as plain sentences."""
    lines = message.strip().splitlines() or ["unknown error"]
    first = lines[0]
    m = re.search(re.escape(FAIL_MARK) + r"(.*?)[\"'](?: to [^\"']*)?$", first)
    if m:
        return m.group(1)
    detail = next((x.split(":", 1)[1].strip() for x in lines[1:] if x.startswith("DETAIL:")),
                  None)
    return f"{first} ({detail})" if detail else first


@dataclass(frozen=True)
class Column:
    name: str
    type_sql: str  # the type as the warehouse prints it: "numeric(10,2)", "VARCHAR", ...
    nullable: bool
    max_length: int | None = None  # characters (PostgreSQL) / bytes (Redshift); None: unbounded

    @property
    def base(self) -> str:
        return re.sub(r"\(.*\)", "", self.type_sql).strip().lower()

    @property
    def scale(self) -> int | None:
        m = re.match(r"^(?:numeric|decimal)\s*\(\s*\d+\s*,\s*(\d+)\s*\)", self.type_sql.lower())
        return int(m.group(1)) if m else None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Loaded:
    """A batch the warehouse already has (from ``jankycron_loads``)."""

    batch_id: str
    rows_loaded: int
    rows_rejected: int


class Session:
    """One loader connection working on one table. Subclasses implement the I/O."""

    STRING_TYPES = ("character varying", "varchar", "character", "char", "text", "bpchar")
    DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"

    def __init__(self, table: str, columns: list[Column], key: tuple[str, ...]):
        self.table, self.columns, self.key = table, columns, key

    @classmethod
    def sql_only(cls, table: str, columns: list[Column], key: tuple[str, ...]) -> Session:
        """An instance for generating this backend's SQL, with no connection (for plans)."""
        obj = cls.__new__(cls)
        Session.__init__(obj, table, columns, key)
        return obj

    def plan_sql(self, lines: int) -> list[str]:
        """The statements a load of ``lines`` staged lines runs, if none is refused."""
        return [f"INSERT INTO stage {self.select_sql(1, max(lines, 1))}", "BEGIN",
                f"LOCK TABLE {quote_ident(self.table)}", *self.merge_sql(),
                f"INSERT INTO {LOADS_TABLE} (batch_id, ...) VALUES (...)", "COMMIT"]

    # ---- SQL shared by the backends ------------------------------------------------------
    def field_sql(self, col: Column) -> str:
        """The column's field of the line's JSON document ``j``, as text."""
        return f"(j ->> {quote_literal(col.name)})"

    def rows_sql(self, where: str) -> str:
        """The raw lines matching ``where``, with their document as ``j``. OFFSET 0 keeps the
        subquery from being inlined, so each document is parsed once, not once per column."""
        return f"SELECT jc_line, {self.doc_sql} AS j FROM raw WHERE {where} OFFSET 0"

    doc_sql = "doc"

    def value_sql(self, col: Column) -> str:
        """The typed, strict expression for ``col`` over a row of ``rows_sql``."""
        text = self.field_sql(col)
        base = col.base
        fail = self.fail_sql
        if base in self.STRING_TYPES:
            return text  # no cast: an explicit cast to varchar(n) would truncate silently
        if base in ("json", "jsonb", "super"):
            return self.json_sql(col)
        if base in ("numeric", "decimal") and col.scale is not None:
            # Digits past the column's scale must all be zeros: 1.50 fits numeric(10,1), 1.55
            # does not (a cast would round it).
            exact = self.regex_sql(text, rf"^[-+]?[0-9]*(\.[0-9]{{0,{col.scale}}}0*)?$")
            why = fail(f"'is not a decimal with at most {col.scale} places: ' || {text}", col)
            return (f"CASE WHEN {text} IS NULL THEN NULL WHEN {exact} "
                    f"THEN CAST({text} AS {col.type_sql}) ELSE {why} END")
        if base == "date":
            is_date = self.regex_sql(text, self.DATE_PATTERN)
            why = fail(f"'is not a date (YYYY-MM-DD): ' || {text}", col)
            return (f"CASE WHEN {text} IS NULL THEN NULL WHEN {is_date} "
                    f"THEN CAST({text} AS DATE) ELSE {why} END")
        if base in ("timestamp", "timestamp without time zone"):
            return self.timestamp_utc_sql(text)
        return f"CAST({text} AS {col.type_sql})"

    def fail_sql(self, message_sql: str, col: Column) -> str:
        """An expression that raises when evaluated, and only then: the cast of a message to
        the column's type fails with the message in the warehouse's error text."""
        return f"CAST({quote_literal(FAIL_MARK)} || {message_sql} AS {col.type_sql})"

    def regex_sql(self, text: str, pattern: str) -> str:
        raise NotImplementedError

    def json_sql(self, col: Column) -> str:
        raise NotImplementedError

    def timestamp_utc_sql(self, text: str) -> str:
        raise NotImplementedError

    def select_sql(self, lo: int, hi: int) -> str:
        values = ", ".join(self.value_sql(c) for c in self.columns)
        where = f"jc_line BETWEEN {int(lo)} AND {int(hi)}"
        return f"SELECT jc_line, {values} FROM ({self.rows_sql(where)}) r"

    def merge_sql(self) -> list[str]:
        t = quote_ident(self.table)
        cols = ", ".join(quote_ident(c.name) for c in self.columns)
        on = " AND ".join(f"{t}.{quote_ident(k)} = stage.{quote_ident(k)}" for k in self.key)
        part = ", ".join(quote_ident(k) for k in self.key)
        dup = " AND ".join(f"stage.{quote_ident(k)} = d.{quote_ident(k)}" for k in self.key)
        return [
            # The same key twice in the load: the later line (newer interval, later yield) wins.
            # One hash aggregate finds the repeated keys; only their rows are touched.
            f"DELETE FROM stage USING (SELECT {part}, MAX(jc_line) AS jc_last FROM stage "
            f"GROUP BY {part} HAVING COUNT(*) > 1) d WHERE {dup} AND stage.jc_line < d.jc_last",
            f"DELETE FROM {t} USING stage WHERE {on}",
            f"INSERT INTO {t} ({cols}) SELECT {cols} FROM stage",
        ]

    # ---- filling: staged lines -> validated stage -----------------------------------------
    def fill(self, store: Store, batches: list[Batch], result: Any
             ) -> tuple[dict[str, tuple[int, int]], list[tuple[int, str]]]:
        """Stream the batches' lines into ``raw`` and validate them into ``stage``.

        Returns each batch's lines (numbered across the batches, in order) and the
        ``(line, reason)`` of every line the warehouse refused; ``result.validations`` counts
        the validations."""
        clock = time.monotonic()
        ranges: dict[str, tuple[int, int]] = {}
        n = 0
        for b in batches:
            count = 0
            with of_batch(b.id):
                for p in batch_parts(store, b):
                    with open_part(store, p) as part:
                        count += self.add_lines(part)
                check_count(b, count)
            ranges[b.id] = (n + 1, n + count)
            n += count
        log.info("%s: read %d staged lines in %.2fs", self.table, n, time.monotonic() - clock)
        clock = time.monotonic()
        bad = isolate(self, 1, n, result) if n else []
        log.info("%s: %d validation(s) in %.2fs", self.table, result.validations,
                 time.monotonic() - clock)
        return ranges, bad

    # ---- what each backend implements ----------------------------------------------------
    def add_lines(self, stream: IO[bytes]) -> int:
        """Append the NDJSON lines of a (decompressed) stream to ``raw``; returns how many."""
        raise NotImplementedError

    def attempt(self, sql: str, fetch: bool = False) -> tuple[str | None, Any]:
        """Run one statement in its own transaction. A data error (a record that does not
        fit) is returned as its reason, not raised; with ``fetch``, the first value is too."""
        raise NotImplementedError

    def index_lines(self) -> None:
        """Make ``jc_line`` ranges cheap to find before bisection starts (a no-op where the
        backend finds them cheaply anyway)."""

    def validate(self, lo: int, hi: int) -> str | None:
        """Insert raw lines lo..hi into ``stage``; on a data error keep nothing, return why."""
        return self.attempt(f"INSERT INTO stage {self.select_sql(lo, hi)}")[0]

    def probe(self, n: int) -> str | None:
        """Why line ``n`` fails, naming the column, or None if no single column explains it."""
        error, _ = self.attempt(f"SELECT j IS NULL FROM ({self.rows_sql(f'jc_line = {int(n)}')})"
                                " r", fetch=True)
        if error:
            return f"the warehouse cannot read the record: {error}"
        for col in self.columns:
            error, value = self.probe_value(n, col)
            if error:
                return f"column {col.name}: {error}"
            if value is None and (not col.nullable or col.name in self.key):
                what = "merge key" if col.name in self.key else "NOT NULL column"
                return f"column {col.name}: missing or null, but it is a {what}"
            if isinstance(value, str) and col.max_length and len(value) > col.max_length:
                return (f"column {col.name}: value of {len(value)} characters does not fit "
                        f"{col.type_sql}")
        return None

    def probe_value(self, n: int, col: Column) -> tuple[str | None, Any]:
        return self.attempt(f"SELECT {self.value_sql(col)} FROM "
                            f"({self.rows_sql(f'jc_line = {int(n)}')}) r", fetch=True)

    def raw_lines(self, ns: Iterable[int]) -> dict[int, str]:
        raise NotImplementedError

    def load_direct(self, store: Store, batches: list[Batch], done: list[Loaded],
                    dropped_keys: str, before_commit: Callable[[], None] | None = None) -> bool:
        """Load the batches straight into the table, without ``raw`` and ``stage`` (PostgreSQL:
        ``load.direct``), recording ``done`` as ``merge`` does. False, with nothing changed,
        where the batches must load the validated way (``fill``, then ``merge``)."""
        return False

    def already_loaded(self, batch_ids: list[str]) -> list[Loaded]:
        raise NotImplementedError

    def merge(self, done: list[Loaded], dropped_keys: str,
              before_commit: Callable[[], None] | None = None) -> None:
        """Merge ``stage`` into the target and record ``done`` in one transaction.

        Raises ``AlreadyLoaded`` (rolling back) if another loader recorded any of them first;
        ``before_commit`` (the table lock's ownership check) may raise to roll back too.
        """
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def batch_parts(store: Store, batch: Batch) -> list[Part]:
    """The batch's parts from its manifest, whose recorded line counts must add up to the
    ledger's count of the batch; ``CorruptBatch`` naming the batch otherwise."""
    with of_batch(batch.id):
        parts = read_parts(store, batch.manifest_key)
        counts = [p.lines for p in parts]
        if None not in counts and sum(counts) != batch.rows:  # type: ignore[arg-type]
            raise CorruptBatch(batch.manifest_key, f"the manifest lists {sum(counts):,} lines, "
                               f"the ledger recorded {batch.rows:,} staged")
    return parts


def check_count(batch: Batch, lines: int) -> None:
    """The lines read of a batch must be the ledger's count (manifests without line counts)."""
    if lines != batch.rows:
        raise CorruptBatch(batch.manifest_key, f"its parts hold {lines:,} lines, the ledger "
                           f"recorded {batch.rows:,} staged", batch.id)


def isolate(session: Session, lo: int, hi: int, result: Any) -> list[tuple[int, str]]:
    """Validate lines lo..hi into stage; return (line, reason) for every line that fails.

    A failing range is halved until each bad line is isolated: k bad lines among n cost
    O(k log n) validations."""
    result.validations += 1
    error = session.validate(lo, hi)
    if error is None:
        return []
    if lo == hi:
        return [(lo, session.probe(lo) or error)]
    session.index_lines()
    mid = (lo + hi) // 2
    return isolate(session, lo, mid, result) + isolate(session, mid + 1, hi, result)


class AlreadyLoaded(Exception):  # noqa: N818 - internal control flow of the loader
    def __init__(self, loaded: list[Loaded]):
        super().__init__(", ".join(x.batch_id for x in loaded))
        self.loaded = loaded


class Warehouse:
    """A warehouse connection factory: schema look-ups and load sessions."""

    name: str
    # Does COPY lose line order, so that staged lines must carry staging.SEQ_KEY?
    needs_seq = False
    # Does the warehouse fold column names to lower case (JSON keys then match ignoring case)?
    folds_case = False
    # Does a session load straight into the table where it can (``Session.load_direct``), so
    # that staging writes each part's key file (staging.keys_of)?
    direct_loads = False
    # Can a load session validate on another thread while the job extracts (load.Prefill)?
    # Only where every session has its own connection.
    supports_prefill = False

    def columns(self, table: str) -> list[Column]:
        raise NotImplementedError

    session_class: type[Session] = Session

    def session(self, table: str, columns: list[Column], key: tuple[str, ...]) -> Session:
        raise NotImplementedError

    def plan_sql(self, table: str, columns: list[Column], key: tuple[str, ...],
                 lines: int) -> list[str]:
        """The statements a load of ``lines`` staged lines runs (for ``load --dry-run``)."""
        return self.session_class.sql_only(table, columns, key).plan_sql(lines)

    def execute_script(self, sql: str) -> None:
        raise NotImplementedError

    def query(self, sql: str) -> list[tuple]:
        raise NotImplementedError

    def check(self) -> None:
        self.query("SELECT 1")

    def close(self) -> None:
        pass

