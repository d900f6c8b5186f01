"""Every warehouse session has a statement timeout; a statement that runs past it is a
transient failure (the data stays staged), never a hang."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jankycron.errors import WarehouseUnavailable
from jankycron.load.duckdb import DuckDBWarehouse
from jankycron.load.postgres import PostgresWarehouse


def test_postgres_sessions_set_the_statement_timeout(pg_url: str) -> None:
    wh = PostgresWarehouse(pg_url, statement_timeout=2.5)
    try:
        assert wh.query("SHOW statement_timeout") == [("2500ms",)]
        assert wh.query("SHOW TimeZone") == [("UTC",)]
        started = time.monotonic()
        with pytest.raises(WarehouseUnavailable, match="statement timeout"):
            wh.query("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 15
    finally:
        wh.close()


def test_duckdb_statements_are_interrupted_at_the_timeout(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(f"duckdb:///{tmp_path / 'w.duckdb'}", statement_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseUnavailable, match="timed out"):
            wh.query("SELECT COUNT(*) FROM range(1000000000000) a")
        assert time.monotonic() - started < 15
        assert wh.query("SELECT 42") == [(42,)]  # the connection is usable afterwards
    finally:
        wh.close()
