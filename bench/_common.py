"""Helpers the benchmark scripts share (run them from the project root: bench/ is on sys.path)."""

from __future__ import annotations

import psycopg2


def pg(url: str, sql: str) -> list[tuple]:
    """Run one statement in autocommit; the rows, if it returns any."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
