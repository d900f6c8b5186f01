"""Amazon Redshift warehouse (psycopg2; ``redshift://user:password@host:5439/db``).

Not run against a live cluster: there is none where this was built. Its steps run end to end
in the tests against a stand-in over PostgreSQL (``tests/redshift_standin.py``), and its SQL is
pinned by golden files. What the stand-in does not prove is listed in the README.

A load of one table:

1. Every part of every pending batch is listed in one manifest. ``COPY ... NOLOAD`` with exactly
   the options of the real COPY validates it (``redshift_sql.copy_sql``).
2. When it fails, ``stl_load_errors`` names the file and line: that line is a dead letter, a
   copy of its part without it is written beside the load, and the rest is validated again (k
   bad lines: k + 1 validations). Where the error names no line, the failing set is halved
   (by parts, then by lines of a part) until each bad line is isolated: O(k log n).
3. One real COPY loads the good lines into a session-local stage table, ``LIKE`` the target.
   Lines whose merge key is NULL become dead letters and leave the stage.
4. One transaction: ``LOCK`` the target, keep the newest line per key (by the ``__jc_seq``
   each staged line carries, since COPY does not keep line order), delete the target's rows
   with those keys, insert, record the batches in ``jankycron_loads``, COMMIT.

Staged objects are checked as well as a loader that never reads them can (the cluster reads
them from S3 itself): before the NOLOAD, a HEAD of every part compares its size and ETag (the
MD5 of a single PUT) with what staging recorded in the manifest; after the real COPY, the lines
in the stage per batch must be the ledger's count less the lines refused. A part read here
(to isolate a bad line) goes through ``staging.open_part`` and its full check. A mismatch is a
``CorruptBatch``: the batch is quarantined before anything is merged.

COPY converts with Redshift's own rules, which read more than the other backends (it truncates
decimal places beyond a column's scale; ``ROUNDEC`` would round; it ignores a timestamp's offset
for a TIMESTAMP column). So before step 1 every staged line is checked in Python against the
spellings the other backends' validation takes (``warehouse.LineCheck``): a line that fails is
a dead letter with the same reason, and a timestamp with an offset is sent converted to UTC.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2

from ..errors import (
    ConfigError,
    CorruptBatch,
    ObjectMissing,
    TableNotFound,
    WarehouseError,
    WarehouseUnavailable,
)
from ..ledger import Batch
from ..staging import SEQ_KEY, Part, of_batch, open_part, read_manifest, split_seq
from ..store import Store
from . import redshift_sql as sql
from .postgres import PostgresWarehouse, SqlSession, _first_line
from .warehouse import LOADS_TABLE, Column, LineCheck, Loaded, Session, batch_parts

STAGE = "jc_stage"
LOADS_DDL = (  # Redshift keeps PRIMARY KEY as information only; the loader's merge checks it.
    f"CREATE TABLE IF NOT EXISTS {LOADS_TABLE} (batch_id VARCHAR(200) NOT NULL,"
    " table_name VARCHAR(127) NOT NULL, rows_loaded BIGINT NOT NULL,"
    " rows_rejected BIGINT NOT NULL, dropped_keys VARCHAR(4000), loaded_at TIMESTAMP NOT NULL,"
    " PRIMARY KEY (batch_id))"
)
# Error texts that mean "try again later" although psycopg2 reports them as plain errors.
_TRANSIENT_TEXT = re.compile(r"Serializable isolation violation|\b1023\b|lock timeout|"
                             r"canceling statement due to statement timeout|"
                             r"Query \(\d+\) cancelled on user's request", re.IGNORECASE)


def dsn_of(url: str) -> str:
    """``redshift://…`` -> the libpq URL psycopg2 connects with."""
    if url.startswith("redshift://"):
        return "postgresql://" + url[len("redshift://"):]
    return url


@dataclass(frozen=True)
class LoadError:
    """The first row ``stl_load_errors`` holds for the last COPY."""

    filename: str
    line: int
    column: str
    code: int
    reason: str

    @property
    def text(self) -> str:
        what = f"column {self.column}: " if self.column else ""
        return f"{what}{self.reason} (Redshift load error {self.code})"


@dataclass(frozen=True)
class Piece:
    """A file a manifest lists: a staged part whole, or some of its lines (``lines``)."""

    part: str  # the staged part's key
    lines: tuple[int, ...] | None = None  # 0-based lines of the part; None: all of them


