"""The dead-letter store: records that could not land, kept with the reason, never dropped.

Each batch's rejects are one gzipped NDJSON object per phase, at a deterministic key, so a
batch loaded twice (after a crash) rewrites the same object instead of adding another::

    <store>/deadletter/<table>/<batch_id>/<phase>.ndjson.gz

``phase`` is ``stage`` (the job yielded something JSON cannot hold exactly) or ``load`` (the
warehouse refused the value). The ledger indexes every dead letter for ``jankycron
deadletters``.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

from .ledger import DeadLetter, Ledger
from .store import Store


def object_key(table: str, batch_id: str, phase: str) -> str:
    return f"deadletter/{table}/{batch_id}/{phase}.ndjson.gz"


def write(store: Store, ledger: Ledger, letters: Iterable[DeadLetter]) -> int:
    """Write dead letters to the store first, then index them; returns how many."""
    groups: dict[tuple[str, str, str], list[DeadLetter]] = defaultdict(list)
    for d in letters:
        groups[(d.table, d.batch_id, d.phase)].append(d)
    indexed: list[DeadLetter] = []
    for (table, batch_id, phase), items in groups.items():
        key = object_key(table, batch_id, phase)
        lines = (
            json.dumps({"table": d.table, "job": d.job, "run_id": d.run_id,
                        "batch_id": d.batch_id, "line": d.line, "reason": d.reason,
                        "record": d.record}, ensure_ascii=False) + "\n"
            for d in sorted(items, key=lambda d: d.line)
        )
        store.put_bytes(key, gzip.compress("".join(lines).encode(), mtime=0))
        indexed.extend(replace(d, object_key=key) for d in items)
    ledger.add_deadletters(indexed)
    return len(indexed)
