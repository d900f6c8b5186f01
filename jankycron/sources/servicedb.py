"""Service-database tables: pull a PostgreSQL table incrementally by a cursor column.

    # jobs/service_payments_transactions.py
    from jankycron.sources.servicedb import postgres_table

    job = postgres_table(
        name="payments_transactions", dsn_env="PAYMENTS_DB_URL", table="public.transactions",
        target="payments_transactions", key="id", cursor="updated_at", lookback="10m",
        schedule="*/15 * * * *")

``postgres_table`` builds an ordinary ``Job`` (``catchup=False``: one run after downtime
covers everything since the high-water mark) whose ``source_file`` is the calling job file.

Which rows a run pulls, by the cursor column ``c`` (a ``timestamptz`` or ``timestamp``
column; a ``timestamp`` is read as UTC):

- **The latest interval** (what beat runs, and ``jankycron run JOB`` without ``--date``):
  ``hwm - lookback <= c < now``, where ``hwm`` is the previous run's ``now`` (kept in
  ``run.state["high_water_mark"]``, saved only once the rows are staged) and ``now`` is the
  service database's ``now()`` at the start of this run's snapshot. Rows committed late with
  an older ``c`` are caught if they are at most ``lookback`` older than ``hwm``; rows dated in
  the future are left for the run whose ``now`` passes them. The first run (no ``hwm``)
  starts at ``since`` if given, else at the interval's start.
- **An older interval** (``jankycron run JOB --date D``, ``backfill``, a retry that ran late):
  ``start <= c < end``, rows as they are now; the high-water mark is left alone. That is the
  repair for rows a run missed (a commit later than the look-back).

Rows are read in one ``REPEATABLE READ READ ONLY`` transaction through a server-side cursor,
``chunk_size`` rows at a time, ordered by ``c`` and the key (index ``c`` on the service
database). Each row is a dict keyed by column name; with ``source="eu"`` it also gets
``source_column: "eu"`` and the merge key becomes ``(source_column, *key)``, so two service
databases with the same table can share one warehouse table.

Values: what psycopg2 returns and the stager encodes (numbers, ``Decimal``, text, booleans,
dates and times, ``uuid`` as text, ``json``/``jsonb`` as nested JSON with fractions as
doubles, arrays of those as JSON lists); ``bytea`` as base64 text (standard alphabet, no line
breaks); every other type (``interval``, ranges, ``inet``, geometric, ``xml``...) as
PostgreSQL's text form. A ``numeric`` NaN or infinity is a dead letter, as everywhere.

The DSN is read from the environment variable ``dsn_env`` when the job runs, never at import.
Connection failures (and a snapshot cancelled by a hot standby's recovery) are
``TransientError``; a missing table or column, or no permission, is a one-line
``TerminalError``. Messages carry the host and database, never the password.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg2
from psycopg2 import errors as pgerrors
from psycopg2 import sql

from ..config import parse_duration
from ..errors import ConfigError, JobDefinitionError, TerminalError, TransientError
from ..job import Job, Run, job
from ..schedule import fmt

STATE_KEY = "high_water_mark"
_CURSOR_TYPES = ("timestamp with time zone", "timestamp without time zone")
# Types psycopg2 returns as values the stager encodes as they are (pg_type.typcategory:
# boolean, date/time, enum, numeric, string); and three user-defined ones by name.
_PLAIN_CATEGORIES = set("BDENS")
_PLAIN_NAMES = {"json", "jsonb", "uuid"}

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, t.typcategory,
       coalesce(e.typname, ''), coalesce(e.typcategory, '')
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def postgres_table(
    name: str,
    dsn_env: str,
    table: str,
    target: str,
    key: str | Iterable[str],
    cursor: str = "updated_at",
    lookback: str | int | float = "10m",
    schedule: str = "*/15 * * * *",
    columns: Iterable[str] | None = None,
    source: str | None = None,
    source_column: str = "source",
    since: str | date | datetime | None = None,
    chunk_size: int = 10_000,
    retries: int = 3,
    timeout: str | int | float = "1h",
    alert: str | Iterable[str] | None = None,
    owner: str | None = None,
    source_file: str | None = None,
) -> Job:
    """A job that copies ``table`` of the PostgreSQL database in ``$dsn_env`` into ``target``.

    - ``table``: ``"schema.table"`` or ``"table"`` (the connection's search_path).
    - ``key``: the source table's primary key (a column or a tuple), the merge key.
    - ``cursor``: the column every change touches (``updated_at``); ``lookback``: how far
      before the previous run's end each run re-reads, for transactions that committed late
      (longer than the longest transaction that writes the table).
    - ``columns``: the columns to copy (key and cursor are added); ``None``: all of them.
    - ``source``: a label put in ``source_column`` of every row and prepended to the merge
      key, so several databases can feed one table.
    - ``since``: where the very first run starts (``"2020-01-01"``, a date or datetime);
      default: the first run's interval start. History before it is never pulled.
    - ``source_file``: the job file; default: the file that calls ``postgres_table``.
    """
    caller = source_file or sys._getframe(1).f_code.co_filename
    keys = (key,) if isinstance(key, str) else tuple(key)
    if not keys or not all(isinstance(k, str) and k for k in keys):
        raise JobDefinitionError(f"{name}: key must be a column name or a tuple of them")
    if not isinstance(dsn_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", dsn_env):
        raise JobDefinitionError(f"{name}: dsn_env must name an environment variable, such as "
                                 "PAYMENTS_DB_URL (the DSN itself never goes in a job file)")
    if not isinstance(table, str) or not 1 <= len(table.split(".")) <= 2 or "" in table.split("."):
        raise JobDefinitionError(f"{name}: table must be 'schema.table' or 'table', "
                                 f"got {table!r}")
    try:
        back = timedelta(seconds=parse_duration(lookback, f"{name}: lookback", allow_zero=True))
    except ConfigError as e:
        raise JobDefinitionError(str(e)) from None
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise JobDefinitionError(f"{name}: chunk_size must be a whole number >= 1")
    start_at = _parse_since(since, name)
    merge_key = (source_column, *keys) if source is not None else keys
    spec = _Spec(name, dsn_env, tuple(table.split(".")), keys, cursor, back,
                 tuple(columns) if columns is not None else None, source, source_column,
                 start_at, chunk_size)

    def pull(run: Run) -> Iterator[dict[str, Any]]:
        return _pull(spec, run)

    built = job(schedule=schedule, table=target, key=merge_key, retries=retries,
                timeout=timeout, alert=alert, owner=owner, name=name, catchup=False)(pull)
    return dataclasses.replace(built, source_file=caller)


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    dsn_env: str
    table: tuple[str, ...]
    key: tuple[str, ...]
    cursor: str
    lookback: timedelta
    columns: tuple[str, ...] | None
    source: str | None
    source_column: str
    since: datetime | None
    chunk_size: int

    @property
    def table_name(self) -> str:
        return ".".join(self.table)


def _parse_since(since: str | date | datetime | None, name: str) -> datetime | None:
    if since is None:
        return None
    try:
        value = datetime.fromisoformat(since) if isinstance(since, str) else since
    except ValueError:
        raise JobDefinitionError(f"{name}: since={since!r} is not an ISO date or datetime") \
            from None
    if not isinstance(value, datetime):
        if not isinstance(value, date):
            raise JobDefinitionError(f"{name}: since must be a date, datetime or ISO string")
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ------------------------------------------------------------------------------ connection
class _Secrets:
    """Scrubs the DSN's password (and the DSN itself) from driver messages."""

    def __init__(self, env: str, dsn: str):
        self.env, self.dsn = env, dsn
        try:
            params = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.Error:
            raise ConfigError(f"{env} is not a valid PostgreSQL DSN (postgresql://user:***@host"
                              "/db or 'host=... dbname=...')") from None
        self.params = params
        self.password = params.get("password") or None
        self.where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/" \
                     f"{params.get('dbname') or params.get('user') or '?'}"

    def clean(self, text: str) -> str:
        for secret in (self.dsn, self.password):
            if secret:
                text = text.replace(secret, "***")
        text = re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.I)
        text = re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", text)
        return " ".join(text.split())  # libpq's messages span lines: one line for the CLI


