"""Staging: records encoded as NDJSON, written as gzipped parts plus a manifest (stores: store.py).

A batch is what one run extracted for one table. Its keys follow one template::

    <store>/staging/<table>/<job>/<start>_<end>/<run_id>/part-00001.ndjson.gz
    <store>/staging/<table>/<job>/<start>_<end>/<run_id>/manifest.json   (written last)

``<start>_<end>`` is the data interval (``20261125T040000Z``); ``<run_id>`` is the run's
sortable id, so a retry of the same run rewrites the same keys and a rerun of the same interval
writes beside the older batch instead of over a batch a loader may be reading. The manifest is
Redshift's COPY manifest format and is written last: no manifest, no batch.

Each manifest entry also carries the part's size (``meta.content_length``, as Redshift
defines it), and a ``jankycron`` section records, per part in entry order, its line count and
the SHA-256 and MD5 of its (compressed) bytes, plus the batch's total lines::

    {"entries": [{"url": "s3://b/p/staging/.../part-00001.ndjson.gz", "mandatory": true,
                  "meta": {"content_length": 81234}}],
     "jankycron": {"rows": 3000, "parts": [{"lines": 3000, "sha256": "…", "md5": "…"}]}}

Every reader of a part goes through ``open_part`` with its ``Part``: the bytes are hashed
before the first line is used, the decompressed lines counted, and anything that differs
(or a missing object, a truncated or corrupt gzip, a manifest that is missing, unparsable or
lists a URL outside the store) raises ``CorruptBatch`` naming the object key. Manifests
staged before these checks existed have none: their parts are read as they are, and the
loader compares the lines it read with the ledger's count.

Given the table's merge key, each part also gets a *key file* beside it
(``part-00001.keys.gz``): one line per record, the record's key values as JSON separated by
commas (``123`` or ``"eu",42``; ``null`` for a missing one). The PostgreSQL loader reads it to
delete the rows a load replaces before it copies the new ones straight into the table
(``load.direct``); it checks every line against its record and loads the usual way if any
differ. The manifest does not list key files, so Redshift's COPY never reads them.

For warehouses whose COPY does not keep line order (Redshift), each line also carries
``"__jc_seq":"<interval start>/<run id>/<line>"`` as its last key: the merge keeps the line with
the greatest one per key ("the last record wins"), exactly as the PostgreSQL and DuckDB
loaders keep the last line. It never reaches the table, is not counted as a dropped key, and is
removed from dead-letter records.

Records are encoded one JSON object per line: Decimal as an exact string ("12.50"), datetime
as ISO 8601 keeping its offset, date and time as ISO 8601, UUID as its string. Anything else
that JSON cannot hold exactly (NaN, bytes, sets, objects) makes the record a dead letter.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from .errors import CorruptBatch, ObjectMissing
from .schedule import Interval
from .store import Store, unsafe_key

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


def _dumps(value: Any) -> str:
    """JSON text of a value, with the C encoder where Python has it (errors as ``encode``)."""
    return "".join(_encode(value, 0)) if _encode else _py_encoder.encode(value)


def encode(record: Any) -> bytes:
    """One NDJSON line (with its newline) for a record, or RecordError saying why not."""
    if not isinstance(record, dict):
        raise RecordError(f"a job must yield dicts, got {type(record).__name__}")
    try:
        text = _dumps(record)
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
    try:
        return (text + "\n").encode()
    except UnicodeEncodeError:  # rare: only then look for the culprit (the hot path pays nothing)
        raise RecordError(_surrogate_reason(record)) from None


def _escaped(text: str) -> str:
    """``text`` with lone surrogates as ``\\udXXX`` escapes, storable as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_reason(record: Any) -> str:
    """Why a record UTF-8 cannot encode: the path of the first string (value or key) holding a
    lone surrogate, which a browser or an API writes for an emoji cut in half (``"\\ud83d"``)."""
    def find(value: Any, path: str) -> tuple[str, str] | None:
        if isinstance(value, str):
            return (path, value) if _lone(value) else None
        items = value.items() if isinstance(value, dict) else \
            enumerate(value) if isinstance(value, list | tuple) else ()
        for k, v in items:
            if isinstance(k, str) and _lone(k):
                return f"{path}{'.' if path else ''}{_escaped(k)} (a key)", k
            found = find(v, f"{path}[{k}]" if isinstance(k, int) else
                         f"{path}{'.' if path else ''}{_escaped(k)}")
            if found:
                return found
        return None

    found = find(record, "")
    where, text = found if found else ("?", "")
    bad = next((c for c in text if 0xD800 <= ord(c) <= 0xDFFF), "")
    return (f"field {where}: a string holds a lone surrogate ({_escaped(bad)}), which UTF-8 "
            "cannot encode (the record is kept with it escaped)")


