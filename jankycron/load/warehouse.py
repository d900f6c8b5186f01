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

Every backend reads a value's text with its own input function, and those differ (DuckDB casts
``1.5`` into an integer as 2, ``0x1F`` as 31; PostgreSQL rounds a seventh fractional digit of a
timestamp and DuckDB drops it). So before any cast, the text must match the one spelling per
type that every backend reads as the same value (``PATTERNS``, checked in SQL by the validated
paths and in Python by ``load.direct``); anything else is a dead letter on every backend.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
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
    m = re.search(re.escape(FAIL_MARK) + r"(.*?)(?:[\"'](?: to [^\"']*)?)?$", first)
    if m:
        return m.group(1)
    detail = next((x.split(":", 1)[1].strip() for x in lines[1:] if x.startswith("DETAIL:")),
                  None)
    return f"{first} ({detail})" if detail else first


# The one spelling per type that every backend reads as the same value (POSIX-style regexes that
# PostgreSQL, DuckDB's RE2 and Python read alike; [0-9], never \d, which takes other digits).
_YEAR = "([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # 0001-9999
DATE_PATTERN = f"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}$"
# At most 6 fractional digits (more would be rounded by PostgreSQL, cut by DuckDB), hours 00-23
# (no 24:00), seconds 00-59 (no leap second 60, which PostgreSQL moves to the next minute), and
# only Z or +HH[[:]MM] as a zone (zone names and abbreviations depend on each warehouse's tz data).
TIMESTAMP_NAIVE_PATTERN = (f"^{_YEAR}-[0-9]{{2}}-[0-9]{{2}}([T ]([01][0-9]|2[0-3]):[0-5][0-9]"
                           "(:[0-5][0-9](\\.[0-9]{1,6})?)?)?$")
TIMESTAMP_PATTERN = TIMESTAMP_NAIVE_PATTERN[:-1] + "(Z|[-+]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?$"
INTEGER_PATTERN = "^[-+]?[0-9]+$"  # no 1.0, 1e2, 0x1F, 1_000, spaces; the range is the cast's
DECIMAL_PATTERN = "^[-+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)$"  # no exponent, NaN or Infinity
FLOAT_PATTERN = "^[-+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?$"  # finite only
# What PostgreSQL and DuckDB both read as a boolean (not on/off, abbreviations or spaces).
BOOLEAN_PATTERN = "^(true|false|TRUE|FALSE|True|False|t|f|yes|no|y|n|1|0)$"
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

INTEGER_TYPES = ("smallint", "integer", "bigint", "int2", "int4", "int8", "int", "tinyint",
                 "hugeint", "utinyint", "usmallint", "uinteger", "ubigint")
FLOAT_TYPES = ("real", "double precision", "float4", "float8", "double", "float")
TIMESTAMP_TYPES = ("timestamp", "timestamp without time zone")
TIMESTAMPTZ_TYPES = ("timestamptz", "timestamp with time zone")

# A column type's base name -> (the pattern its text must match, what the dead letter says).
PATTERNS: dict[str, tuple[str, str]] = {
    **{t: (INTEGER_PATTERN, "is not an integer (digits, an optional sign)") for t in
       INTEGER_TYPES},
    **{t: (FLOAT_PATTERN, "is not a finite decimal number") for t in FLOAT_TYPES},
    "boolean": (BOOLEAN_PATTERN, "is not a boolean (true, false, t, f, yes, no, y, n, 1, 0)"),
    "date": (DATE_PATTERN, "is not a date (YYYY-MM-DD)"),
    **{t: (TIMESTAMP_PATTERN, "is not an ISO 8601 timestamp with at most 6 fractional digits "
                              "and a Z or +HH:MM offset, if any") for t in
       (*TIMESTAMP_TYPES, *TIMESTAMPTZ_TYPES)},
    "uuid": (UUID_PATTERN, "is not a uuid (8-4-4-4-12 hex digits)"),
}


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


