"""DuckDB warehouse: the embedded default (``duckdb:///./var/warehouse.duckdb``).

DuckDB has no statement timeout setting, so each statement runs under a watchdog that
interrupts it after ``JANKYCRON_STATEMENT_TIMEOUT``. Differences from PostgreSQL/Redshift that
show in data: DuckDB does not enforce VARCHAR(n) lengths (neither can this backend: DuckDB's
catalog keeps no length), and a table's CHECK constraints are enforced at merge time only (a
CHECK violation fails the load rather than dead-lettering the record). Only one process may
open the file for writing: a second loader gets "warehouse busy" and retries later.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import duckdb

from ..errors import ConfigError, TableNotFound, WarehouseError, WarehouseUnavailable
from .warehouse import (
    FAIL_MARK,
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

_JSON_NUL = r"(^|[^\\])(\\\\)*\\u0000"
_DATA = (duckdb.ConversionException, duckdb.ConstraintException, duckdb.InvalidInputException,
         duckdb.OutOfRangeException)


class DuckDBWarehouse(Warehouse):
    name = "duckdb"

    def __init__(self, url: str, statement_timeout: float):
        raw = url[len("duckdb://"):]
        path = raw[1:] if raw.startswith("/") else raw  # duckdb:///./x -> ./x, duckdb:////abs
        if not path:
            raise ConfigError("JANKYCRON_WAREHOUSE_URL=duckdb:/// needs a file path")
        self.path = path if path == ":memory:" else str(Path(path))
        self.shown = f"duckdb:///{self.path}"
        self.timeout = statement_timeout
        self._conn: Any = None

    @property
    def conn(self) -> Any:
        if self._conn is None:
            with self.errors("open"):
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                self._conn = duckdb.connect(self.path)
                self._conn.execute("SET TimeZone = 'UTC'")
        return self._conn

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """The one place DuckDB errors become jankycron errors."""
        try:
            yield
        except duckdb.CatalogException as e:
            raise TableNotFound(f"{what}: {clean_reason(str(e))} in {self.shown}") from None
        except (duckdb.IOException, duckdb.InterruptException) as e:
            # IOException: another process holds the file's write lock.
            raise WarehouseUnavailable(f"warehouse {self.shown} busy or timed out ({what}): "
                                       f"{clean_reason(str(e))}") from None
        except duckdb.Error as e:
            raise WarehouseError(f"warehouse {self.shown}: {what}: {clean_reason(str(e))}") \
                from None

    def execute(self, sql: str, args: Iterable[Any] = ()) -> Any:
        """Run one statement under the statement-timeout watchdog."""
        conn = self.conn
        timer = threading.Timer(self.timeout, conn.interrupt)
        timer.daemon = True
        timer.start()
        try:
            return conn.execute(sql, list(args))
        finally:
            timer.cancel()

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.errors("query"):
            return self.execute(sql, args).fetchall()

    def execute_script(self, sql: str) -> None:
        with self.errors("execute"):
            self.execute("BEGIN")
            try:
                self.execute(sql)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.execute("COMMIT")

    def columns(self, table: str) -> list[Column]:
        rows = self.query(
            "SELECT column_name, data_type, is_nullable = 'YES', character_maximum_length"
            " FROM information_schema.columns WHERE table_name = ? AND table_schema ="
            " current_schema() ORDER BY ordinal_position", (table,))
        if not rows:
            raise TableNotFound(f"table {table} does not exist in {self.shown} "
                                "(tables are created by migrations: `jankycron migrate`)")
        return [Column(*r) for r in rows]

    def session(self, table: str, columns: list[Column], key: tuple[str, ...]) -> DuckDBSession:
        return DuckDBSession(self, table, columns, key)

    @property
    def session_class(self) -> type[Session]:
        return DuckDBSession

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class DuckDBSession(Session):
    def __init__(self, wh: DuckDBWarehouse, table: str, columns: list[Column],
                 key: tuple[str, ...]):
        super().__init__(table, columns, key)
        self.wh = wh
        self.count = 0
        defs = ", ".join(
            f"{quote_ident(c.name)} {c.type_sql}"
            + (" NOT NULL" if not c.nullable or c.name in key else "")
            for c in columns
        )
        with wh.errors("prepare load"):
            wh.execute(LOADS_DDL)
            wh.execute("DROP TABLE IF EXISTS temp.raw")
            wh.execute("DROP TABLE IF EXISTS temp.stage")
            wh.execute("CREATE TEMP TABLE raw (jc_line BIGINT, doc JSON)")
            wh.execute(f"CREATE TEMP TABLE stage (jc_line BIGINT, {defs})")

    @staticmethod
    def _path(col: Column) -> str:
        """The column's key as a quoted JSON path: a bare key is a path itself (``$.c``,
        ``/p``)."""
        return quote_literal('$."' + col.name.replace("\\", "\\\\").replace('"', '\\"') + '"')

    def field_sql(self, col: Column) -> str:
        return f"(j ->> {self._path(col)})"

    def value_sql(self, col: Column) -> str:
        value = super().value_sql(col)
        if col.base not in self.STRING_TYPES:
            return value
        # PostgreSQL cannot store NUL in text (and refuses the record); neither may DuckDB.
        text = self.field_sql(col)
        why = f"error({quote_literal(FAIL_MARK + 'a NUL character in a string')})"
        return f"CASE WHEN contains({text}, chr(0)) THEN {why} ELSE {value} END"

    def regex_sql(self, text: str, pattern: str) -> str:
        return f"regexp_full_match({text}, '{pattern}')"

    def float_sql(self, text: str, col: Column) -> str:
        # DuckDB reads 1e400 as infinity where PostgreSQL refuses it as out of range; and a
        # JSON number -0.0 is zero in PostgreSQL (jsonb's numeric has no sign for zero): adding
        # 0.0 makes it so here (a string "-0" keeps its sign in both).
        value = super().float_sql(text, col)
        why = self.fail_sql(f"'is out of range for {col.type_sql}: ' || {text}", col)
        number = f"json_type(j -> {self._path(col)}) <> 'VARCHAR'"
        return (f"CASE WHEN isinf({value}) THEN {why} WHEN {number} THEN {value} + 0.0 "
                f"ELSE {value} END")

    def json_sql(self, col: Column) -> str:
        value = f"(j -> {self._path(col)})"
        # jsonb refuses \u0000 (the record is a dead letter on PostgreSQL), so this does too:
        # an escape not itself escaped (preceded by an even number of backslashes).
        nul = f"regexp_matches(CAST({value} AS VARCHAR), {quote_literal(_JSON_NUL)})"
        why = self.fail_sql(quote_literal("a \\u0000 (NUL) in a JSON value"), col)
        return (f"CASE WHEN json_type({value}) = 'NULL' THEN NULL WHEN {nul} THEN {why} "
                f"ELSE {value} END")

    def timestamp_utc_sql(self, text: str) -> str:
        return f"timezone('UTC', CAST({text} AS TIMESTAMPTZ))"

    def add_lines(self, stream: IO[bytes]) -> int:
        # DuckDB reads files fastest; wrapping each line keeps its number next to it.
        fd, path = tempfile.mkstemp(prefix="jankycron-raw-", suffix=".ndjson")
        start = self.count
        try:
            with os.fdopen(fd, "wb") as f:
                for line in stream:
                    self.count += 1
                    f.write(b'{"n":%d,"doc":%s}\n' % (self.count, line.rstrip(b"\n")))
            with self.wh.errors("read staged lines"):
                self.wh.execute(
                    "INSERT INTO raw SELECT n, doc FROM read_json(?, format = 'newline_delimited',"
                    " columns = {n: 'BIGINT', doc: 'JSON'}, maximum_object_size = 67108864)",
                    (path,))
        finally:
            os.unlink(path)
        return self.count - start

    def attempt(self, sql: str, fetch: bool = False) -> tuple[str | None, Any]:
        with self.wh.errors("validate"):
            try:
                result = self.wh.execute(sql)
            except _DATA as e:
                return clean_reason(str(e)), None
            return None, result.fetchone()[0] if fetch else None

    def raw_lines(self, ns: Iterable[int]) -> dict[int, str]:
        with self.wh.errors("query"):
            rows = self.wh.execute("SELECT jc_line, CAST(doc AS VARCHAR) FROM raw WHERE "
                                   "list_contains(?, jc_line)", (list(ns),)).fetchall()
        return dict(rows)


    def already_loaded(self, batch_ids: list[str]) -> list[Loaded]:
        with self.wh.errors("query"):
            rows = self.wh.execute(
                f"SELECT batch_id, rows_loaded, rows_rejected FROM {LOADS_TABLE} "
                "WHERE list_contains(?, batch_id)", (batch_ids,)).fetchall()
        return [Loaded(*r) for r in rows]

    def merge_sql(self) -> list[str]:
        # DuckDB's RETURNING sees only the target's columns: the dedupe goes through a
        # temporary table of what it removes (one aggregate, as with RETURNING), counted by
        # ``merge``.
        _, *rest = super().merge_sql()
        return [f"CREATE TEMP TABLE jc_gone AS {self.replaced_sql()}",
                "DELETE FROM stage WHERE jc_line IN (SELECT jc_line FROM jc_gone)", *rest]

    def merge(self, done: list[Loaded], dropped_keys: str,
              before_commit: Callable[[], None] | None = None) -> None:
        with self.wh.errors("merge"):
            self.wh.execute("BEGIN")
            try:
                raced = self.already_loaded([d.batch_id for d in done])
                if raced:
                    raise AlreadyLoaded(raced)
                gone, dedupe, *rest = self.merge_sql()
                self.wh.execute(gone)
                self.wh.execute(dedupe)
                count_replaced(done, self.wh.execute("SELECT * FROM jc_gone").fetchall())
                self.wh.execute("DROP TABLE jc_gone")
                for stmt in rest:
                    self.wh.execute(stmt)
                for d in done:
                    self.wh.execute(
                        f"INSERT INTO {LOADS_TABLE} VALUES (?, ?, ?, ?, ?, "
                        "CAST(now() AT TIME ZONE 'UTC' AS TIMESTAMP))",
                        (d.batch_id, self.table, d.rows_loaded, d.rows_rejected, dropped_keys))
                if before_commit:
                    before_commit()
            except BaseException:
                self.wh.conn.execute("ROLLBACK")
                raise
            self.wh.execute("COMMIT")

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.wh.execute("DROP TABLE IF EXISTS temp.raw")
            self.wh.execute("DROP TABLE IF EXISTS temp.stage")
