"""Direct loads into PostgreSQL: staged lines become CSV rows copied straight into the table.

The validated path (``warehouse.Session.fill`` and ``merge``) copies every staged line into
``raw``, has PostgreSQL parse and cast it into ``stage``, then inserts ``stage`` into the table:
three passes over the data. A direct load makes one, inside the merge transaction (the table
locked, the batches checked against ``jankycron_loads``):

1. the parts' key files (``staging.keys_of``) are copied into ``jc_keys``; the table's rows with
   those keys are deleted, and the lines that a later line with the same key replaces are noted
   (the last line wins, as in the validated path; a unique index on ``jc_keys`` says "none" in
   the usual case, at half the cost of grouping);
2. a thread, started before step 1, parses each staged line (orjson), checks it against its
   key file line and its column's rule (below) and writes it as a CSV row, while the session
   streams the rows, less the replaced ones, into ``COPY <table>``;
3. the batches are recorded in ``jankycron_loads`` and the transaction commits.

A direct load must leave exactly the rows the validated path would leave. So it passes only
values whose CSV text PostgreSQL reads as it reads ``j ->> 'column'`` in the validated path
(the same type input function on the same text), and it gives up on anything else by raising
``NotDirect``: the transaction rolls back and the validated path loads the batches, finding and
dead-lettering any bad record with the warehouse's reason. It gives up on:

- a line that is not a JSON object orjson reads, or whose key does not match its key file line;
  a part without a key file (staged before they existed);
- a value of a type the column's rule does not take (``Rule``): a float for a text column (its
  JSON text and PostgreSQL's differ), an object or array for anything but jsonb, a float
  anywhere in a jsonb value, a negative zero;
- a value the validated path's strict checks refuse: any text that does not match its type's
  one spelling (``warehouse.PATTERNS``: ``" 7"``, ``"1.0"`` into an integer, ``"on"``, a
  decimal with more places than its scale, a date that is not YYYY-MM-DD, a timestamp with a
  seventh fractional digit or a zone name, a uuid in braces...), a timestamp it would not
  convert to UTC the same way;
- a null merge key; a row PostgreSQL refuses (too long, NOT NULL, CHECK, a malformed uuid...).

A load with a bad record therefore costs a direct attempt plus the validated load. Tables with a
``json`` (not jsonb) column, or a jsonb merge key, always load the validated way.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg2
import psycopg2.errors

from ..errors import CorruptBatch, StoreError, TransientError
from ..ledger import Batch
from ..staging import Part, keys_of, of_batch, open_part
from ..store import Store
from .warehouse import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    TIMESTAMP_TYPES,
    Column,
    Session,
    batch_parts,
    quote_ident,
    text_rule,
    utc_text,
)

log = logging.getLogger(__name__)

# Unquoted null is NULL, a quoted "null" the text; backslash escapes inside quotes, as in JSON.
COPY_OPTIONS = "FORMAT csv, NULL 'null', ESCAPE '\\'"
_CHUNK = 1 << 20  # bytes of CSV per piece handed to COPY
_NONE = type(None)


# A JSON escape CSV would not undo (a control character): backslash and anything but a quote or
# a backslash. It may also find the second half of an escaped backslash before a letter; such a
# row is only rendered the slower way (``_csv_row``), which is right for every row.
_control_escape = re.compile(rb'\\[^"\\]').search



class NotDirect(Exception):  # noqa: N818 - control flow: "load this the validated way"
    """Why a load cannot go the direct way; the validated path takes it."""


@dataclass(frozen=True)
class Rule:
    """The Python values (as orjson reads them) a column takes directly; the pattern a string
    value must match, and why; and the check or conversion of a non-null value (it raises
    ``NotDirect``)."""

    types: frozenset[type]
    convert: Callable[[Any], Any] | None = None
    pattern: Callable[[str], Any] | None = None  # a compiled regex's fullmatch
    refusal: str = ""


def _timestamp_utc(column: Column) -> Callable[[Any], Any]:
    """As the validated path's ``CAST(text AS timestamptz) AT TIME ZONE 'UTC'`` (the session is
    in UTC): a time without an offset is kept, one with an offset converted."""
    def convert(value: Any) -> Any:  # the value matched warehouse.TIMESTAMP_PATTERN
        utc = utc_text(value)
        if utc is not None:
            return utc
        raise NotDirect(f"column {column.name}: timestamp {value[:40]!r} is not plain ISO 8601")
    return convert


def _no_negative_zero(column: Column) -> Callable[[Any], Any]:
    # jsonb reads -0.0 as numeric zero, which has no sign: the validated path stores 0.
    def check(value: Any) -> Any:
        if type(value) is float and value == 0 and math.copysign(1.0, value) < 0:
            raise NotDirect(f"column {column.name}: a negative zero")
        return value
    return check


def _has_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        return any(map(_has_float, value.values()))
    if kind is list:
        return any(map(_has_float, value))
    return False


def _jsonb_text(column: Column) -> Callable[[Any], Any]:
    """The value's JSON text, which jsonb reads as the validated path's ``j -> 'column'``.
    Floats are refused: orjson writes some with other digits than the staged line had
    (1.5e-7 for 1.5e-07), which jsonb would keep with another display scale."""
    def convert(value: Any) -> Any:
        try:
            if _has_float(value):
                raise NotDirect(f"column {column.name}: a jsonb value with a float in it")
        except RecursionError:
            raise NotDirect(f"column {column.name}: a jsonb value nested too deep") from None
        return orjson.dumps(value).decode()
    return convert


def rule(column: Column) -> Rule:
    base = column.base
    if base in Session.STRING_TYPES:  # text as is; true/false and integers read the same
        return Rule(frozenset({str, int, bool, _NONE}))
    text = text_rule(column)
    if text is not None:  # the validated path's pattern for the value's text
        pattern, refusal = re.compile(text[0]).fullmatch, text[1]
        if base == "boolean":  # an integer other than 0 and 1 is refused by the COPY
            return Rule(frozenset({str, int, bool, _NONE}), pattern=pattern, refusal=refusal)
        if base in FLOAT_TYPES:
            return Rule(frozenset({str, int, float, _NONE}), _no_negative_zero(column),
                        pattern=pattern, refusal=refusal)
        if base in TIMESTAMP_TYPES:
            return Rule(frozenset({str, _NONE}), _timestamp_utc(column), pattern=pattern,
                        refusal=refusal)
        if base in ("numeric", "decimal", *INTEGER_TYPES):  # an integer's digits match
            return Rule(frozenset({str, int, _NONE}), pattern=pattern, refusal=refusal)
        return Rule(frozenset({str, _NONE}), pattern=pattern, refusal=refusal)  # dates, uuids
    if base == "jsonb":
        return Rule(frozenset({str, int, float, bool, dict, list, _NONE}), _jsonb_text(column))
    if base == "json":  # the validated path stores jsonb's normalised text; not rebuilt here
        raise NotDirect(f"column {column.name} is json")
    # Integers, timestamptz, uuid, time, interval, inet, enums, arrays...: the type's input
    # function reads the JSON string (or integer) text, as the validated path's CAST does.
    return Rule(frozenset({str, int, _NONE}))


class Plan:
    """How one table's staged lines become CSV rows."""

    def __init__(self, columns: list[Column], key: tuple[str, ...]):
        self.names = [c.name for c in columns]
        rules = [rule(c) for c in columns]
        for k in key:
            if rules[self.names.index(k)].types & {dict, list}:
                raise NotDirect(f"merge key column {k} is jsonb")
        self.types = [r.types for r in rules]
        self.common = frozenset.intersection(*self.types)  # types every column takes as they are
        self.patterns = [(i, r.pattern, r.refusal) for i, r in enumerate(rules) if r.pattern]
        self.converts = [(i, r.convert) for i, r in enumerate(rules) if r.convert]
        self.key_at = [self.names.index(k) for k in key]
        # Key columns whose value a rule may change (a timestamp converted to UTC): jc_keys got
        # the key file's text, so a changed one would not find the rows it replaces.
        self.key_converted = [(i, j) for j, i in enumerate(self.key_at) if rules[i].convert]

    def render(self, lines: list[bytes], keys: list) -> list[bytes]:
        """A CSV row (without its newline) for each staged line, checked against its key file
        line in ``keys`` (a value for a one-column key, a list otherwise). Raises
        ``NotDirect``."""
        if len(keys) != len(lines):
            raise NotDirect("a part and its key file have not as many lines")
        loads, dumps, names, common = orjson.loads, orjson.dumps, self.names, self.common
        patterns, converts, types = self.patterns, self.converts, self.types
        key_converted = self.key_converted
        single = self.key_at[0] if len(self.key_at) == 1 else None
        key_at = self.key_at
        out = []
        for key, text in zip(keys, lines, strict=True):
            try:
                doc = loads(text)
            except orjson.JSONDecodeError as e:
                raise NotDirect(f"a line orjson cannot read: {e}") from None
            if type(doc) is not dict:
                raise NotDirect("a line that is not a JSON object")
            values = list(map(doc.get, names))
            if (values[single] != key) if single is not None else (
                    [values[i] for i in key_at] != key):
                raise NotDirect("a line does not match its key file")
            if not common.issuperset(map(type, values)):
                for name, value, allowed in zip(names, values, types, strict=True):
                    if type(value) not in allowed:
                        raise NotDirect(f"column {name}: a JSON {type(value).__name__}")
            for i, match, refusal in patterns:
                value = values[i]
                if type(value) is str and not match(value):
                    raise NotDirect(f"column {names[i]}: {value[:40]!r}: {refusal}")
            if converts:
                for i, convert in converts:
                    if values[i] is not None:
                        values[i] = convert(values[i])
                for i, j in key_converted:
                    if values[i] != (key if single is not None else key[j]):
                        raise NotDirect(f"merge key {names[i]}: {values[i]!r} is converted")
            row = dumps(values)
            if b"\\" in row and _control_escape(row):
                out.append(_csv_row(values))
            else:
                out.append(row[1:-1])
        return out