def text_rule(col: Column) -> tuple[str, str] | None:
    """The pattern a value's text must match for ``col`` (``PATTERNS``), and what a dead letter
    says of one that does not; None for string and JSON types and for types whose own input
    function decides (intervals, arrays, enums...)."""
    base = col.base
    if base in ("numeric", "decimal"):
        if col.scale is None:
            return DECIMAL_PATTERN, "is not a decimal number"
        # Digits past the column's scale must all be zeros: 1.50 fits numeric(10,1), 1.55 does
        # not (a cast would round it).
        places = f"\\.[0-9]{{0,{col.scale}}}0*"
        return (f"^[-+]?([0-9]+({places})?|{places})$",
                f"is not a decimal with at most {col.scale} places")
    return PATTERNS.get(base)


_TIMESTAMP_NAIVE = re.compile(TIMESTAMP_NAIVE_PATTERN).fullmatch


def utc_text(value: str) -> str | None:
    """A timestamp that matched ``TIMESTAMP_PATTERN`` as a ``timestamp`` column holds it, as
    the validated paths' ``CAST(text AS timestamptz) AT TIME ZONE 'UTC'`` makes it (sessions are
    in UTC): without an offset as it is, with one converted to UTC; None if Python cannot."""
    if _TIMESTAMP_NAIVE(value):
        return value
    try:
        t = datetime.fromisoformat(value).astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    return t.isoformat(sep=" ")


class _Number(str):
    """A JSON number's text, as the staged line spells it."""