class RedshiftWarehouse(PostgresWarehouse):
    name = "redshift"
    supports_prefill = False
    direct_loads = False
    needs_seq = True
    folds_case = True

    def __init__(self, url: str, statement_timeout: float, store: Store, iam_role: str | None,
                 region: str | None = None, connect: Callable[..., Any] | None = None):
        if not iam_role:
            raise ConfigError("the Redshift loader needs JANKYCRON_REDSHIFT_IAM_ROLE (a role ARN "
                              "the cluster may assume to read the bucket, or 'default')")
        if not store.url_root.startswith("s3://"):
            raise ConfigError("Redshift COPY reads from S3: JANKYCRON_STORE_URL must be s3://…")
        super().__init__(dsn_of(url), statement_timeout)
        self.store, self.iam_role, self.region = store, iam_role, region
        self._connect = connect or psycopg2.connect
        sql.copy_sql("t", "s3://b/k", iam_role, region=region)  # refuse a bad role/region now

    def connect(self) -> Any:
        with self.errors("connect"):
            conn = self._connect(self.url, connect_timeout=10)
            conn.autocommit = True
            with conn.cursor() as cur:  # Redshift takes these as SET, not startup options
                cur.execute(f"SET statement_timeout TO {self.timeout_ms}")
                cur.execute("SET timezone TO 'UTC'")
        return conn

    def errors(self, what: str):  # type: ignore[override]
        return _RedshiftErrors(self, what)

    def columns(self, table: str) -> list[Column]:
        # The first schema on search_path that has the table, as the loader's statements see it.
        rows = self.query(
            "SELECT column_name, data_type, is_nullable, character_maximum_length,"
            " numeric_precision, numeric_scale FROM information_schema.columns"
            " WHERE table_name = %s AND table_schema = (SELECT n.nspname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s"
            " AND pg_table_is_visible(c.oid) LIMIT 1) ORDER BY ordinal_position",
            (table.lower(), table.lower()),
        )
        if not rows:
            raise TableNotFound(f"table {table.lower()} does not exist on the search_path of "
                                f"{self.shown} (tables are created by migrations: "
                                "`jankycron migrate`)")
        out = []
        for name, dtype, nullable, length, precision, scale in rows:
            type_sql = dtype
            if length:
                type_sql = f"{dtype}({length})"
            elif dtype in ("numeric", "decimal") and precision is not None:
                type_sql = f"{dtype}({precision},{scale or 0})"
            out.append(Column(name, type_sql, nullable == "YES", length))
        return out

    def session(self, table: str, columns: list[Column], key: tuple[str, ...]) -> RedshiftSession:
        return RedshiftSession(self, table, columns, key)

    @property
    def session_class(self) -> type[Session]:
        return RedshiftSession

    def plan_sql(self, table: str, columns: list[Column], key: tuple[str, ...],
                 lines: int) -> list[str]:
        manifest = self.store.url(f"loads/{table.lower()}/<load id>/copy.json")
        copy = sql.copy_sql(STAGE, manifest, self.iam_role, region=self.region)
        names = [c.name for c in columns]
        return [*sql.stage_sql(table, STAGE, SEQ_KEY),
                sql.copy_sql(STAGE, manifest, self.iam_role, region=self.region, noload=True),
                copy, "BEGIN", *sql.merge_sql(table, STAGE, names, key, SEQ_KEY),
                f"INSERT INTO {LOADS_TABLE} (batch_id, ...) VALUES (...)", "COMMIT"]


class _RedshiftErrors:
    """PostgreSQL's error mapping, plus Redshift's transient errors that psycopg2 reports as
    plain errors (serializable isolation violation 1023, WLM cancels)."""

    def __init__(self, wh: RedshiftWarehouse, what: str):
        self.wh, self.what = wh, what
        self.inner = PostgresWarehouse.errors(wh, what)

    def __enter__(self) -> None:
        self.inner.__enter__()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, psycopg2.Error) and not isinstance(exc, psycopg2.OperationalError) \
                and _TRANSIENT_TEXT.search(str(exc)):
            raise WarehouseUnavailable(f"warehouse {self.wh.shown}: {self.what}: "
                                       f"{_first_line(exc)}") from None
        return bool(self.inner.__exit__(kind, exc, tb))


