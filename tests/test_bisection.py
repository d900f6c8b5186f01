"""k bad records among n are isolated with O(k log n) validations, not n."""

from __future__ import annotations

import math
from datetime import date

import pytest
from conftest import Workspace, create_table, warehouse_rows

from jankycron.discovery import discover
from jankycron.runner import Context, run_job

N = 10_000


@pytest.mark.parametrize("k", [1, 3, 50])
def test_bad_records_are_isolated_within_the_log_bound(ws: Workspace, k: int) -> None:
    create_table(ws, "CREATE TABLE nums (id int NOT NULL, v int)")
    ws.write_job("nums", f'''
        import random
        from jankycron import job

        @job(schedule="0 0 * * *", table="nums", key="id")
        def nums(run):
            bad = set(random.Random(7).sample(range({N}), {k}))
            for i in range({N}):
                yield {{"id": i, "v": "x" if i in bad else i}}
    ''')
    registry, _ = discover(ws.jobs)
    job = registry.get("nums")
    ctx = Context(ws.settings, progress=lambda _: None)
    try:
        run_job(ctx, job, job.interval_on(date(2026, 11, 20)), load=False)
        result = ctx.loader.load_table("nums", ("id",))
    finally:
        ctx.close()

    assert result.rows_rejected == k and result.rows_loaded == N - k
    assert warehouse_rows(ws, "SELECT COUNT(*) FROM nums") == [(N - k,)]
    # Each bad record costs at most two validations per level below the point where its path
    # splits from the others': 2k(log2(n/k) + 1), plus the first try of the whole batch.
    bound = 2 * k * (math.ceil(math.log2(N / k)) + 1) + 1
    assert result.validations <= bound, (result.validations, bound)
    assert result.validations < N / 10