def _csv_field(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) is str:
        if "\x00" in value:
            raise NotDirect("a NUL character in a string")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return orjson.dumps(value).decode()  # int, float, bool


def _csv_row(values: list) -> bytes:
    return ",".join(map(_csv_field, values)).encode()


# ---------------------------------------------------------------------------------- reading
def _parts(store: Store, batches: list[Batch]) -> Iterator[tuple[Batch, Part]]:
    for b in batches:
        for part in batch_parts(store, b):
            yield b, part


def _chunks(store: Store, key: str | Part) -> Iterator[bytes]:
    """A gzipped part (checked, ``staging.Verified``) or key file (a key), decompressed, in
    pieces that end at a line's end. A damaged key file is ``NotDirect``: the validated
    path does not need it."""
    try:
        with open_part(store, key) as f:
            rest = b""
            while data := f.read(_CHUNK):
                data = rest + data
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                if cut:
                    yield data[:cut]
            if rest:
                yield rest + b"\n"
    except CorruptBatch as e:
        if isinstance(key, Part):
            raise
        raise NotDirect(str(e)) from None
    except StoreError as e:
        if isinstance(e, TransientError):
            raise
        raise NotDirect(f"{e} (staged before key files existed?)") from None


def _key_file_chunks(store: Store, batches: list[Batch]) -> Iterator[bytes]:
    """The key files of the batches' parts as CSV for ``jc_keys``, checking that each batch
    has as many key lines as staged lines."""
    counts: dict[str, int] = {}
    for b, part in _parts(store, batches):
        for chunk in _chunks(store, keys_of(part.key)):
            if b"\\" in chunk and _control_escape(chunk):
                raise NotDirect("a merge key with a control character")
            counts[b.id] = counts.get(b.id, 0) + chunk.count(b"\n")
            yield chunk
    for b in batches:
        if counts.get(b.id, 0) != b.rows:
            raise NotDirect(f"batch {b.id}: {counts.get(b.id, 0):,} key lines for "
                            f"{b.rows:,} staged lines")


