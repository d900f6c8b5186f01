"""One rooted exception tree.

Every error jankycron raises on purpose is a ``JankycronError``. Two branches decide what
happens next: a ``TransientError`` means "try again later, nothing is lost" (a warehouse that
is down, a 503, a rate limit); a ``TerminalError`` means retrying will not help (a job bug, a
bad configuration). ``SkipRun`` is control flow a job may raise: nothing to do, not a failure.

The CLI prints ``str(error)`` of a ``JankycronError`` as one line and exits non-zero; only
unexpected exceptions get a traceback. Messages never contain secrets: URLs are redacted with
``config.redact`` before they are put in a message.
"""

from __future__ import annotations

import traceback
from pathlib import Path


class JankycronError(Exception):
    """Root of every error jankycron raises on purpose."""


class TransientError(JankycronError):
    """Retry me: the cause is expected to go away (network, 5xx, rate limit, maintenance).

    A job may raise it too::

        if resp.status_code == 503:
            raise TransientError("provider is down for maintenance")
    """


class TerminalError(JankycronError):
    """Retrying will not help; the run fails and alerts."""


class SkipRun(JankycronError):  # noqa: N818 - control flow, named like huey's CancelExecution
    """Raised by a job when there is nothing to do for this interval; the run is 'skipped'."""


class RunTimedOut(TerminalError):  # noqa: N818 - reads as what happened
    """A run went past its job's ``timeout``."""


class ConfigError(TerminalError):
    """A setting is missing or malformed."""


class JobDefinitionError(TerminalError):
    """A job file or an ``@job(...)`` call is malformed."""


class JobExited(TerminalError):  # noqa: N818 - reads as what happened
    """A job's code called ``sys.exit`` or ``os._exit``: its run fails, the process goes on."""


class UnknownJob(TerminalError):  # noqa: N818
    """No job of that name was discovered."""


class StoreError(JankycronError):
    """The object store (S3 or a local folder) failed."""


class StoreUnavailable(StoreError, TransientError):
    """The object store could not be reached; staged data stays where it is."""


class LedgerUnavailable(TransientError):
    """The ledger (SQLite file or PostgreSQL) could not be reached or written: the run cannot
    be recorded, which is not the job's fault. Raised by the ledger in one place
    (``Ledger._errors``)."""


class ObjectMissing(StoreError):
    """The store answered, but has no object under that key."""


class CorruptBatch(TerminalError):
    """A staged batch that cannot be loaded as staged: a part or its manifest is missing,
    unreadable, outside the store, or not what staging recorded (line count, digest). The
    loader quarantines the batch (``BatchStatus.CORRUPT``) and loads the others. The message
    names the object key and what is wrong; ``batch_id`` is set by the reader that knows it."""

    def __init__(self, key: str, problem: str, batch_id: str | None = None):
        super().__init__(f"damaged staged object {key}: {problem}")
        self.key, self.problem, self.batch_id = key, problem, batch_id


class WarehouseError(JankycronError):
    """The warehouse refused a statement for a reason that retrying will not fix."""


class WarehouseUnavailable(WarehouseError, TransientError):
    """The warehouse could not be reached or timed out; pending batches stay pending."""


class TableNotFound(WarehouseError, TerminalError):
    """The target table does not exist (tables are created by migrations, not the loader)."""


def line_in(exc: BaseException, path: str | Path) -> int | None:
    """The line of ``path`` nearest the raise in ``exc``'s traceback, if the error passed
    through that file (a job file, for messages that point at the analyst's code)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if Path(frame.filename) == Path(path):
            return frame.lineno
    return None