class RedshiftSession(SqlSession):
    def __init__(self, wh: RedshiftWarehouse, table: str, columns: list[Column],
                 key: tuple[str, ...]):
        super().__init__(table.lower(), columns, tuple(k.lower() for k in key))
        self.wh, self.store = wh, wh.store
        self.prefix = f"loads/{self.table}/{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
        self._written: list[str] = []  # objects this load wrote (manifests, part copies)
        self._lines: dict[str, list[bytes]] = {}  # part key -> its lines, once read
        self._checks: dict[str, Part] = {}  # part key -> what staging recorded of it
        self._urls: dict[Piece, str] = {}  # part copies written, by what they hold
        self._raw: dict[int, str] = {}  # line number -> dead-letter record
        self._first: dict[str, tuple[Batch, int]] = {}  # run id -> (batch, its first line)
        self.conn = wh.connect()
        with self.wh.errors("prepare load"), self.conn.cursor() as cur:
            cur.execute(LOADS_DDL)  # a new connection: no stage table yet (never DROP one:
            # without a temp table of that name, it would drop a permanent one)
            for stmt in sql.stage_sql(self.table, STAGE, SEQ_KEY):
                cur.execute(stmt)

    # ---- files ----------------------------------------------------------------------------
    def _part_lines(self, part: str) -> list[bytes]:
        if part not in self._lines:
            with open_part(self.store, self._checks.get(part, part)) as f:
                data = f.read()
            self._lines[part] = data.splitlines(keepends=True)
        return self._lines[part]

    def _put(self, name: str, data: bytes) -> str:
        key = f"{self.prefix}/{name}"
        self.store.put_bytes(key, data)
        self._written.append(key)
        return self.store.url(key)

    def _manifest(self, pieces: list[Piece], name: str) -> str:
        entries = []
        for p in pieces:
            if p.lines is None:
                url = self.store.url(p.part)
            elif p in self._urls:  # each part copy is written once
                url = self._urls[p]
            else:
                lines = self._part_lines(p.part)
                body = b"".join(lines[i] for i in p.lines)
                url = self._urls[p] = self._put(f"{len(self._written):05d}.ndjson.gz",
                                                gzip.compress(body, compresslevel=1, mtime=0))
            entries.append({"url": url, "mandatory": True})
        return self._put(f"{name}-{len(self._written):05d}.json",
                         json.dumps({"entries": entries}, indent=1).encode())

    def _copy(self, pieces: list[Piece], noload: bool) -> LoadError | None:
        """COPY (or NOLOAD) the pieces into the stage; a refused record comes back as the
        first error ``stl_load_errors`` holds for it. Anything else is raised."""
        manifest = self._manifest(pieces, "noload" if noload else "copy")
        statement = sql.copy_sql(STAGE, manifest, self.wh.iam_role, region=self.wh.region,
                                 noload=noload)
        with self.wh.errors("copy"), self.conn.cursor() as cur:
            try:
                cur.execute(statement)
                return None
            except psycopg2.Error as e:
                if isinstance(e, psycopg2.OperationalError) or _TRANSIENT_TEXT.search(str(e)):
                    raise
                cur.execute(sql.load_errors_sql())
                row = cur.fetchone()
                if row is None:  # not a record's fault: S3 access, the manifest, the table
                    raise
        filename, line, column, code, reason = row
        return LoadError((filename or "").strip(), int(line or 0), (column or "").strip(),
                         int(code or 0), (reason or "").strip())

    # ---- isolating bad lines --------------------------------------------------------------
    def _locate(self, error: LoadError, pieces: list[Piece]) -> tuple[int, int] | None:
        """(index in pieces, line of the part) of the line the error names, if it names one.
        ``filename`` is CHAR(256) in ``stl_load_errors``: a longer URL matches by prefix."""
        fn = error.filename
        urls = [self._urls.get(p) or self.store.url(p.part) for p in pieces]
        hits = [i for i, u in enumerate(urls) if u == fn]
        if not hits and len(fn) >= 250:
            hits = [i for i, u in enumerate(urls) if u.startswith(fn)]
        if len(hits) != 1:
            return None
        lines = self._indexes(pieces[hits[0]])
        if not 1 <= error.line <= len(lines):
            return None
        return hits[0], lines[error.line - 1]

    def _bad(self, part: str, index: int, reason: str) -> tuple[int, str]:
        """A refused line as (line number across the load, reason); keeps its record."""
        record, seq = split_seq(self._part_lines(part)[index])
        n = self._number(seq)
        self._raw[n] = record.decode("utf-8", "replace")
        return n, reason

    def _number(self, seq: str | None) -> int:
        try:
            _, run_id, line = (seq or "").rsplit("/", 2)
            batch, first = self._first[run_id]
            return first + int(line) - 1
        except (ValueError, KeyError):
            raise WarehouseError(f"{self.table}: a staged line has no valid {SEQ_KEY} "
                                 f"({seq!r}); was it staged for another warehouse?") from None

    def _isolate(self, pieces: list[Piece], result: Any, bad: list[tuple[int, str]],
                 noload: bool = True) -> list[Piece]:
        """The pieces without their bad lines (appended to ``bad``), validated."""
        while pieces:
            result.validations += 1
            error = self._copy(pieces, noload)
            if error is None:
                return pieces
            hit = self._locate(error, pieces)
            if hit is None:
                break
            pieces = self._drop(pieces, hit, error, bad)
        if not pieces:
            return []
        if len(pieces) > 1:
            halves = [pieces[:len(pieces) // 2], pieces[len(pieces) // 2:]]
        else:
            lines = self._indexes(pieces[0])
            if len(lines) == 1:
                bad.append(self._bad(pieces[0].part, lines[0], error.text))
                return []
            mid = len(lines) // 2
            halves = [[Piece(pieces[0].part, lines[:mid])], [Piece(pieces[0].part, lines[mid:])]]
        return [p for h in halves for p in self._isolate(h, result, bad, noload)]

    def _drop(self, pieces: list[Piece], hit: tuple[int, int], error: LoadError,
              bad: list[tuple[int, str]]) -> list[Piece]:
        """The pieces without the line ``error`` named (``hit``: piece, line), which goes to
        ``bad`` with the warehouse's reason."""
        i, index = hit
        bad.append(self._bad(pieces[i].part, index, error.text))
        left = tuple(x for x in self._indexes(pieces[i]) if x != index)
        return pieces[:i] + ([Piece(pieces[i].part, left)] if left else []) + pieces[i + 1:]

    def _indexes(self, piece: Piece) -> tuple[int, ...]:
        if piece.lines is not None:
            return piece.lines
        return tuple(range(len(self._part_lines(piece.part))))

    def fill(self, store: Store, batches: list[Batch], result: Any
             ) -> tuple[dict[str, tuple[int, int]], list[tuple[int, str]]]:
        ranges: dict[str, tuple[int, int]] = {}
        n = 0
        pieces = []
        for b in batches:
            ranges[b.id] = (n + 1, n + b.rows)
            self._first[b.run_id] = (b, n + 1)
            n += b.rows
            with of_batch(b.id):
                for p in batch_parts(store, b):
                    self._head(p)
                    self._checks[p.key] = p
                    pieces.append(Piece(p.key))
        bad: list[tuple[int, str]] = []
        good = self._isolate(self._checked(pieces, bad), result, bad)
        while good:  # NOLOAD does not check everything a real COPY does
            error = self._copy(good, noload=False)
            if error is None:
                break
            hit = self._locate(error, good)
            if hit is None:
                raise WarehouseError(f"{self.table}: COPY refused what NOLOAD accepted: "
                                     f"{error.text}")
            good = self._drop(good, hit, error, bad)
        self._check_counts(batches, bad)
        bad += self._null_keys()
        return ranges, bad

    def _checked(self, pieces: list[Piece], bad: list[tuple[int, str]]) -> list[Piece]:
        """The pieces without the lines the other backends would refuse before any cast
        (``warehouse.PATTERNS``: COPY's own conversion reads more, e.g. ``" 7"`` or
        ``"1.555"`` into numeric(10,2)), which go to ``bad``; timestamps with an offset for a
        ``timestamp`` column are converted to UTC in the part's copy (Redshift ignores the
        offset). Every part is read once, line by line; only a part with such a line is kept in
        memory (for its copy)."""
        check = LineCheck(self.columns, folds_case=True)
        out = []
        for piece in pieces:
            refused, converted = [], []
            with open_part(self.store, self._checks.get(piece.part, piece.part)) as f:
                for index, line in enumerate(f):
                    why = check(line)
                    if why is not None:
                        refused.append((index, why))
                    elif check.converted:
                        converted.append(index)
            if not refused and not converted:
                out.append(piece)
                continue
            for index, why in refused:
                bad.append(self._bad(piece.part, index, why))
            lines = self._part_lines(piece.part)
            for index in converted:  # the part's copy (written by _manifest) has these
                lines[index] = check.line_for(lines[index])
            dropped = {index for index, _ in refused}
            left = tuple(i for i in self._indexes(piece) if i not in dropped)
            if left:
                out.append(Piece(piece.part, left))
        return out

    def _head(self, part: Part) -> None:
        """A part's size and ETag (HEAD) against what staging recorded (module docstring)."""
        try:
            size, etag = self.store.stat(part.key)  # type: ignore[attr-defined]
        except ObjectMissing:
            raise CorruptBatch(part.key, "the part is missing from the store") from None
        if part.size is not None and size != part.size:
            raise CorruptBatch(part.key, f"it is {size:,} bytes, staging wrote {part.size:,}")
        if part.md5 is not None and "-" not in etag and etag != part.md5:
            raise CorruptBatch(part.key, "its bytes differ from what staging wrote (ETag is "
                               "not the staged MD5)")

    def _check_counts(self, batches: list[Batch], bad: list[tuple[int, str]]) -> None:
        """The lines the COPY put in the stage, per batch: its staged lines less the refused."""
        rows = self._fetch(f"SELECT split_part({sql.ident(SEQ_KEY)}, '/', 2), count(*) "
                           f"FROM {sql.ident(STAGE)} GROUP BY 1")
        got = {run_id: int(n) for run_id, n in rows}
        for b in batches:
            lo, hi = self._first[b.run_id][1], self._first[b.run_id][1] + b.rows - 1
            want = b.rows - sum(1 for n, _ in bad if lo <= n <= hi)
            if got.get(b.run_id, 0) != want:
                raise CorruptBatch(b.manifest_key, f"COPY loaded {got.get(b.run_id, 0):,} "
                                   f"lines, the ledger recorded {b.rows:,} staged "
                                   f"({b.rows - want:,} refused)", b.id)

    def _null_keys(self) -> list[tuple[int, str]]:
        """Lines whose merge key is NULL: dead letters, removed from the stage."""
        s = sql.ident(STAGE)
        where = " OR ".join(f"{s}.{sql.ident(k)} IS NULL" for k in self.key)
        rows = self._fetch(f"SELECT {sql.ident(SEQ_KEY)}, "
                           + ", ".join(f"{sql.ident(k)} IS NULL" for k in self.key)
                           + f" FROM {s} WHERE {where}")
        if not rows:
            return []
        out = []
        by_seq = {seq: [k for k, null in zip(self.key, nulls, strict=True) if null]
                  for seq, *nulls in rows}
        for seq, cols in by_seq.items():
            n = self._number(seq)
            self._raw[n] = self._record_of(seq)
            out.append((n, f"column {cols[0]}: missing or null, but it is a merge key"))
        with self.wh.errors("drop null keys"), self.conn.cursor() as cur:
            cur.execute(f"DELETE FROM {s} WHERE {where}")
        return out

    def _record_of(self, seq: str) -> str:
        run_id = seq.rsplit("/", 2)[1]
        batch, _ = self._first[run_id]
        for part in read_manifest(self.store, batch.manifest_key):
            for line in self._part_lines(part):
                if line.rstrip(b"\n").endswith(f'"{seq}"}}'.encode()):
                    return split_seq(line)[0].decode("utf-8", "replace")
        return ""

    def raw_lines(self, ns: Iterable[int]) -> dict[int, str]:
        return {n: self._raw.get(n, "") for n in ns}

    # ---- the merge ------------------------------------------------------------------------
    def merge(self, done: list[Loaded], dropped_keys: str,
              before_commit: Callable[[], None] | None = None) -> None:
        names = [c.name for c in self.columns]
        lock, count, dedupe, *rest = sql.merge_sql(self.table, STAGE, names, self.key, SEQ_KEY)
        by_run = {d.batch_id.rsplit(".", 1)[0]: d for d in done}  # a batch id is run.table

        def deduped(cur: Any) -> None:  # rows_replaced per batch (redshift_sql.merge_sql)
            replaced: dict[str, int] = {}
            if len(done) > 1:
                cur.execute(count)
                for batch, n in cur.fetchall():
                    run_id = batch.rsplit("/", 1)[1]
                    replaced[by_run[run_id].batch_id] = int(n)
            cur.execute(dedupe)
            if len(done) == 1:
                replaced[done[0].batch_id] = max(cur.rowcount, 0)
            for d in done:
                d.rows_replaced = replaced.get(d.batch_id, 0)
                d.rows_loaded -= d.rows_replaced

        # LOCK first: merges of one table queue instead of failing (error 1023).
        self._merge(lock, [deduped, *rest], done, dropped_keys, before_commit)

    def close(self) -> None:
        for key in self._written:  # manifests and part copies of this load only
            try:
                self.store.delete(key)
            except Exception:  # a leftover costs storage, not correctness
                break
        self._written.clear()
        if not self.conn.closed:
            self.conn.close()
