"""The ``confman`` group, and `main`: run a command, return its exit code."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from .. import __version__
from ..exceptions import ConfmanError
from .backup import backup, restore
from .context import shared_options
from .db import db
from .diff import diff
from .documents import delete, get, list_, set_
from .environments import env, reset
from .errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    Interrupted,
    error_line,
    one_line,
)
from .history import history, rollback
from .keys import keys
from .promote import change_set, promote
from .serve import serve
from .tokens import tokens
from .transfer import export, import_
from .watch import watch

__all__ = ["cli", "main"]

log = logging.getLogger("confman.cli")

EPILOG = """\b
exit codes: 0 ok, 1 error, 2 usage or configuration (an unknown environment too),
3 concurrency conflict, 4 validation refused, 5 serve cannot start (port taken, host
unresolvable), 6 bad backup or export file, 7 encryption keys cannot decrypt a file's
secrets.
environment: CONFMAN_DATABASE_URL, CONFMAN_APP (comma-separated module:attribute),
CONFMAN_ENCRYPTION_KEY, CONFMAN_ENVIRONMENT (the default of -e; `-e base` for the base);
CONFMAN_<NAMESPACE>__<FIELD> variables and .env/.env.<ENVIRONMENT>/local.env in the
working directory override stored values, as in services.
"""


class _Confman(click.Group):
    """The root group: reports every error as one line and returns the exit code.

    `main` is Click's entry point, so ``CliRunner().invoke(cli, ...)`` sees exactly what a
    shell sees: the same one-line errors and exit codes.
    """

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        code = _run(self, list(sys.argv[1:] if args is None else args))
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(
    cls=_Confman,
    invoke_without_command=True,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="confman", message="%(prog)s %(version)s")
@shared_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Inspect, change, audit and watch confman configuration."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("a COMMAND is required", ctx)


for command in (
    db,
    list_,
    get,
    set_,
    delete,
    reset,
    history,
    rollback,
    watch,
    env,
    diff,
    promote,
    change_set,
    keys,
    serve,
    tokens,
    backup,
    restore,
    export,
    import_,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``confman`` command; return its exit code (never raises, never exits)."""
    return _run(cli, list(sys.argv[1:] if argv is None else argv))


def _run(group: click.Group, args: list[str]) -> int:
    try:
        result = click.Group.main(group, args, prog_name="confman", standalone_mode=False)
        return int(result) if isinstance(result, int) else EXIT_OK
    except (KeyboardInterrupt, click.Abort, Interrupted):
        click.echo("confman: interrupted", err=True)
        return EXIT_INTERRUPTED
    except SystemExit as e:  # Click's own exit on a broken pipe
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`confman watch | head -1`); silence the flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as e:
        message, code = error_line(e)
        if logging.getLogger().isEnabledFor(logging.DEBUG) and not isinstance(
            e, CliError | ConfmanError | click.ClickException
        ):
            log.exception("unexpected error")
        click.echo(f"confman: error: {one_line(message)}", err=True)
        return code
