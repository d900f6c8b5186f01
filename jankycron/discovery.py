"""Find jobs by value: every ``*.py`` in the jobs folder not starting with ``_`` holds one Job.

A file that fails to import, or holds no job or several, becomes a ``JobFileError`` naming the
file; the other files' jobs are still found. Files starting with ``_`` are helpers a job may
import (the jobs folder is on ``sys.path`` while job files import).

Each file's import is bounded (``import_timeout``, ``JANKYCRON_IMPORT_TIMEOUT``): a file whose
import does not finish in time (``while True: pass``, a network call that hangs) is reported
"import did not finish within 10s" and skipped. In the main thread (the CLI, Celery's worker
and beat, gunicorn's sync workers) a SIGALRM timer raises inside the import, which interrupts
Python loops and blocking system calls alike, so nothing is left running. Elsewhere (a threaded
web server) the import runs in a helper thread that is stopped with an asynchronous exception
(``PyThreadState_SetAsyncExc``): that stops Python code at once, and a thread blocked in a
system call when the call returns; a C extension that loops without returning to Python cannot
be stopped in-process (the file is still reported and skipped, and not imported again while
its earlier import runs). A process that discovers again (the status page) reports an
unchanged file that timed out at once, for RETRY_TIMED_OUT seconds, instead of waiting again.

A table has one merge key: jobs that feed one table by different keys would delete each
other's rows, so all of them are skipped, with one error naming each job and its key.
"""

from __future__ import annotations

import ctypes
import difflib
import importlib.util
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import IMPORT_TIMEOUT
from .errors import UnknownJob, line_in
from .job import Job


@dataclass(frozen=True)
class JobFileError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Registry:
    """The jobs discovered in one folder. Each call of ``discover`` builds a fresh one."""

    def __init__(self, jobs: dict[str, Job] | None = None):
        self._jobs: dict[str, Job] = dict(jobs or {})

    def __iter__(self) -> Iterator[Job]:
        return iter(sorted(self._jobs.values(), key=lambda j: j.name))

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: str) -> bool:
        return name in self._jobs

    def get(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._jobs, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UnknownJob(f"unknown job {name!r}{hint} (see `jankycron jobs`)") from None

    def tables(self) -> dict[str, tuple[str, ...]]:
        """Every target table with its merge key."""
        return {t: k for j in self for t, k in j.tables.items()}


def _describe(exc: BaseException, path: Path) -> str:
    """One line: the exception and the line of the job file it came from."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    line = line_in(exc, path)
    return f"{type(exc).__name__}: {exc}" + (f" (line {line})" if line else "")


class ImportTimedOut(BaseException):  # noqa: N818 - reads as what happened
    """Raised inside a job file's import that ran past its time. A BaseException, so that the
    file's own ``except Exception`` does not swallow it."""


AGAIN = 0.2  # seconds: raise again this often while a file keeps swallowing ImportTimedOut
RETRY_TIMED_OUT = 600.0  # seconds before an unchanged file that timed out is imported again
_importing: dict[Path, threading.Thread] = {}  # helper threads of imports that timed out
# Files whose import timed out in this process: (mtime_ns, size) then, and when. A process
# that discovers again (the status page, every 30 s) does not wait for them each time.
_timed_out: dict[Path, tuple[tuple[int, int], float]] = {}


def _load_bounded(path: Path, timeout: float) -> list[Job]:
    """``_load_file`` within ``timeout`` seconds, or ``ImportTimedOut``."""
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    seen = _timed_out.get(path)
    if seen and seen[0] == stamp and time.monotonic() - seen[1] < RETRY_TIMED_OUT:
        raise ImportTimedOut
    try:
        # SIGALRM in the main thread, unless its handler was set outside Python (getsignal
        # None: it could not be put back); a helper thread otherwise.
        if threading.current_thread() is threading.main_thread() and \
                hasattr(signal, "setitimer") and signal.getsignal(signal.SIGALRM) is not None:
            jobs = _load_with_alarm(path, timeout)
        else:
            jobs = _load_in_thread(path, timeout)
    except ImportTimedOut:
        _timed_out[path] = (stamp, time.monotonic())
        raise
    _timed_out.pop(path, None)
    return jobs


def _load_with_alarm(path: Path, timeout: float) -> list[Job]:
    def expired(signum: int, frame: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, AGAIN)  # again, should the file catch this one
        raise ImportTimedOut

    previous = signal.signal(signal.SIGALRM, expired)
    pending, every = signal.setitimer(signal.ITIMER_REAL, timeout)
    started = time.monotonic()
    try:
        try:
            return _load_file(path)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)
        if pending:  # a timer of the caller's: give it back, less the time spent here
            signal.setitimer(signal.ITIMER_REAL,
                             max(pending - (time.monotonic() - started), 0.001), every)


