"""Warehouse migrations: written for Redshift, applied in their local form to PostgreSQL and
DuckDB, once each; destructive ones refused unless the operator allows them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, Workspace, warehouse_rows

from jankycron.migrate import destructive, local_form

BUNDLED = ROOT / "warehouse"


def test_local_form_drops_redshift_attributes_and_maps_super() -> None:
    redshift = """CREATE TABLE IF NOT EXISTS t (
    id BIGINT NOT NULL ENCODE az64 DISTKEY,
    at TIMESTAMP NOT NULL ENCODE raw SORTKEY,
    props SUPER,
    note VARCHAR(MAX) ENCODE zstd
)
DISTSTYLE KEY DISTKEY (id) COMPOUND SORTKEY (at, id) BACKUP NO;"""
    assert local_form(redshift, "postgresql") == """CREATE TABLE IF NOT EXISTS t (
    id BIGINT NOT NULL,
    at TIMESTAMP NOT NULL,
    props jsonb,
    note VARCHAR(65535)
);"""
    assert "props JSON," in local_form(redshift, "duckdb")
    assert local_form(redshift, "redshift") == redshift


def _tables(ws: Workspace) -> set[str]:
    rows = warehouse_rows(ws, "SELECT table_name FROM information_schema.tables WHERE "
                              "table_schema IN ('public', 'main') "
                              "AND left(table_name, 9) <> 'jankycron'")
    return {r[0] for r in rows}


def test_bundled_migrations_apply_once_to_both_backends(ws: Workspace) -> None:
    proc = ws.cli("migrate", "--path", str(BUNDLED), check=True)
    names = sorted(p.name for p in BUNDLED.glob("*.sql"))
    assert proc.stdout.split() == [w for n in names for w in ("applied", n)]
    created = {m for p in BUNDLED.glob("*.sql")
               for m in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", p.read_text())}
    assert created and created <= _tables(ws)
    again = ws.cli("migrate", "--path", str(BUNDLED), check=True)
    assert again.stdout.strip() == "warehouse is up to date"
    assert warehouse_rows(ws, "SELECT count(*) FROM jankycron_migrations") == [(len(names),)]


def test_a_drop_is_refused_and_nothing_pending_is_applied(duck_ws: Workspace,
                                                          tmp_path: Path) -> None:
    folder = tmp_path / "wh"
    folder.mkdir()
    (folder / "0001_t.sql").write_text("CREATE TABLE t (id bigint NOT NULL ENCODE az64);")
    (folder / "0002_u.sql").write_text("CREATE TABLE u (id int);")
    (folder / "0003_cleanup.sql").write_text("-- drop the old table (was: DROP TABLE t)\n"
                                             "\n  drop   table u;\n")
    proc = duck_ws.cli("migrate", "--path", str(folder))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: refusing a destructive migration (0003_cleanup.sql line 3: DROP TABLE); "
        "nothing applied; check it, then rerun with --allow-destructive")
    assert _tables(duck_ws) == set()
    proc = duck_ws.cli("migrate", "--path", str(folder), "--allow-destructive", check=True)
    assert proc.stdout.split()[1::2] == ["0001_t.sql", "0002_u.sql", "0003_cleanup.sql"]
    assert _tables(duck_ws) == {"t"}


@pytest.mark.parametrize("sql", ["TRUNCATE t", "DELETE FROM t WHERE id < 3",
                                 "ALTER TABLE t DROP COLUMN x", "DROP VIEW v"])
def test_every_destructive_form_is_found(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "0001_x.sql"
    path.write_text(f"CREATE TABLE t (id int);\n{sql};\n")
    assert [d.line for d in destructive(path)] == [2]


def test_dry_run_prints_the_local_form_without_applying(duck_ws: Workspace,
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "wh"
    shutil.copytree(BUNDLED, folder)
    proc = duck_ws.cli("migrate", "--path", str(folder), "--dry-run", check=True)
    assert "-- 0001_example_orders.sql" in proc.stdout and "CREATE TABLE" in proc.stdout
    assert "ENCODE" not in proc.stdout and "SORTKEY" not in proc.stdout
    assert _tables(duck_ws) == set()


def test_bundled_ddl_follows_the_redshift_rules() -> None:
    """DISTKEY on a NOT NULL column or DISTSTYLE, a SORTKEY, ENCODE on every column, no
    VARCHAR(MAX) and no bare VARCHAR (Redshift reads it as VARCHAR(256))."""
    for path in BUNDLED.glob("*.sql"):
        code = re.sub(r"--[^\n]*", "", path.read_text())
        for table, body, attrs in re.findall(
                r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\)\s*([^;]*);", code, re.S):
            where = f"{path.name} {table}"
            assert "SORTKEY" in attrs, where
            dist = re.search(r"DISTKEY \((\w+)\)", attrs)
            assert dist or "DISTSTYLE" in attrs, where
            columns = [c.strip() for c in body.strip().split(",\n")]
            if dist:
                col = next(c for c in columns if c.split()[0] == dist.group(1))
                assert "NOT NULL" in col, f"{where}: DISTKEY on a nullable column"
            for c in columns:
                assert "ENCODE" in c, f"{where}: {c}"
                assert not re.search(r"varchar\s*\(\s*max", c, re.I), f"{where}: {c}"
                assert not re.search(r"\bvarchar\b(?!\s*\()", c, re.I), f"{where}: {c}"
