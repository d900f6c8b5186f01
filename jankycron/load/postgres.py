"""PostgreSQL warehouse (psycopg2).

A load first tries to go straight into the table (``load.direct``: Python parses and checks the
lines, one COPY into the table inside the merge transaction). Where it cannot, the validated
path runs: staged lines are streamed into ``raw`` with one ``COPY ... FROM STDIN`` per part,
each NDJSON line passed through untouched as CSV with delimiter and quote bytes that JSON never
contains unescaped (0x02, 0x01), so Python neither parses nor re-encodes a record; PostgreSQL
parses the JSON during validation. Every session sets ``statement_timeout`` and
``TimeZone=UTC``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from ..config import redact
from ..errors import TableNotFound, WarehouseError, WarehouseUnavailable
from ..ledger import Batch
from ..store import Store
from . import direct
from .warehouse import (
    LOADS_DDL,
    LOADS_TABLE,
    AlreadyLoaded,
    Column,
    Loaded,
    Session,
    Warehouse,
    clean_reason,
    count_replaced,
    quote_ident,
    quote_literal,
)

log = logging.getLogger(__name__)

_COPY_RAW = "COPY raw (doc) FROM STDIN WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"

# Errors that say "try again later"; everything else is a refusal.
_TRANSIENT = (
    psycopg2.OperationalError,  # connection refused / lost, statement timeout (QueryCanceled)
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.LockNotAvailable,
    psycopg2.errors.AdminShutdown,
)
# Errors a bad record causes: the line is a dead letter, the load goes on.
_DATA = (psycopg2.DataError, psycopg2.IntegrityError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class PostgresWarehouse(Warehouse):
    name = "postgresql"
    supports_prefill = True
    direct_loads = True

    def __init__(self, url: str, statement_timeout: float):
        self.url = url.replace("postgres://", "postgresql://", 1)
        self.shown = redact(self.url)
        self.timeout_ms = int(statement_timeout * 1000)
        self._conn: Any = None

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """The one place psycopg2 errors become jankycron errors."""
        try:
            yield
        except psycopg2.errors.UndefinedTable as e:
            raise TableNotFound(f"{what}: {_first_line(e)} in {self.shown}") from None
        except _TRANSIENT as e:
            raise WarehouseUnavailable(f"warehouse {self.shown}: {what}: {_first_line(e)}") \
                from None
        except psycopg2.Error as e:
            raise WarehouseError(f"warehouse {self.shown}: {what}: {_first_line(e)}") from None

    def connect(self) -> Any:
        with self.errors("connect"):
            conn = psycopg2.connect(
                self.url, connect_timeout=10,
                options=f"-c statement_timeout={self.timeout_ms} -c TimeZone=UTC",
            )
        conn.autocommit = True
        return conn

    @property
    def conn(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.errors("query"), self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []

    def execute_script(self, sql: str) -> None:
        with self.errors("execute"), self.conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                cur.execute(sql)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def columns(self, table: str) -> list[Column]:
        # to_regclass follows search_path the way the loader's own statements will.
        rows = self.query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,"
            " information_schema._pg_char_max_length(a.atttypid, a.atttypmod)"
            " FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0"
            " AND NOT a.attisdropped ORDER BY a.attnum",
            (quote_ident(table),),
        )
        if not rows:
            raise TableNotFound(f"table {table} does not exist in {self.shown} "
                                "(tables are created by migrations: `jankycron migrate`)")
        return [Column(r[0], r[1], r[2], r[3]) for r in rows]

    def session(self, table: str, columns: list[Column], key: tuple[str, ...]) -> PostgresSession:
        return PostgresSession(self, table, columns, key)

    @property
    def session_class(self) -> type[Session]:
        return PostgresSession

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()


class SqlSession(Session):
    """What the psycopg2 sessions (PostgreSQL, Redshift) share: queries on the session's own
    connection, the ``jankycron_loads`` look-up, and the merge transaction around the
    backend's lock and merge statements."""

    wh: PostgresWarehouse
    conn: Any

    def _fetch(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.wh.errors("query"), self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def already_loaded(self, batch_ids: list[str]) -> list[Loaded]:
        if not batch_ids:
            return []
        rows = self._fetch(f"SELECT batch_id, rows_loaded, rows_rejected FROM {LOADS_TABLE} "
                           "WHERE batch_id IN %s", (tuple(batch_ids),))
        return [Loaded(*r) for r in rows]

    def _merge(self, lock: str, statements: list[str | Callable[[Any], None]], done: list[Loaded],
               dropped_keys: str, before_commit: Callable[[], None] | None) -> None:
        """One transaction: ``lock`` the target, refuse batches another loader recorded first
        (``AlreadyLoaded``), run the merge ``statements`` (SQL, or functions of the cursor),
        record ``done`` in ``jankycron_loads``, ``before_commit``, COMMIT; anything raised
        rolls back."""
        with self.wh.errors("merge"), self.conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                cur.execute(lock)
                cur.execute(f"SELECT batch_id, rows_loaded, rows_rejected FROM {LOADS_TABLE} "
                            "WHERE batch_id IN %s", (tuple(d.batch_id for d in done),))
                raced = [Loaded(*r) for r in cur.fetchall()]
                if raced:
                    raise AlreadyLoaded(raced)
                for stmt in statements:
                    if callable(stmt):
                        stmt(cur)
                    else:
                        cur.execute(stmt)
                at = datetime.now(UTC).replace(tzinfo=None)
                cur.executemany(
                    f"INSERT INTO {LOADS_TABLE} (batch_id, table_name, rows_loaded, "
                    "rows_rejected, dropped_keys, loaded_at) VALUES (%s, %s, %s, %s, %s, %s)",
                    [(d.batch_id, self.table, d.rows_loaded, d.rows_rejected, dropped_keys, at)
                     for d in done],
                )
                if before_commit:
                    before_commit()
            except BaseException:
                if not self.conn.closed:
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")


class PostgresSession(SqlSession):
    def __init__(self, wh: PostgresWarehouse, table: str, columns: list[Column],
                 key: tuple[str, ...]):
        super().__init__(table, columns, key)
        self.wh = wh
        self._indexed = self._analyzed = False
        self.conn = wh.connect()  # its own connection: temp tables live as long as the session
        t = quote_ident(table)
        with self.wh.errors("prepare load"), self.conn.cursor() as cur:
            if not self._loads_table_exists(cur):
                with contextlib.suppress(psycopg2.errors.UniqueViolation):  # a racing loader
                    cur.execute(LOADS_DDL)
            cur.execute("DROP TABLE IF EXISTS pg_temp.raw, pg_temp.stage")
            cur.execute("CREATE TEMP TABLE raw (jc_line bigint GENERATED ALWAYS AS IDENTITY, "
                        "doc text)")
            # LIKE copies the target's NOT NULL and CHECK rules, so validation enforces them.
            cur.execute(f"CREATE TEMP TABLE stage (jc_line bigint, LIKE {t} "
                        "INCLUDING CONSTRAINTS)")
            for k in key:
                cur.execute(f"ALTER TABLE stage ALTER COLUMN {quote_ident(k)} SET NOT NULL")

    @staticmethod
    def _loads_table_exists(cur: Any) -> bool:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (LOADS_TABLE,))
        return cur.fetchone()[0]

    # Lines are kept as text so that one line PostgreSQL cannot parse as jsonb (a \u0000
    # escape) fails its own validation range, not the COPY of the whole batch. (Measured:
    # jsonb ->> per column beats jsonb_populate_record into a text row type.)
    doc_sql = "CAST(doc AS jsonb)"

    def regex_sql(self, text: str, pattern: str) -> str:
        return f"({text} ~ '{pattern}')"

    def json_sql(self, col: Column) -> str:
        return f"CAST(NULLIF(j -> {quote_literal(col.name)}, 'null'::jsonb) AS {col.type_sql})"

    def timestamp_utc_sql(self, text: str) -> str:
        return f"(CAST({text} AS timestamptz) AT TIME ZONE 'UTC')"

    def _copy(self, stream: IO[bytes]) -> int:
        with self.wh.errors("copy staged lines"), self.conn.cursor() as cur:
            try:
                cur.copy_expert(_COPY_RAW, stream, size=1 << 20)
            except psycopg2.errors.QueryCanceled:
                # A damaged part (staging.Verified): psycopg2 reports it as a cancelled COPY.
                if getattr(stream, "error", None) is not None:
                    raise stream.error from None  # type: ignore[attr-defined]
                raise
            return cur.rowcount

    def attempt(self, sql: str, fetch: bool = False) -> tuple[str | None, Any]:
        with self.wh.errors("validate"), self.conn.cursor() as cur:
            try:
                cur.execute(sql)
            except _DATA as e:
                return clean_reason(str(e)), None
            return None, cur.fetchone()[0] if fetch else None

    def index_lines(self) -> None:
        # Without it every bisection step scans all of raw: O(k n log n) instead of O(k log n).
        if self._analyzed:
            return
        with self.wh.errors("index staged lines"), self.conn.cursor() as cur:
            if not self._indexed:
                cur.execute("CREATE INDEX ON raw (jc_line)")
                self._indexed = True
            cur.execute("ANALYZE raw")  # a temp table is never analyzed by autovacuum
        self._analyzed = True

    def add_lines(self, stream: IO[bytes]) -> int:
        self._analyzed = False  # new lines: the statistics are stale
        return self._copy(stream)

    def raw_lines(self, ns: Iterable[int]) -> dict[int, str]:
        rows = self._fetch("SELECT jc_line, doc FROM raw WHERE jc_line = ANY(%s)", (list(ns),))
        return dict(rows)

    def _lock_sql(self) -> str:
        # One merge per table at a time; readers are not blocked.
        return f"LOCK TABLE {quote_ident(self.table)} IN SHARE ROW EXCLUSIVE MODE"

    def merge(self, done: list[Loaded], dropped_keys: str,
              before_commit: Callable[[], None] | None = None) -> None:
        dedupe, *rest = self.merge_sql()

        def deduped(cur: Any) -> None:  # the lines it removes, counted as it removes them
            cur.execute(dedupe)
            count_replaced(done, cur.fetchall())

        self._merge(self._lock_sql(), [deduped, *rest], done, dropped_keys, before_commit)

    def load_direct(self, store: Store, batches: list[Batch], done: list[Loaded],
                    dropped_keys: str, before_commit: Callable[[], None] | None = None) -> bool:
        try:
            plan = direct.Plan(self.columns, self.key)
            self._merge(self._lock_sql(),
                        [lambda cur: count_replaced(
                            done, direct.load(cur, self.table, plan, store, batches))],
                        done, dropped_keys, before_commit)
        except direct.NotDirect as e:
            log.info("%s: loading the validated way: %s", self.table, e)
            return False
        return True

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.close()