def _load_in_thread(path: Path, timeout: float) -> list[Job]:
    earlier = _importing.get(path)
    if earlier is not None and earlier.is_alive():
        raise ImportTimedOut  # still stuck since last time: do not start another one
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["jobs"] = _load_file(path)
        except ImportTimedOut:
            pass
        except BaseException as e:  # handed to the caller, as an import in its thread would
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True, name=f"jankycron-import-{path.name}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        _importing[path] = thread
        threading.Thread(target=_stop, args=(thread, path), daemon=True,
                         name=f"jankycron-stop-import-{path.name}").start()
        raise ImportTimedOut
    _importing.pop(path, None)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["jobs"]  # type: ignore[return-value]


def _stop(thread: threading.Thread, path: Path) -> None:
    """Raise ImportTimedOut in ``thread`` until it ends (it takes effect when the thread next
    runs Python code)."""
    while thread.is_alive() and thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                   ctypes.py_object(ImportTimedOut))
        thread.join(AGAIN)
    if _importing.get(path) is thread:
        del _importing[path]


def _load_file(path: Path) -> list[Job]:
    module_name = f"jankycron_jobs.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Only jobs defined in this file count, not ones it imported from another job file.
    return [
        v for v in vars(module).values()
        if isinstance(v, Job) and v.source_file and Path(v.source_file) == path
    ]


def _one_key_per_table(jobs: dict[str, Job], shown_folder: Path | str) -> list[JobFileError]:
    """Remove the jobs that feed one table by different merge keys; one error per table."""
    feeders: dict[str, list[Job]] = {}
    for j in sorted(jobs.values(), key=lambda j: Path(j.source_file or "").name):
        for t in j.tables:
            feeders.setdefault(t, []).append(j)
    errors = []
    for table, js in sorted(feeders.items()):
        if len({j.tables[table] for j in js}) < 2:
            continue
        who = ", ".join(f"job {j.name} ({Path(j.source_file or '?').name}) by "
                        f"({', '.join(j.tables[table])})" for j in js)
        first = Path(shown_folder) / Path(js[0].source_file or "?").name
        errors.append(JobFileError(str(first), (
            f"table {table!r} is merged by two keys: {who}; a table has one merge key, so "
            "these jobs are skipped until their keys agree")))
        for j in js:
            jobs.pop(j.name, None)
    return errors


def discover(jobs_path: Path | str, import_timeout: float = IMPORT_TIMEOUT
             ) -> tuple[Registry, list[JobFileError]]:
    """Import every job file in ``jobs_path``, each within ``import_timeout`` seconds; return
    the jobs and the per-file errors."""
    folder = Path(jobs_path).resolve()
    if not folder.is_dir():
        return Registry(), [JobFileError(str(jobs_path), "jobs folder does not exist")]
    jobs: dict[str, Job] = {}
    errors: list[JobFileError] = []
    sys.path.insert(0, str(folder))
    try:
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            shown = str(Path(jobs_path) / path.name)
            try:
                found = _load_bounded(path, import_timeout)
            except ImportTimedOut:
                errors.append(JobFileError(
                    shown, f"import did not finish within {import_timeout:g}s "
                           "(JANKYCRON_IMPORT_TIMEOUT); does it loop or wait at import?"))
                continue
            except (Exception, SystemExit) as exc:  # a broken job file must not stop others
                errors.append(JobFileError(shown, _describe(exc, path)))
                continue
            if len(found) != 1:
                what = "no @job" if not found else f"{len(found)} jobs (" + ", ".join(
                    j.name for j in found) + ")"
                errors.append(JobFileError(shown, f"defines {what}; a job file holds exactly one"))
                continue
            (j,) = found
            if j.name in jobs:
                other = Path(jobs[j.name].source_file or "?").name
                errors.append(JobFileError(shown, f"job name {j.name!r} is also used by {other}"))
                continue
            jobs[j.name] = j
        errors += _one_key_per_table(jobs, jobs_path)
    finally:
        sys.path.remove(str(folder))
        # Helpers the job files imported (``import _rates``) must be read afresh next time.
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None)
            if origin and Path(origin).resolve().parent == folder:
                del sys.modules[name]
    return Registry(jobs), errors
