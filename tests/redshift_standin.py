"""A stand-in for an Amazon Redshift cluster over a real PostgreSQL database.

There is no Redshift here. The Redshift loader (``jankycron/load/redshift.py``) connects to
this stand-in through its ``connect`` hook and sends exactly the statements it would send to a
cluster; everything but COPY runs on PostgreSQL as is (temp ``LIKE`` tables, ``LOCK``, the
merge's ``DELETE … USING`` / ``INSERT``, the catalog queries, ``jankycron_loads``). COPY is
emulated here:

- it must carry the options the loader promises (``FORMAT AS JSON 'auto ignorecase'``,
  ``GZIP``, ``MANIFEST``, ``MAXERROR 0``, ``STATUPDATE OFF``, ``COMPUPDATE OFF``, an
  ``IAM_ROLE``), or it is refused;
- it reads the manifest and every gzipped part it lists from the S3 emulator, matches keys to
  columns ignoring case, and inserts through PostgreSQL's own type conversion (each part's
  lines in reverse: COPY keeps no order), in one transaction (all or nothing), rolled back for
  ``NOLOAD``;
- the first refused record is written to an ``stl_load_errors`` table (file URL, line, column,
  code, reason) for ``pg_last_copy_id()``, and the client gets Redshift's
  "Load into table … failed" error.

What this proves: the loader's statement sequence, its bisection and line jumps over subset
manifests, its reading of ``stl_load_errors``, dedupe by ``__jc_seq``, the merge transaction
and the exactly-once bookkeeping. What it does not: Redshift's own parsing and conversion rules
(e.g. COPY truncating decimal places, TIMEFORMAT 'auto'), IAM and S3 access from the cluster,
identifier folding (PostgreSQL keeps case inside quotes; the loader lower-cases), commit-queue
and isolation behaviour (error 1023), and whether NOLOAD logs to ``stl_load_errors`` exactly
like COPY (REFERENCE.md marks it UNCERTAIN).
"""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import psycopg2
import psycopg2.extensions

SETUP = [
    """CREATE TABLE IF NOT EXISTS stl_load_errors (
        session int, query bigint, starttime timestamp DEFAULT now(), filename char(256),
        line_number bigint, colname char(127), raw_line char(1024), err_code int,
        err_reason char(100))""",
    "CREATE SEQUENCE IF NOT EXISTS standin_copy_ids",
    """CREATE OR REPLACE FUNCTION pg_last_copy_id() RETURNS bigint LANGUAGE sql AS
        $$ SELECT coalesce(nullif(current_setting('standin.last_copy_id', true), ''),
                           '-1')::bigint $$""",
]

_COPY = re.compile(r"""^COPY\s+(?P<target>"(?:[^"]|"")+")(?:\s*\((?P<cols>[^)]*)\))?\s+
                       FROM\s+'(?P<url>(?:[^']|'')*)'\s+(?P<options>.*)$""",
                   re.S | re.X)
REQUIRED = ("IAM_ROLE", "FORMAT AS JSON 'auto ignorecase'", "GZIP", "MANIFEST", "MAXERROR 0",
            "STATUPDATE OFF", "COMPUPDATE OFF")


def install(pg_url: str) -> None:
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for stmt in SETUP:
            cur.execute(stmt)
    conn.close()


