"""Every staged object is checked when it is read; a damaged batch is quarantined.

A job's batches are staged (not loaded), one of them is damaged in the store as a disk, a
person or a bad copy might damage it, then the real ``jankycron load`` CLI runs: the damaged
batch becomes ``corrupt`` with one line naming the object, nothing of it lands, the table's
other batch loads in the same load, another table goes on, one alert goes out, and history,
``load --dry-run``, the status page and ``/metrics`` show it. A rerun of the interval
supersedes it and loads.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import Workspace, create_table, http_server, warehouse_rows
from test_redshift import rs  # noqa: F401 - the Redshift stand-in fixture

from jankycron.config import Settings
from jankycron.discovery import discover
from jankycron.runner import Context, load_tables, run_job
from jankycron.staging import keys_of, read_manifest
from jankycron.store import Store, open_store
from jankycron.web import create_app

RECORDS = 3000
DAY, OTHER_DAY = date(2026, 11, 20), date(2026, 11, 21)

JOB = '''
from datetime import date
from jankycron import job

@job(schedule="0 3 * * *", table="orders", key="id", alert=["{hook}"]{extra})
def orders(run):
    day = run.interval.start.date().toordinal() - date(2026, 1, 1).toordinal()
    for i in range({records}):
        yield {{"id": day * 100000 + i, "name": f"order {{i}}"}}
'''

OTHER = '''
from jankycron import job

@job(schedule="0 3 * * *", table="other", key="id")
def other(run):
    for i in range(10):
        yield {"id": i}
'''


class Hook:
    """A real HTTP receiver for the job's webhook alert route."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.url = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                hook.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    with http_server(h.handler()) as url:
        h.url = f"{url}/hook"
        yield h


def setup(ws: Workspace, hook: Hook, extra: str = "") -> None:
    ws.env["JANKYCRON_PART_SIZE"] = "16KB"  # ~40 bytes a record: several parts per batch
    create_table(ws, "CREATE TABLE orders (id bigint NOT NULL, name varchar(50))")
    create_table(ws, "CREATE TABLE other (id bigint NOT NULL)")
    ws.write_job("orders", JOB.format(hook=hook.url, extra=extra, records=RECORDS))
    ws.write_job("other", OTHER)


def stage(ws: Workspace, job_name: str, day: date) -> dict:
    """Run one interval of a job without loading it (as when the loader is behind)."""
    registry, errors = discover(ws.settings.jobs_path)
    assert not errors
    job = registry.get(job_name)
    ctx = Context(ws.settings)
    try:
        return run_job(ctx, job, job.interval_on(day), load=False)
    finally:
        ctx.close()


def manifest_of(ws: Workspace, run: dict) -> str:
    ctx = Context(ws.settings)
    try:
        (b,) = [b for b in ctx.ledger.pending_batches("orders") if b.run_id == run["run_id"]]
        return b.manifest_key
    finally:
        ctx.close()


def _rewrite_manifest(store: Store, manifest: str, change: Callable[[dict], None]) -> None:
    doc = json.loads(store.get_bytes(manifest))
    change(doc)
    store.put_bytes(manifest, json.dumps(doc).encode())


def _old_style(store: Store, manifest: str, part: str) -> None:
    """A batch staged before the checks existed (no counts or digests), whose part was
    then replaced by a shorter valid gzip."""
    _rewrite_manifest(store, manifest, lambda d: (d.pop("jankycron"),
                                                  [e.pop("meta") for e in d["entries"]]))
    lines = gzip.decompress(store.get_bytes(part)).splitlines(keepends=True)
    store.put_bytes(part, gzip.compress(b"".join(lines[:-5])))


def _outside(ws: Workspace, store: Store, manifest: str, part: str) -> None:
    """The second entry points outside the store root (a file that exists there, full of
    records that must not land)."""
    if ws.env["JANKYCRON_STORE_URL"].startswith("file:"):
        (ws.path / "x.ndjson.gz").write_bytes(store.get_bytes(part))
    _rewrite_manifest(store, manifest, lambda d: d["entries"][1].update(
        url=store.url_root + "/../x.ndjson.gz"))


def _move_a_line(doc: dict) -> None:
    doc["jankycron"]["parts"][1]["lines"] -= 1
    doc["jankycron"]["parts"][2]["lines"] += 1