class LineCheck:
    """``PATTERNS`` in Python, for a loader that sends staged lines to a warehouse's own
    converter without per-column SQL (Redshift's COPY): why a staged line would be a dead letter
    on the validated paths (its first column whose text does not match), or None. A line that
    is not a JSON object is left to the warehouse, which refuses it with its own reason.

    ``converted`` says whether a line must be sent as ``line_for`` rewrites it: a timestamp
    with an offset for a ``timestamp`` column, converted to UTC as the other backends store it
    (Redshift would drop the offset)."""

    def __init__(self, columns: list[Column], folds_case: bool = False):
        self.folds_case = folds_case
        key = (lambda name: name.lower()) if folds_case else (lambda name: name)
        self.rules = [(key(c.name), c.name, re.compile(r[0]).fullmatch, r[1])
                      for c in columns if (r := text_rule(c)) is not None]
        self.timestamps = {key(c.name) for c in columns if c.base in TIMESTAMP_TYPES}
        self.converted = False
        self.strings = [(key(c.name), c.name) for c in columns
                        if c.base in Session.STRING_TYPES]

    def __call__(self, line: bytes) -> str | None:
        self.converted = False
        try:
            doc = json.loads(line, parse_int=_Number, parse_float=_Number)
        except (ValueError, RecursionError):
            return None
        if type(doc) is not dict:
            return None
        if self.folds_case:
            doc = {k.lower(): v for k, v in doc.items()}
        for key, name, match, what in self.rules:
            value = doc.get(key)
            if value is None:
                continue
            if type(value) is bool:
                value = "true" if value else "false"
            elif not isinstance(value, str):
                return f"column {name}: {what}: a JSON {type(value).__name__}"
            if not match(value):
                return f"column {name}: {what}: {value[:100]}"
            if key in self.timestamps and type(value) is str:
                utc = utc_text(value)
                if utc is None:
                    return f"column {name}: {value[:100]} is out of range"
                self.converted |= utc != value
        for key, name in self.strings:
            value = doc.get(key)
            if isinstance(value, str) and "\x00" in value:
                return f"column {name}: a NUL character in a string"
        return None

    def line_for(self, line: bytes) -> bytes:
        """The line with its timestamps for ``timestamp`` columns in UTC, everything else as
        staging wrote it (the same encoder settings: compact, not ASCII-escaped)."""
        doc = json.loads(line)
        for k, value in doc.items():
            if (k.lower() if self.folds_case else k) in self.timestamps and \
                    type(value) is str:
                doc[k] = utc_text(value)
        return (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Loaded:
    """A batch's counts as the merge records them in ``jankycron_loads`` (and as read back
    from there). ``rows_loaded``: rows of this batch that land; ``rows_replaced``: lines a
    later line of the same batch with the same key replaced (set by the merge, which takes
    them off ``rows_loaded``; ``jankycron_loads`` keeps no column for it: it is the batch's
    staged lines less the other two)."""

    batch_id: str
    rows_loaded: int
    rows_rejected: int
    rows_replaced: int = 0


def count_replaced(done: list[Loaded], replaced: Iterable[tuple[Hashable, Hashable]],
                   batch_of: Callable[[Hashable], int] | None = None) -> None:
    """Take the lines that a later line *of the same batch* with the same key replaces off
    each batch's ``rows_loaded`` into its ``rows_replaced``.

    ``replaced``: what the dedupe removed, as (line, the line with its key that wins), in any
    order; lines compare in load order. A line that a *later batch's* line replaces stays
    loaded: it is what its own run held. So among the lines with one key, a line counts as
    replaced when the next one is in its batch. ``batch_of``: a line's index in ``done``;
    by default lines are numbers across the batches in order, each batch holding its
    ``rows_loaded + rows_rejected`` lines (as the loader numbers them)."""
    if len(done) == 1:  # the usual load (a run's own batch): every line removed counts
        replaced = list(replaced)
        done[0].rows_replaced = len(replaced)
        done[0].rows_loaded -= len(replaced)
        return
    if batch_of is None:
        starts, n = [], 1
        for d in done:
            starts.append(n)
            n += d.rows_loaded + d.rows_rejected

        def batch_of(line: Hashable) -> int:
            return bisect.bisect_right(starts, line) - 1

    groups: dict[Hashable, list[Hashable]] = {}
    for line, last in replaced:
        groups.setdefault(last, []).append(line)
    counts: Counter[int] = Counter()
    for last, lines in groups.items():
        members = [batch_of(x) for x in sorted(lines)] + [batch_of(last)]
        counts.update(a for a, b in itertools.pairwise(members) if a == b)
    for i, d in enumerate(done):
        d.rows_replaced = counts[i]
        d.rows_loaded -= counts[i]


class Session:
    """One loader connection working on one table. Subclasses implement the I/O."""

    STRING_TYPES = ("character varying", "varchar", "character", "char", "text", "bpchar")
    DATE_PATTERN = DATE_PATTERN

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
        rule = text_rule(col)
        if rule is None:  # intervals, arrays, enums, inet...: the type's input function decides
            return f"CAST({text} AS {col.type_sql})"
        pattern, what = rule
        ok = self.regex_sql(text, pattern)
        why = fail(f"{quote_literal(what + ': ')} || {text}", col)
        if base in TIMESTAMP_TYPES:
            cast = self.timestamp_utc_sql(text)
        elif base in FLOAT_TYPES:
            cast = self.float_sql(text, col)
        else:
            cast = f"CAST({text} AS {col.type_sql})"
        return f"CASE WHEN {text} IS NULL THEN NULL WHEN {ok} THEN {cast} ELSE {why} END"

    def float_sql(self, text: str, col: Column) -> str:
        """A float column's cast (a backend that reads an out-of-range value as infinity
        refuses it here)."""
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
        return [
            # The same key twice in the load: the later line (newer interval, later yield) wins.
            # One hash aggregate finds the repeated keys; only their rows are touched. What it
            # returns is counted (``count_replaced``).
            f"DELETE FROM stage USING {self._repeated_sql()} WHERE {self._same_key_sql()} AND "
            "stage.jc_line < d.jc_last RETURNING stage.jc_line, d.jc_last",
            f"DELETE FROM {t} USING stage WHERE {on}",
            f"INSERT INTO {t} ({cols}) SELECT {cols} FROM stage",
        ]

    def _repeated_sql(self) -> str:
        part = ", ".join(quote_ident(k) for k in self.key)
        return (f"(SELECT {part}, MAX(jc_line) AS jc_last FROM stage GROUP BY {part} "
                "HAVING COUNT(*) > 1) d")

    def _same_key_sql(self) -> str:
        return " AND ".join(f"stage.{quote_ident(k)} = d.{quote_ident(k)}" for k in self.key)

    def replaced_sql(self) -> str:
        """(line, the line with its key that wins) for every line of ``stage`` a later line
        with the same key replaces: what the dedupe removes."""
        return (f"SELECT stage.jc_line, d.jc_last FROM stage JOIN {self._repeated_sql()} ON "
                f"{self._same_key_sql()} WHERE stage.jc_line < d.jc_last")

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
        """Merge ``stage`` into the target and record ``done`` in one transaction; the
        lines the dedupe removed are counted into ``done`` first (``count_replaced``).

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

