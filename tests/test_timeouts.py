"""Every warehouse session has a statement timeout; a statement that runs past it is a
transient failure (the data stays staged), never a hang. A `--local` run keeps its job's
timeout too."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Workspace, create_table, warehouse_rows

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


def test_a_local_run_past_its_jobs_timeout_fails_timed_out(duck_ws: Workspace) -> None:
    """`run --local` enforces the job's timeout as the workers do: one line, exit 1, and the
    run is failed in the history with nothing loaded."""
    create_table(duck_ws, "CREATE TABLE ticks (id int NOT NULL)")
    duck_ws.write_job("sleepy", '''
        import time
        from jankycron import job

        @job(schedule="0 0 * * *", table="ticks", key="id", timeout="1s")
        def sleepy(run):
            yield {"id": 1}
            time.sleep(30)
            yield {"id": 2}
    ''')
    started = time.monotonic()
    proc = duck_ws.cli("run", "sleepy", "--date", "2026-11-20", "--local")
    assert time.monotonic() - started < 25  # stopped at the timeout, not after the sleep
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("error: timed out after 1s "
                                                    "(the job's timeout)")
    [run] = duck_ws.cli_json("history")
    assert (run["status"], run["error"]) == ("failed", "timed out after 1s (the job's timeout)")
    assert warehouse_rows(duck_ws, "SELECT count(*) FROM ticks") == [(0,)]
