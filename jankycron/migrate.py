"""Warehouse DDL migrations: ``warehouse/NNNN_name.sql`` files applied once each, in order.

What ran is recorded in the warehouse itself (``jankycron_migrations``), in the same
transaction as the migration, so a migration is applied exactly once per warehouse.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError
from .load.warehouse import Warehouse, quote_literal

TABLE = "jankycron_migrations"
_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")


def pending(warehouse: Warehouse, folder: str | Path) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"migrations folder {folder} does not exist")
    files = sorted(p for p in path.glob("*.sql"))
    bad = [p.name for p in files if not _NAME.match(p.name)]
    if bad:
        raise ConfigError(f"migration file names must look like 0001_name.sql: {', '.join(bad)}")
    warehouse.execute_script(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (name varchar(200) PRIMARY KEY, "
        "applied_at timestamp NOT NULL)"
    )
    done = {r[0] for r in warehouse.query(f"SELECT name FROM {TABLE}")}
    return [p for p in files if p.name not in done]


def apply(warehouse: Warehouse, folder: str | Path) -> list[str]:
    """Apply every pending migration; returns the names applied."""
    applied = []
    for path in pending(warehouse, folder):
        warehouse.execute_script(
            path.read_text()
            + f";\nINSERT INTO {TABLE} (name, applied_at) VALUES ({quote_literal(path.name)}, "
            "CURRENT_TIMESTAMP);"
        )
        applied.append(path.name)
    return applied
