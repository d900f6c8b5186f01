"""Loader benchmark: jankycron's load step alone against a raw ``COPY FROM STDIN`` of a CSV.

1. Load-step throughput. N synthetic records (bigint id, uuid, numeric(12,2) amount,
   timestamptz, ~100-byte varchar) are staged ONCE per measurement by a job file in a temp jobs
   folder, with ``run_job(..., load=False)``, into a fresh local ``file://`` store and a fresh
   SQLite ledger (staging is not timed). Then only ``Loader.load_table`` is timed: reading the
   gzipped NDJSON parts, COPY into ``raw``, validation into ``stage`` and the merge into the
   (truncated) target table. The baseline is one psycopg2 ``COPY ... FROM STDIN (FORMAT csv)``
   of the same rows, from a CSV file written beforehand, into an identical empty table; only
   the COPY is timed. The order alternates between repeats; a CHECKPOINT precedes each timing.
   The ratio printed is load-step rows/s / raw COPY rows/s (target: >= 0.5).
2. Bisection cost. k = 0, 1, 10, 100 bad records (a non-integer in an int column) at random
   positions among ``--bisect-n`` records: validations (``LoadResult.validations``), seconds
   of ``load_table``, rows loaded and rejected (which must add up to n).

Row counts are checked after every load (and the two tables compared row by row); a mismatch
exits non-zero. PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth; ``JANKYCRON_TEST_PG``
overrides) gets a scratch database, dropped at exit. Run it from the project root:

    .venv/bin/python bench/bench_loader.py [--n 1000000] [--repeat 3] [--bisect-n 100000]

``-v`` also shows the loader's own log: seconds spent reading parts, validating and merging.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import psycopg2
from _common import pg

from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.runner import Context, run_job

PG_ADMIN = os.environ.get("JANKYCRON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
DAY = date(2026, 11, 20)
COLUMNS = "id, ref, amount, created_at, payload"

# The record generators: a helper module of the jobs folder, and exec'd here for the CSV.
GENERATOR = '''
import json, random, uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

START = datetime(2026, 11, 20, tzinfo=timezone.utc)
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def payload(i):  # ~100 bytes
    return json.dumps({"seq": i, "tag": WORDS[i % 8], "score": i % 977,
                       "flags": [i % 2 == 0, i % 3 == 0], "note": "x" * 24})


def records(n):
    rng = random.Random(12345)
    for i in range(n):
        yield {"id": i + 1, "ref": uuid.UUID(int=rng.getrandbits(128), version=4),
               "amount": Decimal(rng.randint(1, 9_999_999)).scaleb(-2),
               "created_at": START + timedelta(seconds=i % 86_400, microseconds=i % 1_000_000),
               "payload": payload(i)}


def bad_records(n, k):
    bad = set(random.Random(k).sample(range(n), k))
    for i in range(n):
        yield {"id": i + 1, "qty": "x" if i in bad else i % 1000, "payload": payload(i)}
'''

JOB_FILE = '''import os
from jankycron import job
from _bench_gen import bad_records, records


@job(schedule="0 0 * * *", table="{name}", key="id")
def {name}(run):
    yield from {body}
'''
JOBS = {  # job name = its table
    "bench_load": 'records(int(os.environ["BENCH_N"]))',
    "bench_bad": 'bad_records(int(os.environ["BENCH_N"]), int(os.environ["BENCH_K"]))',
}

LOAD_DDL = ("CREATE TABLE {name} (id bigint NOT NULL, ref uuid, amount numeric(12,2), "
            "created_at timestamptz, payload varchar(200))")
BAD_DDL = "CREATE TABLE bench_bad (id bigint NOT NULL, qty int, payload varchar(200))"



class Bench:
    def __init__(self, work: Path, db_url: str):
        self.work, self.db_url, self.stages = work, db_url, 0
        jobs = work / "jobs"
        jobs.mkdir()
        (jobs / "_bench_gen.py").write_text(GENERATOR)
        for name, body in JOBS.items():
            (jobs / f"{name}.py").write_text(JOB_FILE.format(name=name, body=body))
        registry, errors = discover(jobs)
        if errors:
            sys.exit(f"job files: {errors}")
        self.jobs = {j.name: j for j in registry}

    def count(self, table: str) -> int:
        return pg(self.db_url, f"SELECT count(*) FROM {table}")[0][0]

    def fresh(self, table: str) -> None:
        pg(self.db_url, f"TRUNCATE {table}")
        pg(self.db_url, "CHECKPOINT")  # no checkpoint of the previous run inside a timing

    def load_step(self, table: str, n: int, k: int = 0):
        """Stage n records (k bad) into a fresh store and ledger; time load_table alone."""
        self.stages += 1
        os.environ.update(BENCH_N=str(n), BENCH_K=str(k))  # read by the job's generator
        store = self.work / f"store{self.stages}"
        ctx = Context(Settings.from_env({
            "JANKYCRON_JOBS_PATH": str(self.work / "jobs"),
            "JANKYCRON_STORE_URL": store.as_uri(),
            "JANKYCRON_STATE_URL": f"sqlite:///{self.work / f'state{self.stages}.db'}",
            "JANKYCRON_WAREHOUSE_URL": self.db_url,
        }), progress=lambda _: None)
        try:
            job = self.jobs[table]
            run = run_job(ctx, job, job.interval_on(DAY), load=False)
            if run["rows_staged"] != n:
                sys.exit(f"staged {run['rows_staged']:,} of {n:,} records")
            self.fresh(table)
            t0 = time.perf_counter()
            result = ctx.loader.load_table(table, ("id",))
            seconds = time.perf_counter() - t0
        finally:
            ctx.close()
            shutil.rmtree(store, ignore_errors=True)
        got = self.count(table)
        if got != result.rows_loaded:
            sys.exit(f"{table} holds {got:,} rows, the loader reported {result.rows_loaded:,}")
        return seconds, result

    def raw_copy(self, csv_path: Path, n: int) -> float:
        self.fresh("bench_copy")
        conn = psycopg2.connect(self.db_url)
        conn.autocommit = True
        try:
            with open(csv_path, "rb") as f, conn.cursor() as cur:
                t0 = time.perf_counter()
                cur.copy_expert(f"COPY bench_copy ({COLUMNS}) FROM STDIN WITH (FORMAT csv)", f,
                                size=1 << 20)
                seconds = time.perf_counter() - t0
        finally:
            conn.close()
        if (got := self.count("bench_copy")) != n:
            sys.exit(f"bench_copy holds {got:,} rows, expected {n:,}")
        return seconds


def write_csv(path: Path, n: int) -> None:
    gen: dict = {}
    exec(GENERATOR, gen)
    with open(path, "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        for r in gen["records"](n):
            out.writerow((r["id"], r["ref"], r["amount"], r["created_at"].isoformat(),
                          r["payload"]))


def throughput(bench: Bench, n: int, repeat: int) -> None:
    print(f"1. load step vs raw COPY, N={n:,} (local file:// store, SQLite ledger; staging and "
          "CSV writing not timed)", flush=True)
    csv_path = bench.work / "rows.csv"
    write_csv(csv_path, n)
    ratios = []
    for r in range(repeat):
        order = ["load", "copy"] if r % 2 == 0 else ["copy", "load"]
        secs = {}
        for which in order:
            if which == "load":
                secs[which], res = bench.load_step("bench_load", n)
                if res.rows_loaded != n or res.rows_rejected:
                    sys.exit(f"load step: {res.rows_loaded:,} loaded, {res.rows_rejected:,} "
                             f"rejected of {n:,}")
                extra = ("  (direct)" if res.direct
                         else f"  (validated: {res.validations} validation(s))")
            else:
                secs[which], extra = bench.raw_copy(csv_path, n), ""
            label = "load_table" if which == "load" else "raw COPY"
            print(f"  repeat {r + 1}  {label:<10} {secs[which]:7.2f} s  "
                  f"{n / secs[which]:>10,.0f} rows/s{extra}", flush=True)
        diff = pg(bench.db_url, f"SELECT count(*) FROM (SELECT {COLUMNS} FROM bench_load "
                                f"EXCEPT ALL SELECT {COLUMNS} FROM bench_copy) d")[0][0]
        if diff:
            sys.exit(f"the load step and COPY loaded different data: {diff:,} rows differ")
        ratios.append(secs["copy"] / secs["load"])
        print(f"  repeat {r + 1}  ratio load-step / raw COPY throughput = {ratios[-1]:.2f}",
              flush=True)
    print(f"  median ratio {statistics.median(ratios):.2f} (min {min(ratios):.2f}, "
          f"max {max(ratios):.2f}; target >= 0.5)", flush=True)


def bisection(bench: Bench, n: int) -> bool:
    print(f"2. bisection cost, {n:,} records, k bad (a non-integer in an int column)")
    print(f"  {'k':>4} {'validations':>12} {'seconds':>8} {'loaded':>9} {'rejected':>9}  check",
          flush=True)
    ok = True
    for k in (0, 1, 10, 100):
        seconds, res = bench.load_step("bench_bad", n, k)
        good = res.rows_loaded + res.rows_rejected == n and res.rows_rejected == k
        ok &= good
        print(f"  {k:>4} {res.validations:>12} {seconds:>8.2f} {res.rows_loaded:>9,} "
              f"{res.rows_rejected:>9,}  {'ok' if good else 'MISMATCH'}", flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="rows for part 1 (1000000)")
    ap.add_argument("--repeat", type=int, default=1, help="load/COPY pairs in part 1 (1)")
    ap.add_argument("--bisect-n", type=int, default=100_000, help="rows for part 2 (100000)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the loader's log")
    args = ap.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="    %(name)s: %(message)s")
    db = f"jc_bench_{uuid.uuid4().hex[:10]}"
    db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + db
    pg(PG_ADMIN, f"CREATE DATABASE {db}")
    try:
        for ddl in (LOAD_DDL.format(name="bench_load"), LOAD_DDL.format(name="bench_copy"),
                    BAD_DDL):
            pg(db_url, ddl)
        with tempfile.TemporaryDirectory(prefix="jc-bench-") as tmp:
            bench = Bench(Path(tmp), db_url)
            throughput(bench, args.n, args.repeat)
            ok = bisection(bench, args.bisect_n)
    finally:
        pg(PG_ADMIN, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    if not ok:
        sys.exit("loaded + rejected != n (or rejected != k) in the bisection table")


if __name__ == "__main__":
    main()
