"""Staging: records encoded as NDJSON, written as gzipped parts plus a manifest (stores: store.py).

A batch is what one run extracted for one table. Its keys follow one template::

    <store>/staging/<table>/<job>/<start>_<end>/<run_id>/part-00001.ndjson.gz
    <store>/staging/<table>/<job>/<start>_<end>/<run_id>/manifest.json   (written last)

``<start>_<end>`` is the data interval (``20261125T040000Z``); ``<run_id>`` is the run's
sortable id, so a retry of the same run rewrites the same keys and a rerun of the same interval
writes beside the older batch instead of over a batch a loader may be reading. The manifest is
Redshift's COPY manifest format and is written last: no manifest, no batch.

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
import json
import logging
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from .errors import StoreError
from .schedule import Interval
from .store import Store

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
                 on_part: Callable[[str], None] | None = None, seq: str | None = None,
                 key: tuple[str, ...] | None = None):
        self.store, self.table, self.prefix, self.part_size = store, table, prefix, part_size
        self.on_part = on_part  # told each part's key once it is in the store
        # With ``seq`` (see ``seq_prefix``), every line gets its "__jc_seq" (module docstring).
        self._seq = f',"{SEQ_KEY}":"{seq}/'.encode() if seq else None
        self._key = key  # with a merge key, each part gets its key file (module docstring)
        self.rows = 0
        self.parts: list[str] = []
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
            self._upload(key, self._gz, self._tmp)
        finally:
            self._discard()
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

    def _upload(self, key: str, gz: gzip.GzipFile, tmp: IO[bytes]) -> None:
        gz.close()
        tmp.close()
        self.store.put_file(key, Path(tmp.name))

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