def _error(e: psycopg2.Error, spec: _Spec, secrets: _Secrets) -> Exception:
    """The driver error as a TransientError (retry) or a one-line TerminalError."""
    diag = getattr(e, "diag", None)
    text = secrets.clean((diag.message_primary if diag and diag.message_primary else None)
                         or str(e) or type(e).__name__)
    where = f"service database {secrets.where} (${spec.dsn_env})"
    if isinstance(e, pgerrors.UndefinedTable | pgerrors.UndefinedColumn
                  | pgerrors.InsufficientPrivilege):
        return TerminalError(f"{spec.name}: {where}: {text}")
    if isinstance(e, psycopg2.OperationalError | psycopg2.InterfaceError):
        # Connection refused or dropped, a restart, a statement timeout, a snapshot cancelled
        # by a hot standby's recovery: all worth another attempt.
        return TransientError(f"{spec.name}: {where} failed: {text}")
    return TerminalError(f"{spec.name}: {where}: {text}")


def _connect(spec: _Spec) -> tuple[Any, _Secrets]:
    dsn = os.environ.get(spec.dsn_env, "").strip()
    if not dsn:
        raise ConfigError(f"{spec.name}: {spec.dsn_env} is not set: the service database's "
                          "DSN (postgresql://user:pass@host:5432/db) is required")
    secrets = _Secrets(spec.dsn_env, dsn)
    extra = {k: v for k, v in (("connect_timeout", "10"),
                               ("application_name", f"jankycron {spec.name}"))
             if k not in secrets.params}
    try:
        conn = psycopg2.connect(dsn, **extra)
    except psycopg2.Error as e:
        raise _error(e, spec, secrets) from None
    return conn, secrets


