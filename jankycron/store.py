"""Object stores for staged batches and dead letters: S3 (``s3://bucket/prefix``, through
boto3, honouring ``AWS_ENDPOINT_URL`` and the standard credential chain) or a local folder
(``file:///path``). botocore errors become jankycron errors in one place (``S3Store._errors``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from .config import Settings
from .errors import ConfigError, ObjectMissing, StoreError, StoreUnavailable


def unsafe_key(key: str) -> str | None:
    """Why ``key`` could name an object outside the store (a ``..`` or ``.`` segment, an
    absolute path, an empty segment, a backslash or NUL), or None for a key inside it."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        return "is not a relative key"
    if any(seg in ("", ".", "..") for seg in key.split("/")):
        return "has an empty, '.' or '..' segment"
    return None


def checked(key: str) -> str:
    """``key``, or StoreError if it could name an object outside the store (``unsafe_key``)."""
    why = unsafe_key(key)
    if why:
        raise StoreError(f"refusing the object key {key[:200]!r}: {why}")
    return key


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
        return self.root / checked(key)

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
            raise ObjectMissing(f"{self.url(key)} is missing from the object store") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix  # a prefix, not a key: it may end with "/"
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
        checked(key)
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
                raise ObjectMissing(f"{what} is missing from the object store") from None
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

    def stat(self, key: str) -> tuple[int, str]:
        """An object's size and ETag (a HEAD request: the bytes are not read)."""
        with self._errors(f"checking {key}"):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return int(head["ContentLength"]), str(head.get("ETag", "")).strip('"')

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
                Bucket=self.bucket, Prefix=f"{self.prefix}/{prefix}" if self.prefix else prefix
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
