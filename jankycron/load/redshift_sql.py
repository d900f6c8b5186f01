"""The SQL the Redshift loader runs, built from templates with our own quoting (REFERENCE §2:
sqlglot re-renders COPY lossily, so COPY is never round-tripped through it).

Used by the Redshift warehouse (``redshift.py``); tested against golden SQL in ``tests/golden/``.

Choices, each because of the "nothing silently changed" promise:

- no ``TRUNCATECOLUMNS`` and no ``ACCEPTINVCHARS``: both change data instead of refusing it;
- ``MAXERROR 0``: the first bad line fails the COPY, and bisection finds the rest;
- ``FORMAT AS JSON 'auto ignorecase'``: camelCase keys (``userId``) match Redshift's lower-case
  column names;
- ``STATUPDATE OFF COMPUPDATE OFF``: no analysis on every load into a staging table;
- NOLOAD gets exactly the same options as the real COPY, so it checks what the COPY will see.
"""

from __future__ import annotations

import re

from ..errors import ConfigError

_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


def ident(name: str) -> str:
    """A Redshift identifier: folded to lower case (as Redshift does even inside quotes),
    double-quoted, at most 127 bytes."""
    folded = name.lower()
    if not folded or len(folded.encode()) > 127:
        raise ConfigError(f"identifier {name!r} must be 1 to 127 bytes")
    return '"' + folded.replace('"', '""') + '"'


def literal(value: str) -> str:
    # Whether a backslash escapes depends on the session's settings: refuse it instead of
    # guessing (S3 URLs, ARNs and region names never contain one).
    if "\\" in value:
        raise ConfigError(f"refusing a backslash in a SQL string: {value!r}")
    return "'" + value.replace("'", "''") + "'"


def qualified(table: str, schema: str | None = None) -> str:
    return f"{ident(schema)}.{ident(table)}" if schema else ident(table)


def copy_sql(table: str, manifest_url: str, iam_role: str, *, columns: list[str] | None = None,
             schema: str | None = None, noload: bool = False, region: str | None = None) -> str:
    """``COPY`` of gzipped NDJSON parts listed in a manifest (``NOLOAD``: validate only)."""
    if not manifest_url.startswith("s3://"):
        raise ConfigError(f"COPY reads from S3, not {manifest_url}")
    if iam_role != "default" and not _ROLE.match(iam_role):
        raise ConfigError("JANKYCRON_REDSHIFT_IAM_ROLE must be 'default' or a role ARN "
                          "(arn:aws:iam::123456789012:role/Name)")
    if region is not None and not _REGION.match(region):
        raise ConfigError(f"{region!r} is not an AWS region name")
    target = qualified(table, schema)
    if columns:
        target += " (" + ", ".join(ident(c) for c in columns) + ")"
    role = "IAM_ROLE default" if iam_role == "default" else f"IAM_ROLE {literal(iam_role)}"
    lines = [
        f"COPY {target}",
        f"FROM {literal(manifest_url)}",
        role,
        "FORMAT AS JSON 'auto ignorecase'",
        "GZIP",
        "MANIFEST",
        "TIMEFORMAT 'auto'",
        "DATEFORMAT 'auto'",
        "STATUPDATE OFF",
        "COMPUPDATE OFF",
        "MAXERROR 0",
    ]
    if region:
        lines.append(f"REGION {literal(region)}")
    if noload:
        lines.append("NOLOAD")
    return "\n".join(lines)


def stage_sql(table: str, stage: str, order_column: str, schema: str | None = None) -> list[str]:
    """A session-local staging table like the target (LIKE keeps its DISTKEY, so the merge's
    join is collocated, and its NOT NULL rules, so COPY enforces them), plus the column that
    orders lines for "the last one wins" (staging.SEQ_KEY: it sorts as text)."""
    return [
        f"CREATE TEMP TABLE {ident(stage)} (LIKE {qualified(table, schema)})",
        f"ALTER TABLE {ident(stage)} ADD COLUMN {ident(order_column)} VARCHAR(100)",
    ]


def merge_sql(table: str, stage: str, columns: list[str], key: tuple[str, ...],
              order_column: str, schema: str | None = None) -> list[str]:
    """The merge, to run between BEGIN and COMMIT: lock, count per batch the lines a later
    line of the same batch with the same key replaces, keep the newest line per key, delete
    the target's rows with those keys, insert. Locking first serializes merges of one table
    instead of failing one of them with a serializable isolation violation (error 1023).

    The count's rows are (the line's seq less its line number: interval start and run id,
    which name the batch, how many). Lines of one batch replaced by a later batch's are not
    counted: they are what their own run held. (Redshift has no RETURNING; a load of one
    batch takes the count from the dedupe's row count instead.)"""
    t, s, o = qualified(table, schema), ident(stage), ident(order_column)
    keys = ", ".join(ident(k) for k in key)
    dup = " AND ".join(f"{s}.{ident(k)} = d.{ident(k)}" for k in key)
    on = " AND ".join(f"{t}.{ident(k)} = {s}.{ident(k)}" for k in key)
    cols = ", ".join(ident(c) for c in columns)
    # staging.SEQ_KEY is "<interval start>/<run id>/<12-digit line>": 13 characters name the
    # line within its batch.
    batch = f"LEFT({s}.{o}, LENGTH({s}.{o}) - 13)"
    return [
        f"LOCK {t}",
        f"SELECT jc_batch, SUM(jc_n - 1) FROM (SELECT {batch} AS jc_batch, COUNT(*) AS jc_n "
        f"FROM {s} GROUP BY {keys}, {batch} HAVING COUNT(*) > 1) r GROUP BY jc_batch",
        f"DELETE FROM {s} USING (SELECT {keys}, MAX({o}) AS jc_last FROM {s} GROUP BY {keys} "
        f"HAVING COUNT(*) > 1) d WHERE {dup} AND {s}.{o} < d.jc_last",
        f"DELETE FROM {t} USING {s} WHERE {on}",
        f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {s}",
    ]


def load_errors_sql() -> str:
    """The rows the session's last COPY (or NOLOAD) refused: file, line (for NDJSON, the
    record's own line), column, code and reason; ``pg_last_copy_id()`` is the STL query id.
    UNCERTAIN until run on a cluster: that NOLOAD logs here like a real COPY (REFERENCE §1),
    and how ``sys_load_error_detail`` (serverless) keys its rows; this reads the STL view."""
    return ("SELECT TRIM(filename), line_number, TRIM(colname), err_code, TRIM(err_reason) "
            "FROM stl_load_errors WHERE query = pg_last_copy_id() "
            "ORDER BY filename, line_number")
