"""Staging: exact encoding, parts rotated by size, the manifest written last, on a real S3."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from conftest import S3

from jankycron.config import Settings
from jankycron.schedule import Interval
from jankycron.staging import (
    BatchWriter,
    RecordError,
    batch_prefix,
    encode,
    keys_of,
    open_part,
    read_manifest,
)
from jankycron.store import open_store


def test_values_encode_without_loss() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    line = encode({
        "d": Decimal("0.1000000000000000000000000001"), "big": Decimal("1E+3"),
        "ts": datetime(2026, 11, 25, 4, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5))),
        "naive": datetime(2026, 11, 25, 4, 0), "day": date(2026, 2, 28), "t": time(13, 5),
        "u": u, "s": "Zoë \u2028 \n", "n": None, "nested": {"a": [1, Decimal("2.50")]},
    })
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one record, one line
    doc = json.loads(line)
    assert doc["d"] == "0.1000000000000000000000000001"  # exact, as a string
    assert doc["big"] == "1000"
    assert doc["ts"] == "2026-11-25T04:00:00.000001-05:00"
    assert doc["naive"] == "2026-11-25T04:00:00"
    assert (doc["day"], doc["t"], doc["u"]) == ("2026-02-28", "13:05:00", str(u))
    assert doc["s"] == "Zoë \u2028 \n" and doc["n"] is None
    assert doc["nested"] == {"a": [1, "2.50"]}


@pytest.mark.parametrize("value, words", [
    (float("inf"), "infinity"), (Decimal("NaN"), "NaN"), (b"bytes", "bytes"),
    (object(), "object"),
])
def test_values_without_an_exact_json_form_are_refused(value, words) -> None:
    with pytest.raises(RecordError, match=words):
        encode({"v": value})


def test_a_non_dict_record_is_refused() -> None:
    with pytest.raises(RecordError, match="dicts"):
        encode(["not", "a", "dict"])


def test_parts_rotate_by_size_and_the_manifest_lists_them_in_order(s3: S3) -> None:
    bucket = s3.new_bucket()
    settings = Settings.from_env({**s3.env, "JANKYCRON_STORE_URL": f"s3://{bucket}/pre"})
    store = open_store(settings)
    interval = Interval(datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC))
    prefix = batch_prefix("t", "j", interval, "RUN1")
    assert prefix == "staging/t/j/20261125T000000Z_20261126T000000Z/RUN1"
    writer = BatchWriter(store, "t", prefix, part_size=64 * 1024)
    records = [{"id": i, "pad": "x" * 200} for i in range(3000)]  # ~650 KB of NDJSON
    for r in records:
        writer.write_line(encode(r), r)
    staged = writer.close()

    assert staged.rows == 3000 and staged.key_counts == {"id": 3000, "pad": 3000}
    assert len(staged.parts) >= 5  # rotated, not one big file
    keys = s3.keys(bucket, f"pre/{prefix}/")
    assert f"pre/{prefix}/manifest.json" in keys
    manifest = json.loads(s3.client().get_object(
        Bucket=bucket, Key=f"pre/{prefix}/manifest.json")["Body"].read())
    assert [e["url"] for e in manifest["entries"]] == [
        f"s3://{bucket}/pre/{k}" for k in staged.parts]
    assert all(e["mandatory"] for e in manifest["entries"])
    # Every part is gzip; reading the parts in manifest order gives back every record in order.
    first = s3.client().get_object(Bucket=bucket, Key=f"pre/{staged.parts[0]}")["Body"].read()
    assert gzip.decompress(first).startswith(b'{"id":0,')
    lines = []
    for key in read_manifest(store, staged.manifest_key):
        with open_part(store, key) as part:
            lines.extend(part)
    assert [json.loads(x)["id"] for x in lines] == list(range(3000))


def test_a_batch_with_no_manifest_is_not_complete(tmp_path) -> None:
    """The manifest is written last: parts without it are never read as a batch."""
    store = open_store(Settings.from_env({"JANKYCRON_STORE_URL": tmp_path.as_uri()}))
    writer = BatchWriter(store, "t", "staging/x", part_size=1024)
    for i in range(100):
        writer.write_line(encode({"id": i}), {"id": i})
    writer._flush()
    writer._wait()
    writer._upload_part()  # a part is out, the run dies before close()
    assert store.list("staging/x") == ["staging/x/part-00001.ndjson.gz"]
    assert not store.exists("staging/x/manifest.json")
    writer.abort()


def test_each_part_has_a_key_file_with_its_records_merge_keys(tmp_path) -> None:
    """Given the merge key, every part gets a key file beside it, line for line: the key values
    as JSON, comma-separated, null where a record lacks one. The manifest does not list them."""
    store = open_store(Settings.from_env({"JANKYCRON_STORE_URL": tmp_path.as_uri()}))
    writer = BatchWriter(store, "t", "staging/k", part_size=4 * 1024, key=("region", "n"))
    records = [{"region": 'e"u\\', "n": Decimal("1.50") if i % 2 else i, "pad": "x" * 90}
               for i in range(200)] + [{"n": 7}]
    for r in records:
        writer.write_line(encode(r), r)
    staged = writer.close()

    assert len(staged.parts) > 3
    assert read_manifest(store, staged.manifest_key) == staged.parts
    key_lines = []
    for part in staged.parts:
        assert keys_of(part) == part.replace(".ndjson.gz", ".keys.gz")
        assert store.exists(keys_of(part))
        with open_part(store, part) as p, open_part(store, keys_of(part)) as k:
            part_lines, lines = list(p), list(k)
        assert len(lines) == len(part_lines)
        key_lines += lines
    assert key_lines[:2] == [b'"e\\"u\\\\",0\n', b'"e\\"u\\\\","1.50"\n']
    assert key_lines[-1] == b"null,7\n"
    assert [json.loads(b"[" + x + b"]") for x in key_lines] == [
        [r.get("region"), str(r["n"]) if isinstance(r["n"], Decimal) else r["n"]]
        for r in records]


def test_without_a_merge_key_no_key_files_are_written(tmp_path) -> None:
    store = open_store(Settings.from_env({"JANKYCRON_STORE_URL": tmp_path.as_uri()}))
    writer = BatchWriter(store, "t", "staging/n", part_size=1024)
    for i in range(100):
        writer.write_line(encode({"id": i}), {"id": i})
    staged = writer.close()
    assert not any(store.exists(keys_of(p)) for p in staged.parts)