class StandIn:
    """``connect`` for ``RedshiftWarehouse``: PostgreSQL connections whose cursors emulate
    COPY from S3. ``line_numbers=False`` makes errors name no line (as when Redshift cannot
    tell one), so the loader must bisect."""

    def __init__(self, s3_client: Any, line_numbers: bool = True):
        self.s3, self.line_numbers = s3_client, line_numbers
        self.copies: list[str] = []  # every COPY statement received, in order
        self.fail_connect: Exception | None = None

    def __call__(self, dsn: str, **kwargs: Any) -> Any:
        if self.fail_connect is not None:
            raise self.fail_connect
        standin = self

        class Cursor(psycopg2.extensions.cursor):
            def execute(self, query: Any, vars: Any = None) -> Any:  # noqa: A002
                m = _COPY.match(query) if isinstance(query, str) else None
                if m is None:
                    return super().execute(query, vars)
                standin.copies.append(query)
                return standin.copy(self, m)

        return psycopg2.connect(dsn, cursor_factory=Cursor, **kwargs)

    # ---- COPY --------------------------------------------------------------------------
    def _get(self, url: str) -> bytes:
        bucket, _, key = url[len("s3://"):].partition("/")
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def _raise(self, cur: Any, message: str) -> None:
        psycopg2.extensions.cursor.execute(
            cur, "DO $$ BEGIN RAISE EXCEPTION '" + message.replace("'", "''").replace("%", "%%")
            + "' USING ERRCODE = 'XX000'; END $$")

    def copy(self, cur: Any, m: re.Match) -> None:
        run = psycopg2.extensions.cursor.execute
        options = m["options"]
        missing = [o for o in REQUIRED if o not in options]
        if missing:
            self._raise(cur, f"stand-in: COPY without {', '.join(missing)}")
        target, url, noload = m["target"], m["url"].replace("''", "'"), "NOLOAD" in options
        run(cur, "SELECT nextval('standin_copy_ids')")
        query_id = cur.fetchone()[0]
        table = target[1:-1].replace('""', '"')
        run(cur, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                 "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (target,))
        types = cur.fetchall()
        columns = {r[0].lower(): r[0] for r in types}
        # Nested JSON goes into a string column as its text, into a JSON column (Redshift's
        # SUPER) as itself.
        as_json = {r[0] for r in types if r[1] in ("json", "jsonb")}
        try:
            entries = json.loads(self._get(url))["entries"]
            files = [(e["url"], gzip.decompress(self._get(e["url"])).splitlines())
                     for e in entries]
        except Exception as e:  # noqa: BLE001 - Redshift reports S3 problems the same way
            self._raise(cur, f"S3ServiceException: {type(e).__name__}: {e}")
        run(cur, "BEGIN")
        error = None
        for file_url, lines in files:
            docs = []
            for n, line in enumerate(lines, 1):
                try:
                    doc = json.loads(line)
                    if not isinstance(doc, dict):
                        raise ValueError("not an object")
                except ValueError:
                    error = (file_url, n, "", 1216, "Invalid JSON object", line)
                    break
                docs.append({columns[k.lower()]: (
                    json.dumps(v) if isinstance(v, dict | list)
                    and columns[k.lower()] not in as_json else v)
                    for k, v in doc.items() if k.lower() in columns})
            if error:
                break
            run(cur, "SAVEPOINT f")
            try:
                # Reversed: COPY keeps no line order, and the loader must not rely on one.
                run(cur, f"INSERT INTO {target} SELECT * FROM "
                         f"json_populate_recordset(NULL::{target}, %s)",
                    (json.dumps(docs[::-1]),))
                continue
            except psycopg2.Error:
                run(cur, "ROLLBACK TO SAVEPOINT f")
            for n, doc in enumerate(docs, 1):  # find the first record PostgreSQL refuses
                run(cur, "SAVEPOINT r")
                try:
                    run(cur, f"INSERT INTO {target} SELECT * FROM "
                             f"json_populate_record(NULL::{target}, %s)", (json.dumps(doc),))
                except psycopg2.Error as e:
                    run(cur, "ROLLBACK TO SAVEPOINT r")
                    column = (e.diag.column_name or self._column(cur, target, doc) or "")
                    error = (file_url, n, column, _code(e), e.diag.message_primary or str(e),
                             lines[n - 1])
                    break
            if error:
                break
        run(cur, "ROLLBACK" if error or noload else "COMMIT")
        run(cur, f"SET standin.last_copy_id = '{int(query_id)}'")
        if error:
            file_url, n, column, code, reason, raw = error
            run(cur, "INSERT INTO stl_load_errors (session, query, filename, line_number, "
                     "colname, raw_line, err_code, err_reason) VALUES (pg_backend_pid(), %s, %s, "
                     "%s, %s, %s, %s, %s)",
                (query_id, file_url[:256], n if self.line_numbers else 0, column[:127],
                 raw[:1024].decode("utf-8", "replace"), code, reason[:100]))
            self._raise(cur, f"Load into table '{table}' failed.  Check 'stl_load_errors' "
                             "system table for details.")

    @staticmethod
    def _column(cur: Any, target: str, doc: dict) -> str | None:
        run = psycopg2.extensions.cursor.execute
        for name, value in doc.items():
            run(cur, "SAVEPOINT c")
            try:
                run(cur, f"SELECT json_populate_record(NULL::{target}, %s)",
                    (json.dumps({name: value}),))
            except psycopg2.Error:
                run(cur, "ROLLBACK TO SAVEPOINT c")
                return name
        return None


def _code(e: psycopg2.Error) -> int:
    """Redshift's load error code for PostgreSQL's refusal (REFERENCE.md §1.2)."""
    code = e.pgcode or ""
    if code == "23502":
        return 1213  # NOT NULL
    if code == "22001":
        return 1204  # string too long
    if code in ("22007", "22008"):
        return 1206  # bad date/time
    if code == "22003":
        return 1204  # out of range
    return 1207  # invalid digit / conversion
