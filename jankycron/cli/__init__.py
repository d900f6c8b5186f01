"""The operator's CLI (click). Expected failures print one line on stderr and exit 1.

Commands live in ``ops`` (jobs, check, load, history, deadletters, migrate) and ``runs``
(run, backfill, rerun, dev); this module holds the group, the shared ``App`` and ``main``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable
from functools import cached_property, update_wrapper
from typing import Any

import click

from ..config import Settings
from ..discovery import Registry, discover
from ..errors import JankycronError
from ..runner import Context
from ..scrub import Scrubber, environ_secrets, install_log_filter, safe_text

log = logging.getLogger(__name__)


class App:
    """What every command needs: settings, the discovered jobs, the connections."""

    def __init__(self, environ: dict[str, str]):
        self.settings = Settings.from_env(environ)
        self._registry: tuple[Registry, list] | None = None
        self.ctx = Context(self.settings, progress=lambda m: click.echo(m, err=True),
                           jobs=self._job)

    def discovered(self) -> tuple[Registry, list]:
        if self._registry is None:
            self._registry = discover(self.settings.jobs_path, self.settings.import_timeout)
        return self._registry

    def _job(self, name: str) -> Any:
        """The discovered job of that name, or None (for the loader's alerts)."""
        registry = self.discovered()[0]
        return registry.get(name) if name in registry else None

    @cached_property
    def celery(self) -> Any:
        """The Celery app, to enqueue to the workers (built on first use; the broker is
        checked so that an unreachable one is one clear line, not a hang)."""
        from ..celery_app import check_broker, make_celery

        app = make_celery(self.settings, self.discovered()[0])
        check_broker(app, self.settings)
        return app

    @property
    def registry(self) -> Registry:
        registry, errors = self.discovered()
        for e in errors:  # a broken job file never stops the others; say so once
            click.echo(f"warning: skipped {e}", err=True)
        return registry


def command(group: click.Group, *args: Any, **kwargs: Any) -> Callable:
    """A group command that receives the App and closes its connections afterwards."""

    def decorate(fn: Callable) -> Callable:
        @click.pass_context
        def wrapper(cctx: click.Context, **params: Any) -> Any:
            app: App = cctx.obj
            try:
                return fn(app, **params)
            finally:
                app.ctx.close()

        return group.command(*args, **kwargs)(update_wrapper(wrapper, fn))

    return decorate


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress at INFO level.")
@click.pass_context
def cli(cctx: click.Context, verbose: bool) -> None:
    """jankycron: scheduled batch jobs, every record loaded exactly once."""
    # Without -v the CLI itself says what matters (progress, results, one error line); the
    # log (with tracebacks of job errors) is for -v and for the workers.
    logging.basicConfig(level=logging.INFO if verbose else logging.CRITICAL, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cctx.obj = App(dict(os.environ))
    # Every log line (and traceback) passes through one scrubber of the configured secrets.
    install_log_filter(cctx.obj.settings.scrubber())


def _dump(rows: list[dict[str, Any]]) -> None:
    click.echo(json.dumps(rows, indent=2, ensure_ascii=False))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())



def _print_run(row: dict[str, Any]) -> None:
    line = (f"{row['job']} {row['start']}..{row['end']}: {row['status']}; "
            f"{row['rows_extracted']:,} extracted, {row['rows_loaded']:,} loaded, "
            f"{row['rows_rejected']:,} dead-lettered")
    if row.get("rows_replaced"):
        line += f", {row['rows_replaced']:,} replaced by a later record with the same key"
    click.echo(line)
    if row["dropped_keys"]:
        dropped = ", ".join(f"{k} ({n:,})" for k, n in sorted(row["dropped_keys"].items()))
        click.echo(f"  keys with no column, dropped: {dropped}")
    if row["rows_rejected"]:
        click.echo(f"  see: jankycron deadletters --run {row['run_id']}")


def _scrubber() -> Scrubber:
    """The configured secrets; with settings that do not parse, the environment's."""
    try:
        return Settings.from_env(os.environ).scrubber()
    except JankycronError:
        return Scrubber(environ_secrets(os.environ))


def main() -> None:
    """Entry point: expected errors are one line on stderr, exit 1; no secrets in output."""
    try:
        code = cli.main(standalone_mode=False)  # returns the code of a click Exit
    except JankycronError as e:
        click.echo(f"error: {safe_text(_scrubber()(str(e)), 2000)}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except Exception:  # a bug: the traceback is for a developer, still without secrets
        click.echo(safe_text(_scrubber()(traceback.format_exc()), None), err=True, nl=False)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


from . import ops, runs  # noqa: E402,F401  (registers the commands)
