"""Column names come from the warehouse and record keys from jobs: whatever they contain, they
reach SQL only quoted (as identifiers or string literals), never as SQL text."""

from __future__ import annotations

from decimal import Decimal

from conftest import Workspace, create_table, warehouse_rows

NASTY = 'we"ird col\'; DROP TABLE odd; --'


def test_odd_column_names_are_quoted_not_executed(ws: Workspace) -> None:
    quoted = '"' + NASTY.replace('"', '""') + '"'
    create_table(ws, f'CREATE TABLE odd (id int NOT NULL, {quoted} varchar(40), '
                     '"Mixed Case" numeric(6,2))')
    ws.write_job("odd", f'''
        from decimal import Decimal
        from jankycron import job

        @job(schedule="0 0 * * *", table="odd", key="id")
        def odd(run):
            yield {{"id": 1, {NASTY!r}: "kept", "Mixed Case": Decimal("1.50")}}
            yield {{"id": 2, {NASTY!r}: None, "Mixed Case": Decimal("1.555")}}
    ''')
    ws.cli("run", "odd", "--date", "2026-11-20", "--local", check=True)
    assert warehouse_rows(ws, f'SELECT id, {quoted}, "Mixed Case" FROM odd') == [
        (1, "kept", Decimal("1.50"))]
    (letter,) = ws.cli_json("deadletters")
    assert letter["reason"].startswith("column Mixed Case: ")