def _lone(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


# ---------------------------------------------------------------------------------- batches
def _stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def batch_prefix(table: str, job: str, interval: Interval, run_id: str) -> str:
    return f"staging/{table}/{job}/{_stamp(interval.start)}_{_stamp(interval.end)}/{run_id}"


SEQ_KEY = "__jc_seq"
_SEQ_TAIL = re.compile(rb',?"__jc_seq":"([^"]*)"}\n?$')


KEYS_SUFFIX = ".keys.gz"


def keys_of(part_key: str) -> str:
    """The key file staged beside a part (module docstring)."""
    return part_key.removesuffix(".ndjson.gz") + KEYS_SUFFIX


def seq_prefix(interval: Interval, run_id: str) -> str:
    return f"{_stamp(interval.start)}/{run_id}"


def split_seq(line: bytes) -> tuple[bytes, str | None]:
    """A staged line without its ``__jc_seq`` (and without the newline), and the seq."""
    m = _SEQ_TAIL.search(line)
    if not m:
        return line.rstrip(b"\n"), None
    head = line[:m.start()]
    return head + b"}", m.group(1).decode()


@dataclass(frozen=True)
class Part:
    """A part a manifest lists, with what staging recorded of it (None: a manifest written
    before these checks existed)."""

    key: str
    lines: int | None = None
    size: int | None = None  # bytes in the store (gzipped)
    sha256: str | None = None  # of the gzipped bytes
    md5: str | None = None  # of the gzipped bytes (a single PUT's S3 ETag)


@dataclass
class StagedBatch:
    """What a closed writer left in the store."""

    table: str
    prefix: str
    manifest_key: str
    rows: int
    parts: list[str]
    key_counts: dict[str, int] = field(default_factory=dict)  # how many records had each key
    checks: list[Part] = field(default_factory=list)  # each part's lines and digests


class BatchWriter:
    """Writes records as gzipped NDJSON parts rotated at ``part_size`` bytes (uncompressed).

    Lines are collected in a ~1 MiB buffer; full buffers are compressed into a temporary file
    and parts uploaded on a background thread (zlib and sockets release the GIL), so the job's
    generator keeps running meanwhile. At most one buffer is in flight: memory stays bounded
    whatever the number of records. ``close()`` uploads the last part, then the manifest.
    """

    def __init__(self, store: Store, table: str, prefix: str, part_size: int,
                 on_part: Callable[[str], None] | None = None, seq: str | None = None,
                 key: tuple[str, ...] | None = None):
        self.store, self.table, self.prefix, self.part_size = store, table, prefix, part_size
        self.on_part = on_part  # told each part's key once it is in the store
        # With ``seq`` (see ``seq_prefix``), every line gets its "__jc_seq" (module docstring).
        self._seq = f',"{SEQ_KEY}":"{seq}/'.encode() if seq else None
        self._key = key  # with a merge key, each part gets its key file (module docstring)
        self.rows = 0
        self.parts: list[str] = []
        self.checks: list[Part] = []
        self._lines = 0  # lines in the part being written
        self._keysets: Counter[tuple[str, ...]] = Counter()
        self._buf: list[bytes] = []
        self._kbuf: list[str] = []
        self._buf_len = 0
        self._buf_max = min(_BUFFER, part_size)
        self._part_len = 0
        self._tmp: IO[bytes] | None = None
        self._gz: gzip.GzipFile | None = None
        self._ktmp: IO[bytes] | None = None
        self._kgz: gzip.GzipFile | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jankycron-stage")
        self._in_flight: Future | None = None

    def write_line(self, line: bytes, record: dict) -> None:
        if self._seq is not None:
            if SEQ_KEY in record:
                raise RecordError(f"the key {SEQ_KEY} is reserved for the loader")
            tail = self._seq + b"%012d\"}\n" % (self.rows + 1)
            line = line[:-2] + (tail[1:] if line[-3:-2] == b"{" else tail)
        self._keysets[tuple(record)] += 1
        if self._key is not None:
            self._kbuf.append(_key_line(record, self._key))
        self._buf.append(line)
        self._buf_len += len(line)
        self.rows += 1
        if self._buf_len >= self._buf_max:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        keys = "".join(self._kbuf).encode() if self._key is not None else None
        self._buf, self._buf_len, self._kbuf = [], 0, []
        self._wait()
        self._part_len += len(data)
        rotate = self._part_len >= self.part_size
        if rotate:
            self._part_len = 0
        self._in_flight = self._pool.submit(self._compress, data, keys, rotate)

    def _wait(self) -> None:
        """Wait for the buffer in flight; its error (an upload that failed) is raised here."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()

    def _compress(self, data: bytes, keys: bytes | None, rotate: bool) -> None:
        if self._gz is None:
            self._tmp, self._gz = _gz_temp("jankycron-part-")
            if keys is not None:
                self._ktmp, self._kgz = _gz_temp("jankycron-keys-")
        self._gz.write(data)
        self._lines += data.count(b"\n")
        if self._kgz is not None and keys is not None:
            self._kgz.write(keys)
        if rotate:
            self._upload_part()

    def _upload_part(self) -> None:
        assert self._gz is not None and self._tmp is not None
        key = f"{self.prefix}/part-{len(self.parts) + 1:05d}.ndjson.gz"
        try:
            # The key file goes first: a part without one still loads (the validated way).
            if self._kgz is not None and self._ktmp is not None:
                self._upload(keys_of(key), self._kgz, self._ktmp)
            size, sha256, md5 = self._upload(key, self._gz, self._tmp)
        finally:
            self._discard()
        self.parts.append(key)
        self.checks.append(Part(key, self._lines, size, sha256, md5))
        self._lines = 0
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
        manifest = {
            "entries": [{"url": self.store.url(p.key), "mandatory": True,
                         "meta": {"content_length": p.size}} for p in self.checks],
            "jankycron": {"rows": self.rows,
                          "parts": [{"lines": p.lines, "sha256": p.sha256, "md5": p.md5}
                                    for p in self.checks]},
        }
        self.store.put_bytes(manifest_key, json.dumps(manifest, indent=1).encode())
        key_counts: Counter[str] = Counter()
        for keys, n in self._keysets.items():
            for k in keys:
                key_counts[k] += n
        return StagedBatch(self.table, self.prefix, manifest_key, self.rows, self.parts,
                           dict(key_counts), list(self.checks))

    def _upload(self, key: str, gz: gzip.GzipFile, tmp: IO[bytes]) -> tuple[int, str, str]:
        """Upload a finished temporary file; its size, SHA-256 and MD5."""
        gz.close()
        tmp.close()
        sha256, md5, size = _digests(Path(tmp.name))
        self.store.put_file(key, Path(tmp.name))
        return size, sha256, md5

    def _discard(self) -> None:
        """Close and delete the temporary files of the part being written."""
        for gz, tmp in ((self._gz, self._tmp), (self._kgz, self._ktmp)):
            if gz is not None and tmp is not None:
                gz.close()
                tmp.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp.name)
        self._gz = self._tmp = self._kgz = self._ktmp = None

    def abort(self) -> None:
        """Drop the part being written (the run failed); uploaded parts stay unreferenced."""
        with contextlib.suppress(Exception):
            self._wait()
        self._pool.shutdown()
        self._discard()


def _gz_temp(prefix: str) -> tuple[IO[bytes], gzip.GzipFile]:
    tmp = tempfile.NamedTemporaryFile(prefix=prefix, delete=False)
    return tmp, gzip.GzipFile(fileobj=tmp, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)


def _key_line(record: dict, key: tuple[str, ...]) -> str:
    """A record's line of its part's key file: its key values as JSON, comma-separated."""
    return _dumps([record.get(k) for k in key])[1:-1] + "\n"


def _digests(path: Path) -> tuple[str, str, int]:
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha256.hexdigest(), md5.hexdigest(), size


def read_parts(store: Store, manifest_key: str) -> list[Part]:
    """The parts a manifest lists, in order, with their recorded checks; ``CorruptBatch`` for a
    manifest that is missing, unparsable, or lists an object outside the store."""
    try:
        data = store.get_bytes(manifest_key)
    except ObjectMissing:
        raise CorruptBatch(manifest_key, "the manifest is missing") from None
    try:
        doc = json.loads(data)
        entries = doc["entries"]
        urls = [e["url"] for e in entries]
        if not all(isinstance(u, str) for u in urls):
            raise TypeError("an entry's url is not a string")
        ours = doc.get("jankycron")
        checks = ours["parts"] if ours is not None else [{}] * len(urls)
        if len(checks) != len(urls):
            raise ValueError(f"{len(urls)} entries but {len(checks)} part checks")
        parts = []
        for url, entry, check in zip(urls, entries, checks, strict=True):
            size = (entry.get("meta") or {}).get("content_length")
            parts.append((url, check.get("lines"), size, check.get("sha256"), check.get("md5")))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CorruptBatch(manifest_key, "the manifest is not a valid manifest "
                           f"({type(e).__name__})") from None
    root = store.url_root + "/"
    out = []
    for url, lines, size, sha256, md5 in parts:
        key = url[len(root):] if url.startswith(root) else ""
        why = unsafe_key(key) if key else "is under another root"
        if why:
            raise CorruptBatch(manifest_key, f"the manifest lists {url[:200]!r}, outside the "
                               f"store {store.url_root} (the key {why}): refused")
        out.append(Part(key, lines, size, sha256, md5))
    return out


def read_manifest(store: Store, manifest_key: str) -> list[str]:
    """The part keys a manifest lists, in order (``read_parts`` without the checks)."""
    return [p.key for p in read_parts(store, manifest_key)]


@contextlib.contextmanager
def of_batch(batch_id: str) -> Iterator[None]:
    """A ``CorruptBatch`` raised inside names ``batch_id`` as the damaged batch."""
    try:
        yield
    except CorruptBatch as e:
        if e.batch_id is None:
            e.batch_id = batch_id
        raise


class Verified:
    """A part's decompressed NDJSON, checked against its ``Part`` (module docstring): its
    bytes' digest before the first read, its line count at the end (the first read that
    returns nothing). Raises ``CorruptBatch``; a consumer that hides the exception (psycopg2's
    COPY reports it as a cancelled COPY) finds it in ``error``. ``lines`` and ``sha256`` are
    what was read (``Prefill`` compares them with the manifest)."""

    def __init__(self, gz: gzip.GzipFile, part: Part, sha256: str):
        self._gz, self.part, self.sha256 = gz, part, sha256
        self.lines = 0
        self.error: CorruptBatch | None = None
        self._ended = False
        self._last = b"\n"

    def _fail(self, problem: str) -> CorruptBatch:
        self.error = CorruptBatch(self.part.key, problem)
        return self.error

    def _got(self, data: bytes) -> bytes:
        if data:
            self.lines += data.count(b"\n")
            self._last = data[-1:]
        elif not self._ended:
            self._ended = True
            if self._last != b"\n":
                self.lines += 1  # a last line without its newline
            want = self.part.lines
            if want is not None and self.lines != want:
                raise self._fail(f"it holds {self.lines:,} lines, staging wrote {want:,}")
        return data

    def _guard(self, read: Callable[[int], bytes], size: int) -> bytes:
        if self.error is not None:
            raise self.error
        try:
            return self._got(read(size))
        except EOFError:
            raise self._fail("a truncated gzip (it ends before its end-of-stream marker)") \
                from None
        except (gzip.BadGzipFile, zlib.error) as e:
            raise self._fail(f"not a valid gzip ({str(e)[:80]})") from None

    def read(self, size: int = -1) -> bytes:
        data = self._guard(self._gz.read, size)
        if size is None or size < 0:  # all of it: the end is reached too
            self._got(b"")
        return data

    def readline(self, size: int = -1) -> bytes:
        return self._guard(self._gz.readline, size)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


@contextlib.contextmanager
def open_part(store: Store, part: Part | str) -> Iterator[Verified]:
    """A staged part as a stream of decompressed NDJSON, checked against ``part`` (a key
    alone: only that it is a whole gzip). Raises ``CorruptBatch`` (see ``Verified``)."""
    if isinstance(part, str):
        part = Part(part)
    try:
        raw = store.open(part.key)
    except ObjectMissing:
        raise CorruptBatch(part.key, "the part is missing from the store") from None
    with raw:
        sha256, size = hashlib.sha256(), 0
        while chunk := raw.read(1 << 20):
            sha256.update(chunk)
            size += len(chunk)
        digest = sha256.hexdigest()
        if part.size is not None and size != part.size:
            raise CorruptBatch(part.key, f"it is {size:,} bytes, staging wrote {part.size:,}")
        if part.sha256 is not None and digest != part.sha256:
            raise CorruptBatch(part.key, "its bytes differ from what staging wrote (SHA-256 "
                               "mismatch)")
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            yield Verified(gz, part, digest)