def _keys(chunks: Iterable[bytes], columns: int) -> list:
    """A key file's lines: values for a one-column key, lists of values otherwise."""
    keys: list = []
    for chunk in chunks:
        lines = chunk[:-1].replace(b"\n", b"," if columns == 1 else b"],[")
        try:
            keys += orjson.loads(b"[" + lines + b"]" if columns == 1 else b"[[" + lines + b"]]")
        except orjson.JSONDecodeError:
            raise NotDirect("a key file orjson cannot read") from None
    return keys


class _Stream:
    """A file-like ``COPY ... FROM STDIN`` source reading an iterator of byte strings. An error
    of the iterator is kept in ``error``: psycopg2 reports it only as a cancelled COPY."""

    def __init__(self, source: Iterator[bytes]):
        self.error: BaseException | None = None
        self._source = source

    def read(self, size: int = -1) -> bytes:
        try:
            return next(self._source, b"")
        except BaseException as e:
            self.error = e
            raise


class _Rendered(_Stream):
    """A ``COPY`` source of CSV rows rendered by a thread that starts at once, so that it works
    while the key files are read and the replaced rows deleted. It may run up to ``ahead``
    pieces (about 1 MiB each) ahead of the COPY. ``replaced`` must be set before the first
    read: those lines are left out."""

    def __init__(self, source: Iterator[tuple[int, list[bytes]]], ahead: int = 32):
        super().__init__(iter(()))
        self.replaced: set[int] | None = None
        self._rows = source
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True,
                                        name="jankycron-direct-load")
        self._thread.start()

    def _produce(self) -> None:
        try:
            for piece in self._rows:
                if not self._put(piece):
                    return
            self._put(None)
        except BaseException as e:  # handed to the reading side, which raises it
            self._put(e)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def read(self, size: int = -1) -> bytes:
        assert self.replaced is not None
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                self.error = item
                raise item
            first, rows = item
            if self.replaced:
                rows = [r for n, r in enumerate(rows, first) if n not in self.replaced]
            if rows:  # b"" would end the COPY
                rows.append(b"")
                return b"\n".join(rows)
        return b""

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _copy(cur: Any, sql: str, source: _Stream) -> int:
    """Run one COPY from ``source``; a refused row or an unusable line is ``NotDirect``."""
    try:
        cur.copy_expert(sql, source, size=_CHUNK)
    except psycopg2.errors.QueryCanceled:
        if source.error is not None:  # the source failed; psycopg2 says "COPY cancelled"
            raise source.error from None
        raise
    except (psycopg2.DataError, psycopg2.IntegrityError) as e:
        raise NotDirect(str(e).strip().splitlines()[0]) from None
    return cur.rowcount


