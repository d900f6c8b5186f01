"""The loader reads a table's columns from the warehouse and caches them; a table or column
that appears, disappears or changes later is picked up without a restart."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import Workspace, create_table, warehouse_rows

from jankycron.discovery import discover
from jankycron.errors import TableNotFound
from jankycron.runner import Context, run_job

JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="late", key="id")
def late(run):
    for i in range(5):
        yield {"id": i, "name": f"n{i}", "extra": i * 10}
'''


def _stage(ctx: Context, ws: Workspace, day: int) -> None:
    registry, _ = discover(ws.jobs)
    job = registry.get("late")
    run_job(ctx, job, job.interval_on(date(2026, 11, day)), load=False)


def test_a_table_created_while_the_loader_runs_is_picked_up(ws: Workspace) -> None:
    ws.write_job("late", JOB)
    ctx = Context(ws.settings, progress=lambda _: None)  # one long-lived loader
    try:
        _stage(ctx, ws, 1)
        with pytest.raises(TableNotFound, match="late"):
            ctx.loader.load_table("late", ("id",))
        assert len(ctx.ledger.pending_batches("late")) == 1  # kept for later
        create_table(ws, "CREATE TABLE late (id int NOT NULL, name varchar(10))")
        result = ctx.loader.load_table("late", ("id",))
        assert (result.rows_loaded, result.dropped_keys) == (5, {"extra": 5})
    finally:
        ctx.close()


def test_a_column_added_after_caching_is_filled_at_once(ws: Workspace) -> None:
    ws.write_job("late", JOB)
    create_table(ws, "CREATE TABLE late (id int NOT NULL, name varchar(10))")
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        _stage(ctx, ws, 1)
        ctx.loader.load_table("late", ("id",))  # caches (id, name): "extra" dropped
        create_table(ws, "ALTER TABLE late ADD COLUMN extra int")
        _stage(ctx, ws, 2)
        result = ctx.loader.load_table("late", ("id",))
        assert result.dropped_keys == {}
        assert warehouse_rows(ws, "SELECT id, extra FROM late ORDER BY id") == [
            (i, i * 10) for i in range(5)]
    finally:
        ctx.close()


def test_a_column_dropped_after_caching_does_not_stop_the_load(ws: Workspace) -> None:
    ws.write_job("late", JOB)
    create_table(ws, "CREATE TABLE late (id int NOT NULL, name varchar(10), extra int)")
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        _stage(ctx, ws, 1)
        ctx.loader.load_table("late", ("id",))
        create_table(ws, "ALTER TABLE late DROP COLUMN name")
        _stage(ctx, ws, 2)
        result = ctx.loader.load_table("late", ("id",))
        assert (result.rows_loaded, result.dropped_keys) == (5, {"name": 5})
        assert warehouse_rows(ws, "SELECT COUNT(*) FROM late") == [(5,)]
    finally:
        ctx.close()