def _lines(store: Store, part: str) -> list[bytes]:
    return gzip.decompress(store.get_bytes(part)).splitlines(keepends=True)


# name -> (how the batch is damaged, what the error says besides the object's key)
DAMAGE: dict[str, tuple[Callable[[Workspace, Store, str, str], None], str, str]] = {
    "shorter-valid-gzip": (lambda ws, s, m, p: s.put_bytes(
        p, gzip.compress(b"".join(_lines(s, p)[:-100]))), "part", "staging wrote"),
    "extra-line": (lambda ws, s, m, p: s.put_bytes(
        p, gzip.compress(b"".join(_lines(s, p)) + b'{"id":-1,"name":"extra"}\n')), "part",
        "staging wrote"),
    "truncated-gzip": (lambda ws, s, m, p: s.put_bytes(p, s.get_bytes(p)[:-40]), "part",
                       "staging wrote"),
    "garbage": (lambda ws, s, m, p: s.put_bytes(p, os.urandom(len(s.get_bytes(p)))), "part",
                "SHA-256"),
    "missing-part": (lambda ws, s, m, p: s.delete(p), "part", "missing"),
    "missing-manifest": (lambda ws, s, m, p: s.delete(m), "manifest", "missing"),
    "unparsable-manifest": (lambda ws, s, m, p: s.put_bytes(m, b'{"entries": [{"url": '),
                            "manifest", "not a valid manifest"),
    "outside-the-store": (_outside, "manifest", "outside the store"),
    "old-manifest-short-part": (lambda ws, s, m, p: _old_style(s, m, p), "manifest",
                                "the ledger recorded 3,000"),
    "another-root": (lambda ws, s, m, p: _rewrite_manifest(s, m, lambda d: d["entries"][1].update(
        url="file:///etc/hostname" if s.url_root.startswith("file:") else
        "s3://another-bucket/x.ndjson.gz")), "manifest", "outside the store"),
    # The digests match, but the manifest's counts were moved from one part to the next.
    "manifest-counts-moved": (lambda ws, s, m, p: _rewrite_manifest(s, m, _move_a_line),
                              "part", "staging wrote"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_batch_is_quarantined_and_the_others_load(ws: Workspace, hook: Hook,
                                                           damage: str) -> None:
    setup(ws, hook)
    bad = stage(ws, "orders", DAY)
    good = stage(ws, "orders", OTHER_DAY)
    stage(ws, "other", DAY)
    store = open_store(ws.settings)
    manifest = manifest_of(ws, bad)
    parts = read_manifest(store, manifest)
    assert len(parts) >= 3
    spoil, named, says = DAMAGE[damage]
    spoil(ws, store, manifest, parts[1])
    key = manifest if named == "manifest" else parts[1]
    if named == "manifest" and "old" not in damage:  # the plan sees it (not the parts)
        [plan] = ws.cli_json("load", "--dry-run", "orders")
        [damaged] = [b for b in plan["batches"] if b["damaged"]]
        assert damaged["id"].startswith(bad["run_id"]) and key in damaged["damaged"]

    out = ws.cli("load")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    [error] = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert key in error and says in error and "1 batch(es) quarantined" in error
    # Nothing of the damaged batch landed; the table's other batch and the other table did.
    assert warehouse_rows(ws, "SELECT count(*), min(id) FROM orders") == [
        (RECORDS, (OTHER_DAY.toordinal() - date(2026, 1, 1).toordinal()) * 100000)]
    assert warehouse_rows(ws, "SELECT count(*) FROM other") == [(10,)]

    runs = {r["run_id"]: r for r in ws.cli_json("history")}
    assert runs[bad["run_id"]]["status"] == "failed"
    assert key in runs[bad["run_id"]]["error"] and says in runs[bad["run_id"]]["error"]
    assert runs[bad["run_id"]]["rows_loaded"] == 0
    assert (runs[good["run_id"]]["status"], runs[good["run_id"]]["rows_loaded"]) == (
        "success", RECORDS)

    # Not pending any more: the next load does not try it again, nor alert again.
    again = ws.cli("load")
    assert again.returncode == 0 and "nothing pending" in again.stdout, again.stderr
    [alert] = hook.posts
    assert alert["event"] == "batch_corrupt" and alert["run_id"] == bad["run_id"]
    assert key in alert["text"] and "orders" in alert["summary"]

    web = create_app(Settings.from_env({**ws.env, "JANKYCRON_LOCK_URL": "off"})).test_client()
    page = web.get("/loader").get_data(as_text=True)
    assert "1 quarantined" in page and key in page
    assert 'jankycron_corrupt_batches{table="orders"} 1.0' in web.get("/metrics").get_data(
        as_text=True)
    grid = web.get("/jobs/orders").get_data(as_text=True)
    assert key in grid  # the failed interval's error

    [plan] = ws.cli_json("load", "--dry-run", "orders")
    [q] = plan["quarantined"]
    assert q["run_id"] == bad["run_id"] and key in q["error"]
    dry = ws.cli("load", "--dry-run", "orders", check=True)
    assert "quarantined" in dry.stdout and key in dry.stdout

    # A rerun of the interval supersedes the damaged batch and loads.
    ws.cli("run", "orders", "--date", DAY.isoformat(), "--local", check=True)
    assert warehouse_rows(ws, "SELECT count(*) FROM orders") == [(2 * RECORDS,)]
    runs = {r["run_id"]: r for r in ws.cli_json("history")}
    assert runs[bad["run_id"]]["status"] == "superseded"
    [plan] = ws.cli_json("load", "--dry-run", "orders") or [{"quarantined": []}]
    assert plan["quarantined"] == []
    if damage == "outside-the-store" and (ws.path / "x.ndjson.gz").exists():
        assert "x.ndjson.gz" in runs[bad["run_id"]]["error"]


# ------------------------------------------------------------------------ Redshift
RS_DAMAGE = {
    # The same size, other bytes: only the ETag (the staged MD5) tells.
    "same-size-garbage": (lambda ws, s, m, p: s.put_bytes(p, os.urandom(len(s.get_bytes(p)))),
                          "part", "ETag"),
    "missing-part": (lambda ws, s, m, p: s.delete(p), "part", "missing"),
    # No recorded sizes or digests: the lines the COPY loaded are counted against the ledger.
    "old-manifest-short-part": (lambda ws, s, m, p: _old_style(s, m, p), "manifest",
                                "COPY loaded 2,995 lines"),
}


@pytest.mark.parametrize("damage", list(RS_DAMAGE))
def test_redshift_quarantines_a_damaged_batch_it_never_reads(rs, damage: str) -> None:  # noqa: F811
    """Through the Redshift stand-in (tests/redshift_standin.py), whose COPY reads the parts
    from the S3 emulator itself: the loader checks them with HEAD requests and counts what
    the COPY loaded."""
    rs.rows("CREATE TABLE orders (id bigint NOT NULL, name varchar(50))")
    rs.ws.env["JANKYCRON_PART_SIZE"] = "16KB"
    rs.ws.write_job("orders", JOB.format(hook="http://127.0.0.1:9/hook", extra="",
                                         records=RECORDS))
    bad, ctx = rs.run("orders", DAY, load=False)
    good, _ = rs.run("orders", OTHER_DAY, load=False)
    manifest = manifest_of(rs.ws, bad)
    parts = read_manifest(ctx.store, manifest)
    spoil, named, says = RS_DAMAGE[damage]
    spoil(rs.ws, ctx.store, manifest, parts[1])
    ctx.jobs = None  # no job to alert: the quarantine is logged instead
    [result] = load_tables(ctx, {"orders": ("id",)})
    key = manifest if named == "manifest" else parts[1]
    [reason] = result.quarantined
    assert key in reason and says in reason
    assert rs.rows("SELECT count(*) FROM orders") == [(RECORDS,)]
    assert ctx.ledger.run(bad["run_id"])["status"] == "failed"
    assert ctx.ledger.run(good["run_id"])["status"] == "success"
    ctx.close()


def test_a_stream_drain_batch_says_its_source_cannot_be_re_read_and_is_kept(
        duck_ws: Workspace, hook: Hook) -> None:
    """A job whose reruns do not replace (a stream drain): a rerun cannot bring the damaged
    records back, so the error says so, the batch stays quarantined and its objects stay."""
    ws = duck_ws
    setup(ws, hook, extra=", rerun_replaces=False")
    bad = stage(ws, "orders", DAY)
    store = open_store(ws.settings)
    manifest = manifest_of(ws, bad)
    parts = read_manifest(store, manifest)
    store.put_bytes(parts[0], b"not a gzip at all")
    out = ws.cli("load")
    assert out.returncode == 1 and "cannot be re-read" in out.stderr, out.stderr
    ws.cli("run", "orders", "--date", DAY.isoformat(), "--local", check=True)
    runs = {r["run_id"]: r for r in ws.cli_json("history")}
    assert runs[bad["run_id"]]["status"] == "failed"
    assert "cannot be re-read" in runs[bad["run_id"]]["error"]
    [plan] = ws.cli_json("load", "--dry-run", "orders")
    assert [q["run_id"] for q in plan["quarantined"]] == [bad["run_id"]]
    assert all(store.exists(p) for p in parts) and store.exists(manifest)
    assert len(hook.posts) == 1


SELF_HARM = '''
import os
from pathlib import Path
from jankycron import job
from jankycron.staging import batch_prefix

@job(schedule="0 3 * * *", table="orders", key="id", alert=["{hook}"])
def orders(run):
    for i in range(3000):
        if i == 2500:  # the first part is in the store by now: damage it, as a disk might
            root = Path(os.environ["JANKYCRON_STORE_URL"][len("file://"):])
            prefix = batch_prefix("orders", "orders", run.interval, run.run_id)
            (root / prefix / "part-00001.ndjson.gz").write_bytes(b"not a gzip")
        yield {{"id": i, "name": f"order {{i:040d}}"}}
'''


def test_a_run_whose_own_batch_is_damaged_fails_naming_the_object(duck_ws: Workspace,
                                                                   hook: Hook) -> None:
    """``run --local`` stages and loads in one go: a part damaged in between is caught, the
    run fails (exit 1, one line), nothing of it lands."""
    ws = duck_ws
    setup(ws, hook)
    ws.write_job("orders", SELF_HARM.format(hook=hook.url))
    out = ws.cli("run", "orders", "--date", DAY.isoformat(), "--local")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    [error] = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert "part-00001.ndjson.gz" in error and "staging wrote" in error
    assert warehouse_rows(ws, "SELECT count(*) FROM orders") == [(0,)]
    [run] = ws.cli_json("history")
    assert run["status"] == "failed" and run["rows_loaded"] == 0
    assert [p["event"] for p in hook.posts] == ["batch_corrupt"]


def _strip_checks(doc: dict) -> None:
    doc.pop("jankycron")
    for e in doc["entries"]:
        e.pop("meta")


def test_a_batch_staged_before_the_checks_still_loads(ws: Workspace, hook: Hook) -> None:
    """A manifest without counts or digests (staged by an older jankycron) loads as before."""
    setup(ws, hook)
    run = stage(ws, "orders", DAY)
    store = open_store(ws.settings)
    manifest = manifest_of(ws, run)
    _rewrite_manifest(store, manifest, _strip_checks)
    assert "jankycron" not in json.loads(store.get_bytes(manifest))
    ws.cli("load", check=True)
    assert warehouse_rows(ws, "SELECT count(*) FROM orders") == [(RECORDS,)]
    [row] = ws.cli_json("history")
    assert (row["status"], row["rows_loaded"]) == ("success", RECORDS)
    assert hook.posts == []


def test_a_damaged_key_file_only_sends_the_load_the_validated_way(pg_ws: Workspace,
                                                                  hook: Hook) -> None:
    """Key files (PostgreSQL's direct loads) are not part of the batch: the validated load
    does not read them, so a damaged one is no reason to quarantine."""
    ws = pg_ws
    setup(ws, hook)
    run = stage(ws, "orders", DAY)
    store = open_store(ws.settings)
    part = read_manifest(store, manifest_of(ws, run))[1]
    store.put_bytes(keys_of(part), store.get_bytes(keys_of(part))[:-30])  # truncated
    ws.cli("load", check=True)
    assert warehouse_rows(ws, "SELECT count(*) FROM orders") == [(RECORDS,)]
    assert hook.posts == []
