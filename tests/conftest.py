"""Fixtures: real PostgreSQL (a fresh database per test), a real S3 emulator over HTTP (moto's
server in a subprocess), DuckDB files, and helpers to write job files and run the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import psycopg2
import pytest

from jankycron.config import Settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("JANKYCRON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


class TcpProxy:
    """A TCP proxy on a free loopback port in front of ``target`` (host, port), to lose a
    service on demand: ``cut()`` closes every proxied connection (the client reads EOF, as
    after a failover or a reset) and refuses new ones; ``restore()`` listens again on the same
    port. Threads, one pair per connection."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(64)
        srv.settimeout(0.05)
        self._listener = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while self._listener is srv:
            try:
                client, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        srv, self._listener = self._listener, None
        if srv is not None:
            srv.close()
        with self._lock:
            conns = list(self._open)
        for s in conns:
            self._close(s)

    def close(self) -> None:
        self.cut()


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server on a free loopback port while the block runs; yields its root
    URL (``http://127.0.0.1:PORT``). For the local stand-ins of third-party APIs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass
class Served:
    """A running gunicorn: where it answers and, once stopped, what it logged."""

    url: str
    port: int
    output: str = ""


@contextmanager
def gunicorn(cwd: Path, env: dict[str, str], workers: int = 2) -> Iterator[Served]:
    """The web app (``jankycron.web:create_app()``) served by a real gunicorn on a free port
    while the block runs, with ``env`` over this environment; its log must hold no traceback."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
         str(workers), "jankycron.web:create_app()"],
        cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    served = Served(f"http://127.0.0.1:{port}", port)
    try:
        wait_for_port(port)
        yield served
    finally:
        proc.terminate()
        served.output, _ = proc.communicate(timeout=30)
    assert "Traceback" not in served.output, served.output


# ------------------------------------------------------------------------------ PostgreSQL
@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty database on the real PostgreSQL server, dropped afterwards."""
    name = f"jc_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def pg_query(url: str, sql: str, args: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(url, options="-c TimeZone=UTC")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


# ------------------------------------------------------------------------------ S3 emulator
@dataclass
class S3:
    endpoint: str
    env: dict[str, str]

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        name = f"jc-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                        Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """moto's S3 server on a free loopback port, for the whole test session."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        yield S3(endpoint, {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        })
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------------------ a workspace
@dataclass
class Workspace:
    """A jobs folder plus the environment that points jankycron at this test's services."""

    path: Path
    env: dict[str, str]

    @property
    def jobs(self) -> Path:
        return self.path / "jobs"

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def write_job(self, name: str, source: str) -> Path:
        path = self.jobs / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return path

    def cli(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the real ``jankycron`` CLI in a subprocess, in the workspace folder."""
        proc = subprocess.run(
            [sys.executable, "-m", "jankycron", *args], cwd=self.path, capture_output=True,
            text=True, env={**os.environ, **self.env, **(env or {})}, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"jankycron {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def cli_json(self, *args: str) -> list[dict]:
        return json.loads(self.cli(*args, "--json", check=True).stdout)


def _workspace(tmp_path: Path, env: dict[str, str]) -> Workspace:
    (tmp_path / "jobs").mkdir()
    base = {
        "JANKYCRON_JOBS_PATH": str(tmp_path / "jobs"),
        "JANKYCRON_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "JANKYCRON_STORE_URL": (tmp_path / "store").as_uri(),
        "JANKYCRON_WAREHOUSE_URL": f"duckdb:///{tmp_path / 'warehouse.duckdb'}",
    }
    return Workspace(tmp_path, {**base, **env})


@pytest.fixture
def duck_ws(tmp_path: Path) -> Workspace:
    """Embedded defaults: DuckDB warehouse, local-folder store, SQLite ledger."""
    return _workspace(tmp_path, {})


@pytest.fixture
def pg_ws(tmp_path: Path, pg_url: str, s3: S3) -> Workspace:
    """Production-shaped: PostgreSQL warehouse and ledger, S3 (emulator) store."""
    bucket = s3.new_bucket()
    return _workspace(tmp_path, {
        **s3.env,
        "JANKYCRON_WAREHOUSE_URL": pg_url,
        "JANKYCRON_STATE_URL": pg_url,
        "JANKYCRON_STORE_URL": f"s3://{bucket}/jankycron",
    })


@pytest.fixture(params=["duckdb", "postgresql"])
def ws(request: pytest.FixtureRequest) -> Workspace:
    """Both backends: DuckDB + local store + SQLite, and PostgreSQL + S3 emulator."""
    return request.getfixturevalue("duck_ws" if request.param == "duckdb" else "pg_ws")


def warehouse_rows(ws: Workspace, sql: str) -> list[tuple]:
    """Query the workspace's warehouse directly (not through jankycron)."""
    url = ws.env["JANKYCRON_WAREHOUSE_URL"]
    if url.startswith("duckdb:///"):
        import duckdb

        conn = duckdb.connect(url[len("duckdb:///"):])
        try:
            conn.execute("SET TimeZone = 'UTC'")
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    return pg_query(url, sql)


def create_table(ws: Workspace, ddl: str) -> None:
    url = ws.env["JANKYCRON_WAREHOUSE_URL"]
    if url.startswith("duckdb:///"):
        import duckdb

        conn = duckdb.connect(url[len("duckdb:///"):])
        try:
            conn.execute(ddl)
        finally:
            conn.close()
    else:
        pg_query(url, ddl)
