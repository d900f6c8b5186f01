"""A ledger written by the previous release upgrades itself when opened: the columns the
workers need (attempt, task id, heartbeat) are added once, on SQLite and on PostgreSQL, and its
old runs are still there."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import pg_query

from jankycron.ledger import Ledger

OLD_RUNS = """CREATE TABLE jc_runs (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, interval_start TEXT NOT NULL,
    interval_end TEXT NOT NULL, status TEXT NOT NULL,
    rows_extracted INTEGER NOT NULL DEFAULT 0, rows_staged INTEGER NOT NULL DEFAULT 0,
    rows_loaded INTEGER NOT NULL DEFAULT 0, rows_rejected INTEGER NOT NULL DEFAULT 0,
    dropped_keys TEXT, started_at TEXT NOT NULL, finished_at TEXT, error TEXT)"""
OLD_ROW = ("INSERT INTO jc_runs (id, job, interval_start, interval_end, status, started_at) "
           "VALUES ('20261101T000000000000Z-aaaaaa', 'orders', '2026-11-01T03:00:00Z', "
           "'2026-11-02T03:00:00Z', 'success', '2026-11-02T03:01:00Z')")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_old_ledger_gains_the_new_columns_once(backend: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        conn = sqlite3.connect(tmp_path / "state.db")
        conn.execute(OLD_RUNS)
        conn.execute(OLD_ROW)
        conn.commit()
        conn.close()
    else:
        url = request.getfixturevalue("pg_url")
        pg_query(url, OLD_RUNS)
        pg_query(url, OLD_ROW)
    for _ in range(2):  # the second open finds nothing to do
        ledger = Ledger(url)
        (old,) = ledger.history("orders")
        assert old["status"] == "success" and old["attempt"] is None
        ledger.close()
    ledger = Ledger(url)
    assert ledger.runs_of_task("no-such-task") == []  # task_id, attempt: there
    assert ledger.stale_runs(datetime.now(UTC)) == []  # heartbeat_at: there
    assert ledger.failed_runs() == []
    ledger.close()