# ---------------------------------------------------------------------------------- loading
def _rendered(plan: Plan, store: Store, batches: list[Batch]
              ) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, CSV rows) per piece of the batches' parts, in order."""
    line = 1
    for b, part in _parts(store, batches):
        keys = _keys(_chunks(store, keys_of(part.key)), len(plan.key_at))
        done = 0
        with of_batch(b.id):
            for chunk in _chunks(store, part):
                lines = chunk[:-1].split(b"\n")
                yield line, plan.render(lines, keys[done:done + len(lines)])
                done += len(lines)
                line += len(lines)
        if done != len(keys):
            raise NotDirect(f"{part.key}: more key file lines than lines")


def load(cur: Any, table: str, plan: Plan, store: Store, batches: list[Batch]
         ) -> list[tuple[int, int]]:
    """Steps 1 and 2 of the module docstring, on ``cur`` inside the merge transaction; returns
    (line, the line with its key that wins) for every line a later one replaced, for
    ``warehouse.count_replaced``."""
    rows = _Rendered(_rendered(plan, store, batches))  # rendering starts now
    try:
        pairs = _replace(cur, table, plan, store, batches)
        rows.replaced = {line for line, _ in pairs}
        clock = time.monotonic()
        columns = ", ".join(quote_ident(n) for n in plan.names)
        got = _copy(cur, f"COPY {quote_ident(table)} ({columns}) FROM STDIN WITH "
                         f"({COPY_OPTIONS})", rows)
    finally:
        rows.close()
    expected = sum(b.rows for b in batches) - len(rows.replaced)
    if got != expected:
        raise NotDirect(f"copied {got:,} rows, expected {expected:,}")
    log.info("%s: %d rows copied in %.2fs", table, got, time.monotonic() - clock)
    return pairs


