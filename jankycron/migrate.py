"""Warehouse DDL migrations: ``warehouse/NNNN_name.sql`` files applied once each, in order.

Files are written for Redshift (``ENCODE``, ``DISTKEY``/``DISTSTYLE``, ``SORTKEY``, ``SUPER``).
For PostgreSQL and DuckDB the same file is applied in its *local form* (``local_form``): the
Redshift-only table and column attributes are removed and ``SUPER`` becomes ``jsonb`` / ``JSON``.
Everything else must already be portable (the bundled files are; ``tests/test_migrate.py``
applies them to both).

What ran is recorded in the warehouse itself (``jankycron_migrations``), in the same
transaction as the migration, so a migration is applied exactly once per warehouse. A file
with a destructive statement (DROP, TRUNCATE, DELETE, ALTER ... DROP) is refused, and nothing
pending is applied, unless the operator says ``--allow-destructive``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import ConfigError, TerminalError
from .load.warehouse import Warehouse, quote_literal

TABLE = "jankycron_migrations"
_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")

# Redshift-only attributes, removed for PostgreSQL and DuckDB (order matters: table-level
# forms with their column lists before the bare column-level keywords).
_REDSHIFT_ONLY = [
    re.compile(r"\s+ENCODE\s+\w+", re.I),
    re.compile(r"\s+DISTSTYLE\s+(?:AUTO|EVEN|KEY|ALL)\b", re.I),
    re.compile(r"\s+DISTKEY\s*\([^)]*\)", re.I),
    re.compile(r"\s+(?:COMPOUND\s+|INTERLEAVED\s+)?SORTKEY\s*(?:\([^)]*\)|AUTO\b)", re.I),
    re.compile(r"\s+(?:DISTKEY|SORTKEY)\b", re.I),
    re.compile(r"\s+BACKUP\s+(?:YES|NO)\b", re.I),
]
_SUPER = re.compile(r"\bSUPER\b", re.I)
_VARCHAR_MAX = re.compile(r"\b(VARCHAR|CHARACTER VARYING)\s*\(\s*MAX\s*\)", re.I)
_DESTRUCTIVE = re.compile(
    r"\b(DROP\s+(?:TABLE|SCHEMA|VIEW|MATERIALIZED\s+VIEW|DATABASE)|TRUNCATE|DELETE\s+FROM"
    r"|ALTER\s+TABLE\s+[^;]*?\bDROP\b)", re.I)
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def local_form(sql: str, dialect: str) -> str:
    """A Redshift DDL file as PostgreSQL (``postgresql``) or DuckDB (``duckdb``) runs it."""
    if dialect == "redshift":
        return sql
    out = sql
    for pattern in _REDSHIFT_ONLY:
        out = pattern.sub("", out)
    out = _VARCHAR_MAX.sub(r"\1(65535)", out)
    return _SUPER.sub("jsonb" if dialect == "postgresql" else "JSON", out)


@dataclass(frozen=True)
class Destructive:
    file: str
    line: int
    statement: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.statement}"


def destructive(path: Path) -> list[Destructive]:
    """The destructive statements of a migration file (comments ignored)."""
    text = path.read_text()
    code = _COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
    return [Destructive(path.name, code.count("\n", 0, m.start()) + 1,
                        " ".join(m.group(1).split()[:2]).upper())
            for m in _DESTRUCTIVE.finditer(code)]


def _files(folder: str | Path) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"migrations folder {folder} does not exist")
    files = sorted(p for p in path.glob("*.sql"))
    bad = [p.name for p in files if not _NAME.match(p.name)]
    if bad:
        raise ConfigError(f"migration file names must look like 0001_name.sql: {', '.join(bad)}")
    return files


def pending(warehouse: Warehouse, folder: str | Path) -> list[Path]:
    files = _files(folder)
    warehouse.execute_script(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (name varchar(200) PRIMARY KEY, "
        "applied_at timestamp NOT NULL)"
    )
    done = {r[0] for r in warehouse.query(f"SELECT name FROM {TABLE}")}
    return [p for p in files if p.name not in done]


def plan(warehouse: Warehouse, folder: str | Path) -> list[tuple[str, str]]:
    """(file name, the SQL this warehouse would run) for every pending migration."""
    return [(p.name, local_form(p.read_text(), warehouse.name))
            for p in pending(warehouse, folder)]


def apply(warehouse: Warehouse, folder: str | Path, allow_destructive: bool = False
          ) -> list[str]:
    """Apply every pending migration, each in its own transaction; returns the names applied.

    Refuses (applying none) when a pending file is destructive and ``allow_destructive`` is
    not set."""
    todo = pending(warehouse, folder)
    if not allow_destructive:
        found = [d for p in todo for d in destructive(p)]
        if found:
            raise TerminalError(f"refusing a destructive migration ({found[0]}"
                                + (f", and {len(found) - 1} more" if len(found) > 1 else "")
                                + "); nothing applied; check it, then rerun with "
                                "--allow-destructive")
    applied = []
    for path in todo:
        at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        warehouse.execute_script(
            local_form(path.read_text(), warehouse.name).rstrip().rstrip(";")
            + f";\nINSERT INTO {TABLE} (name, applied_at) VALUES ({quote_literal(path.name)}, "
            f"TIMESTAMP '{at}');"
        )
        applied.append(path.name)
    return applied