# ------------------------------------------------------------------------------------ pull
def _window(spec: _Spec, run: Run, now: datetime) -> tuple[datetime, datetime, bool]:
    """[low, high) for the cursor, and whether this run advances the high-water mark."""
    latest = run.job.schedule.latest_complete(datetime.now(UTC))
    if run.end < latest.end:  # an older interval: re-pull it as it is now
        return run.start, min(run.end, now), False
    hwm = run.state.get(STATE_KEY)
    if hwm:
        low = datetime.fromisoformat(hwm) - spec.lookback
    else:
        low = spec.since or run.start
    return low, now, True


def _select(spec: _Spec, found: list[tuple]) -> tuple[sql.Composed, list[str],
                                                     dict[int, Callable[[Any], Any]]]:
    """The column list (with text casts where needed), the names, and per-column converters."""
    by_name = {r[0]: r for r in found}
    wanted = list(by_name) if spec.columns is None else list(spec.columns)
    for extra in (*spec.key, spec.cursor):
        if extra not in wanted:
            wanted.append(extra)
    missing = [c for c in wanted if c not in by_name]
    if missing:
        raise TerminalError(f"{spec.name}: table {spec.table_name} has no column "
                            f"{', '.join(missing)}")
    if by_name[spec.cursor][1] not in _CURSOR_TYPES:
        raise TerminalError(f"{spec.name}: cursor column {spec.cursor} is "
                            f"{by_name[spec.cursor][1]}; it must be a timestamptz or timestamp "
                            "column")
    if spec.source is not None and spec.source_column in wanted:
        raise TerminalError(f"{spec.name}: table {spec.table_name} has its own column "
                            f"{spec.source_column}; pick another source_column=")
    parts, convert = [], {}
    for i, col in enumerate(wanted):
        _, _, typname, category, elem, elem_category = by_name[col]
        ident = sql.Identifier(col)
        if typname == "bytea":
            convert[i] = _base64
            parts.append(ident)
        elif _plain(typname, category) or (category == "A" and _plain(elem, elem_category)):
            parts.append(ident)
        else:  # interval, ranges, inet, geometric, xml...: PostgreSQL's own text form
            parts.append(sql.SQL("{}::text AS {}").format(ident, ident))
    return sql.SQL(", ").join(parts), wanted, convert


def _plain(typname: str, category: str) -> bool:
    return category in _PLAIN_CATEGORIES or typname in _PLAIN_NAMES


def _base64(value: Any) -> str | None:
    return None if value is None else base64.b64encode(bytes(value)).decode("ascii")


def _pull(spec: _Spec, run: Run) -> Iterator[dict[str, Any]]:
    conn, secrets = _connect(spec)
    try:
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                # Naive timestamps are read and compared as UTC; aware ones come back in UTC.
                cur.execute("SET TIME ZONE 'UTC'")
            conn.autocommit = False
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                # The first statement takes the snapshot; now() is the transaction's start,
                # so every row committed before it with cursor < now is in the snapshot.
                cur.execute("SELECT now()")
                now = cur.fetchone()[0]
                qualified = sql.Identifier(*spec.table)
                cur.execute(_COLUMNS, (qualified.as_string(conn),))
                found = cur.fetchall()
            if not found:
                raise TerminalError(f"{spec.name}: table {spec.table_name} not found in service "
                                    f"database {secrets.where} (${spec.dsn_env})")
            select, names, convert = _select(spec, found)
            low, high, advance = _window(spec, run, now)
            run.log.info("pulling %s from %s where %s in [%s, %s)", spec.table_name,
                         secrets.where, spec.cursor, fmt(low), fmt(high))
            query = sql.SQL("SELECT {} FROM {} WHERE {c} >= %s AND {c} < %s ORDER BY {c}, {k}"
                            ).format(select, qualified, c=sql.Identifier(spec.cursor),
                                     k=sql.SQL(", ").join(map(sql.Identifier, spec.key)))
            rows = 0
            with conn.cursor(name=f"jankycron_{spec.name}") as cur:
                cur.itersize = spec.chunk_size
                cur.execute(query, (low, high))
                while chunk := cur.fetchmany(spec.chunk_size):
                    for values in chunk:
                        record = dict(zip(names, values, strict=True))
                        for i, fn in convert.items():
                            record[names[i]] = fn(values[i])
                        if spec.source is not None:
                            record[spec.source_column] = spec.source
                        yield record
                    rows += len(chunk)
            conn.rollback()  # read only: nothing to commit
        except psycopg2.Error as e:
            raise _error(e, spec, secrets) from None
    finally:
        conn.close()
    if advance:
        run.state[STATE_KEY] = high.astimezone(UTC).isoformat()
    run.log.info("pulled %d row(s) of %s; high-water mark %s", rows, spec.table_name,
                 run.state.get(STATE_KEY, "not set"))
