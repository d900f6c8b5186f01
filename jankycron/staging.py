"""Staging: the object store (S3 or a local folder), the NDJSON.gz batch writer, manifests.

A batch is what one run extracted for one table. Its keys follow one template::

    <store>/staging/<table>/<job>/<start>_<end>/<run_id>/part-00001.ndjson.gz
    <store>/staging/<table>/<job>/<start>_<end>/<run_id>/manifest.json   (written last)

``<start>_<end>`` is the data interval (``20261125T040000Z``); ``<run_id>`` is the run's
sortable id, so a retry of the same run rewrites the same keys and a rerun of the same interval
writes beside the older batch instead of over a batch a loader may be reading. The manifest is
Redshift's COPY manifest format and is written last: no manifest, no batch.

Records are encoded one JSON object per line: Decimal as an exact string ("12.50"), datetime
as ISO 8601 keeping its offset, date and time as ISO 8601, UUID as its string. Anything else
that JSON cannot hold exactly (NaN, bytes, sets, objects) makes the record a dead letter.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from .config import Settings
from .errors import ConfigError, StoreError, StoreUnavailable
from .schedule import Interval

log = logging.getLogger(__name__)

GZIP_LEVEL = 1  # JSON compresses ~6x even at level 1; higher levels cost CPU for little gain
_BUFFER = 1 << 20  # lines are gzipped in ~1 MiB chunks


# ---------------------------------------------------------------------------------- encoding
class RecordError(ValueError):
    """A record that cannot be encoded exactly; it goes to the dead letters with this reason."""


def _default(value: Any) -> Any:
    kind = type(value)  # exact-type checks first: this runs for every such value
    if kind is Decimal:
        if not value.is_finite():
            raise RecordError(f"Decimal {value} has no exact JSON form")
        return format(value, "f")
    if kind is uuid.UUID:
        return str(value)
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, Decimal):
        return _default(Decimal(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    raise RecordError(f"a value of type {type(value).__name__} is not supported: {value!r:.80}")


# One C encoder built once (JSONEncoder.encode would rebuild it for every record). No circular
# reference bookkeeping: a self-containing record ends in RecursionError, refused below.
_encode = json.encoder.c_make_encoder(
    None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, False
) if json.encoder.c_make_encoder else None
_py_encoder = json.JSONEncoder(
    default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
    check_circular=False,
)


def encode(record: Any) -> bytes:
    """One NDJSON line (with its newline) for a record, or RecordError saying why not."""
    if not isinstance(record, dict):
        raise RecordError(f"a job must yield dicts, got {type(record).__name__}")
    try:
        text = "".join(_encode(record, 0)) if _encode else _py_encoder.encode(record)
    except RecordError:
        raise
    except ValueError as e:
        if "float" in str(e):
            raise RecordError("a float NaN or infinity has no JSON form (yield None instead)") \
                from None
        raise RecordError(f"not representable in JSON: {e}") from None
    except RecursionError:
        raise RecordError("the record contains itself (a circular reference)") from None
    except TypeError as e:  # non-string keys
        raise RecordError(str(e)) from None
    return (text + "\n").encode()


# ---------------------------------------------------------------------------------- stores
class Store:
    """An object store: S3 (``s3://bucket/prefix``) or a local folder (``file:///path``)."""

    url_root: str

    def url(self, key: str) -> str:
        return f"{self.url_root}/{key}"

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def open(self, key: str) -> IO[bytes]: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def check(self) -> None:
        """Raise StoreError unless the store can be written and read."""
        key = f"_check/{uuid.uuid4().hex}"
        self.put_bytes(key, b"ok")
        if self.get_bytes(key) != b"ok":
            raise StoreError(f"object store {self.url_root} returned other bytes than written")
        self.delete(key)

    def delete(self, key: str) -> None: ...


class LocalStore(Store):
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.url_root = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def _ready(self, key: str) -> Path:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot write to object store {self.url_root}: {e.strerror}") from e
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._ready(key)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a file

    def put_file(self, key: str, path: Path) -> None:
        dest = self._ready(key)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise StoreError(f"{self.url(key)} is missing from the object store") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        folder = base if base.is_dir() else base.parent
        if not folder.is_dir():
            return []
        keys = (str(p.relative_to(self.root)) for p in folder.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not k.endswith(".tmp"))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, settings: Settings):
        import boto3  # noqa: PLC0415 - boto3 is slow to import; only S3 users pay for it
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url_root = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        session = boto3.session.Session(
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            region_name=settings.aws_region,
        )
        self.client = session.client(
            "s3",
            endpoint_url=settings.aws_endpoint_url,
            config=Config(
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """The one place botocore errors become jankycron errors (no secrets in messages)."""
        from botocore import exceptions as bx

        try:
            yield
        except (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ConnectTimeoutError,
                bx.ReadTimeoutError) as e:
            raise StoreUnavailable(f"object store {self.url_root} is unreachable ({what}): "
                                   f"{type(e).__name__}") from None
        except bx.NoCredentialsError:
            raise StoreError(f"no AWS credentials for {self.url_root} (set AWS_ACCESS_KEY_ID/"
                             "AWS_SECRET_ACCESS_KEY or use an instance role)") from None
        except bx.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            msg = f"object store {self.url_root} refused {what}: {code}"
            if code in ("NoSuchKey", "404"):
                raise StoreError(f"{what} is missing from the object store") from None
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable"):
                raise StoreUnavailable(msg) from None
            raise StoreError(msg) from None
        except bx.BotoCoreError as e:
            raise StoreUnavailable(f"object store {self.url_root} failed ({what}): "
                                   f"{type(e).__name__}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(f"writing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        # One PUT per part (parts are ~10 MB compressed, far below S3's 5 GB PUT limit); the
        # transfer manager's multipart uploads would wrap errors in its own exception types.
        with self._errors(f"writing {key}"), open(path, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)

    def get_bytes(self, key: str) -> bytes:
        with self._errors(f"reading {key}"):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def open(self, key: str) -> IO[bytes]:
        # Download to a temporary file: a stream held open through a long COPY could time out.
        tmp = tempfile.TemporaryFile()
        try:
            with self._errors(f"reading {key}"):
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
                shutil.copyfileobj(body, tmp, 1 << 20)
        except BaseException:
            tmp.close()
            raise
        tmp.seek(0)
        return tmp

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with self._errors(f"checking {key}"):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except StoreError:
            return False
        except ClientError:  # pragma: no cover - mapped above
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        cut = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(f"listing {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                keys.extend(o["Key"][cut:] for o in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        with self._errors(f"deleting {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def open_store(settings: Settings) -> Store:
    parts = urlsplit(settings.store_url)
    if parts.scheme == "file":
        # file:///abs/path, or file://./relative/path for the embedded default
        raw = (parts.netloc + parts.path) if parts.netloc in (".", "..") else parts.path
        if not raw:
            raise ConfigError("JANKYCRON_STORE_URL=file:// needs a path, e.g. file:///var/store")
        return LocalStore(Path(raw))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError("JANKYCRON_STORE_URL=s3:// needs a bucket: s3://bucket/prefix")
        return S3Store(parts.netloc, parts.path, settings)
    raise ConfigError(f"unsupported store {settings.store_url}")


# ---------------------------------------------------------------------------------- batches
def _stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def batch_prefix(table: str, job: str, interval: Interval, run_id: str) -> str:
    return f"staging/{table}/{job}/{_stamp(interval.start)}_{_stamp(interval.end)}/{run_id}"


@dataclass
class StagedBatch:
    """What a closed writer left in the store."""

    table: str
    prefix: str
    manifest_key: str
    rows: int
    parts: list[str]
    key_counts: dict[str, int] = field(default_factory=dict)  # how many records had each key


class BatchWriter:
    """Writes records as gzipped NDJSON parts rotated at ``part_size`` bytes (uncompressed).

    Lines are collected in a ~1 MiB buffer; full buffers are compressed into a temporary file
    and parts uploaded on a background thread (zlib and sockets release the GIL), so the job's
    generator keeps running meanwhile. At most one buffer is in flight: memory stays bounded
    whatever the number of records. ``close()`` uploads the last part, then the manifest.
    """

    def __init__(self, store: Store, table: str, prefix: str, part_size: int,
                 on_part: Callable[[str], None] | None = None):
        self.store, self.table, self.prefix, self.part_size = store, table, prefix, part_size
        self.on_part = on_part  # told each part's key once it is in the store
        self.rows = 0
        self.parts: list[str] = []
        self._keysets: Counter[tuple[str, ...]] = Counter()
        self._buf: list[bytes] = []
        self._buf_len = 0
        self._buf_max = min(_BUFFER, part_size)
        self._part_len = 0
        self._tmp: IO[bytes] | None = None
        self._gz: gzip.GzipFile | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jankycron-stage")
        self._in_flight: Future | None = None

    def write_line(self, line: bytes, record: dict) -> None:
        self._keysets[tuple(record)] += 1
        self._buf.append(line)
        self._buf_len += len(line)
        self.rows += 1
        if self._buf_len >= self._buf_max:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf, self._buf_len = [], 0
        self._wait()
        self._part_len += len(data)
        rotate = self._part_len >= self.part_size
        if rotate:
            self._part_len = 0
        self._in_flight = self._pool.submit(self._compress, data, rotate)

    def _wait(self) -> None:
        """Wait for the buffer in flight; its error (an upload that failed) is raised here."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    def _compress(self, data: bytes, rotate: bool) -> None:
        if self._gz is None:
            self._tmp = tempfile.NamedTemporaryFile(prefix="jankycron-part-", delete=False)
            self._gz = gzip.GzipFile(fileobj=self._tmp, mode="wb", compresslevel=GZIP_LEVEL,
                                     mtime=0)
        self._gz.write(data)
        if rotate:
            self._upload_part()

    def _upload_part(self) -> None:
        assert self._gz is not None and self._tmp is not None
        self._gz.close()
        self._tmp.close()
        key = f"{self.prefix}/part-{len(self.parts) + 1:05d}.ndjson.gz"
        try:
            self.store.put_file(key, Path(self._tmp.name))
        finally:
            os.unlink(self._tmp.name)
            self._gz = self._tmp = None
        self.parts.append(key)
        log.debug("staged %s", key)
        if self.on_part:
            self.on_part(key)

    def close(self) -> StagedBatch:
        try:
            self._flush()
            self._wait()
        finally:
            self._pool.shutdown()
        if self._gz is not None:
            self._upload_part()
        manifest_key = f"{self.prefix}/manifest.json"
        manifest = {"entries": [{"url": self.store.url(k), "mandatory": True} for k in self.parts]}
        self.store.put_bytes(manifest_key, json.dumps(manifest, indent=1).encode())
        key_counts: Counter[str] = Counter()
        for keys, n in self._keysets.items():
            for k in keys:
                key_counts[k] += n
        return StagedBatch(self.table, self.prefix, manifest_key, self.rows, self.parts,
                           dict(key_counts))

    def abort(self) -> None:
        """Drop the part being written (the run failed); uploaded parts stay unreferenced."""
        with contextlib.suppress(Exception):
            self._wait()
        self._pool.shutdown()
        if self._gz is not None and self._tmp is not None:
            self._gz.close()
            self._tmp.close()
            os.unlink(self._tmp.name)
            self._gz = self._tmp = None


def read_manifest(store: Store, manifest_key: str) -> list[str]:
    """The part keys a manifest lists, in order."""
    doc = json.loads(store.get_bytes(manifest_key))
    root = store.url_root + "/"
    keys = []
    for entry in doc["entries"]:
        url = entry["url"]
        if not url.startswith(root):
            raise StoreError(f"manifest {manifest_key} lists {url}, outside {store.url_root}")
        keys.append(url[len(root):])
    return keys


@contextlib.contextmanager
def open_part(store: Store, key: str) -> Iterator[IO[bytes]]:
    """A staged part as a stream of decompressed NDJSON."""
    with store.open(key) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
        yield gz

