"""A job's records arrive in the warehouse exactly as yielded, on both backends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from conftest import Workspace, create_table, warehouse_rows

TABLE = """CREATE TABLE exact (
    id bigint NOT NULL,
    name varchar(100),
    amount numeric(20,6),
    happened_at timestamptz,
    local_at timestamp,
    day date,
    ok boolean,
    ratio double precision,
    payload varchar(500)
)"""

JOB = '''
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from jankycron import job

@job(schedule="0 3 * * *", table="exact", key="id")
def exact(run):
    plus2 = timezone(timedelta(hours=2))
    yield {"id": 1, "name": "Zoë Ångström 渡辺 🚀", "amount": Decimal("12345678901234.123456"),
           "happened_at": datetime(2026, 11, 25, 4, 30, 15, 123456, tzinfo=plus2),
           "local_at": datetime(2026, 11, 25, 4, 30, 15, tzinfo=plus2),
           "day": date(2026, 2, 28), "ok": True, "ratio": 0.1, "payload": {"a": [1, "x"]}}
    yield {"id": 2, "name": None, "amount": None, "happened_at": None, "local_at": None,
           "day": None, "ok": None, "ratio": None, "payload": None}
    yield {"id": 3, "name": 'quote " backslash \\\\ newline \\n tab \\t', "amount": Decimal("-0.5"),
           "ok": False}
'''


def test_records_round_trip_exactly(ws: Workspace) -> None:
    """Unicode, exact decimals, timestamps with offsets and NULLs come back unchanged."""
    create_table(ws, TABLE)
    ws.write_job("exact", JOB)
    ws.cli("run", "exact", "--date", "2026-11-24", "--local", check=True)

    rows = warehouse_rows(ws, "SELECT id, name, amount, happened_at, local_at, day, ok, ratio, "
                              "payload FROM exact ORDER BY id")
    assert len(rows) == 3
    one, two, three = rows
    plus2 = timezone(timedelta(hours=2))
    assert one[1] == "Zoë Ångström 渡辺 🚀"
    assert one[2] == Decimal("12345678901234.123456")
    # The same instant, whatever zone the driver returns it in.
    assert one[3] == datetime(2026, 11, 25, 4, 30, 15, 123456, tzinfo=plus2)
    # timestamp without time zone holds UTC: 04:30 at +02:00 is 02:30 UTC.
    assert one[4] == datetime(2026, 11, 25, 2, 30, 15)
    assert one[5] == date(2026, 2, 28)
    assert one[6] is True and one[7] == 0.1
    assert one[8].replace(" ", "") == '{"a":[1,"x"]}'
    assert two[1:] == (None,) * 8
    assert three[1] == 'quote " backslash \\ newline \n tab \t'
    assert three[2] == Decimal("-0.5") and three[6] is False
    assert three[3] is None  # missing keys load as NULL


def test_history_reports_the_run(ws: Workspace) -> None:
    create_table(ws, TABLE)
    ws.write_job("exact", JOB)
    ws.cli("run", "exact", "--date", "2026-11-24", "--local", check=True)
    (run,) = ws.cli_json("history")
    assert run["job"] == "exact"
    assert (run["start"], run["end"]) == ("2026-11-24T03:00:00Z", "2026-11-25T03:00:00Z")
    assert run["status"] == "success"
    assert (run["rows_staged"], run["rows_loaded"], run["rows_rejected"]) == (3, 3, 0)
    started = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00"))
    assert datetime.now(UTC) - started < timedelta(minutes=5)
    assert run["error"] is None
