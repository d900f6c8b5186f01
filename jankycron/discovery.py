"""Find jobs by value: every ``*.py`` in the jobs folder not starting with ``_`` holds one Job.

A file that fails to import, or holds no job or several, becomes a ``JobFileError`` naming the
file; the other files' jobs are still found. Files starting with ``_`` are helpers a job may
import (the jobs folder is on ``sys.path`` while job files import).
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def discover(jobs_path: Path | str) -> tuple[Registry, list[JobFileError]]:
    """Import every job file in ``jobs_path``; return the jobs and the per-file errors."""
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
                found = _load_file(path)
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
    finally:
        sys.path.remove(str(folder))
        # Helpers the job files imported (``import _rates``) must be read afresh next time.
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None)
            if origin and Path(origin).resolve().parent == folder:
                del sys.modules[name]
    return Registry(jobs), errors