def _replace(cur: Any, table: str, plan: Plan, store: Store, batches: list[Batch]
             ) -> list[tuple[int, int]]:
    """Read the key files into ``jc_keys`` and delete the table's rows with those keys; the
    lines that a later line with the same key replaces, each with that line."""
    clock = time.monotonic()
    t = quote_ident(table)
    keys = [quote_ident(plan.names[i]) for i in plan.key_at]
    key_list = ", ".join(keys)
    cur.execute(f"CREATE TEMP TABLE jc_keys ON COMMIT DROP AS SELECT {key_list} FROM {t} "
                "WITH NO DATA")
    for k in keys:  # a null key is refused by the COPY (the validated path dead-letters it)
        cur.execute(f"ALTER TABLE jc_keys ALTER COLUMN {k} SET NOT NULL")
    cur.execute("ALTER TABLE jc_keys ADD COLUMN jc_line bigint GENERATED ALWAYS AS IDENTITY")
    total = sum(b.rows for b in batches)
    got = _copy(cur, f"COPY jc_keys ({key_list}) FROM STDIN WITH ({COPY_OPTIONS})",
                _Stream(_key_file_chunks(store, batches)))
    if got != total:
        raise NotDirect(f"{got:,} key lines for {total:,} staged lines")
    # Keys all different, the usual case: a unique index says so in about half the time of
    # the grouping that finds the repeated ones.
    cur.execute("SAVEPOINT jc_unique")
    try:
        cur.execute(f"CREATE UNIQUE INDEX ON jc_keys ({key_list})")
        replaced: list[tuple[int, int]] = []
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT jc_unique")
        same = " AND ".join(f"jc_k.{k} = jc_d.{k}" for k in keys)
        cur.execute(f"SELECT jc_k.jc_line, jc_d.jc_last FROM jc_keys jc_k JOIN (SELECT "
                    f"{key_list}, max(jc_line) AS jc_last FROM jc_keys GROUP BY {key_list} "
                    f"HAVING count(*) > 1) jc_d ON {same} WHERE jc_k.jc_line < jc_d.jc_last")
        replaced = cur.fetchall()
    except psycopg2.Error as e:  # a key type with no btree index (no ordinary equality)
        raise NotDirect(f"merge key: {str(e).strip().splitlines()[0]}") from None
    cur.execute("RELEASE SAVEPOINT jc_unique")
    on = " AND ".join(f"{t}.{k} = jc_k.{k}" for k in keys)
    cur.execute(f"DELETE FROM {t} USING jc_keys jc_k WHERE {on}")
    log.info("%s: %d keys read, their rows deleted, %d lines replaced by later ones, in %.2fs",
             table, total, len(replaced), time.monotonic() - clock)
    return replaced
