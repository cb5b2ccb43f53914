"""Exit codes and the errors that carry them; every error is reported as one line.

```
ConfmanError
└── CliError            exit 1: the command failed (click.ClickException too)
    ├── UsageError      exit 2: bad arguments, options, database or Redis URL, --app
    ├── CannotStart     exit 5: `serve` could not bind (port taken, host unresolvable)
    └── Interrupted     exit 130: Ctrl-C
```

Library errors keep their own classes and are mapped to a code by `error_line`:
`UnknownEnvironment` 2 (as an unknown namespace), `ConcurrencyConflict` 3,
`ValidationFailed` 4, `BadFile` 6 (a backup or export file that cannot be used),
`KeysCannotDecrypt` 7 (the configured keys cannot read a file's secrets), any other
`ConfmanError` 1 (`EnvironmentNotEmpty` and `DatabaseNotEmpty` included).
"""

from __future__ import annotations

import click

from ..backup import BadFile, KeysCannotDecrypt
from ..environments import EnvironmentNotEmpty, UnknownEnvironment
from ..exceptions import ConcurrencyConflict, ConfmanError, ValidationFailed

__all__ = [
    "EXIT_BAD_FILE",
    "EXIT_CANNOT_START",
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_KEYS",
    "EXIT_OK",
    "EXIT_USAGE",
    "CannotStart",
    "CliError",
    "Interrupted",
    "UsageError",
    "error_line",
    "one_line",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_INVALID = 4
EXIT_CANNOT_START = 5
EXIT_BAD_FILE = 6
EXIT_KEYS = 7
EXIT_INTERRUPTED = 130


class CliError(click.ClickException, ConfmanError):
    """A failure to report as one line, with its exit code."""

    exit_code = EXIT_ERROR


class UsageError(CliError):
    """A mistake in how the command was called or configured (exit 2)."""

    exit_code = EXIT_USAGE


class Interrupted(CliError):
    """Ctrl-C outside ``watch`` and ``serve``, which stop cleanly instead (exit 130)."""

    exit_code = EXIT_INTERRUPTED


class CannotStart(CliError):
    """`serve` could not listen: the port is taken or the host does not resolve (exit 5)."""

    exit_code = EXIT_CANNOT_START


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_line(e: BaseException) -> tuple[str, int]:
    """The one line and the exit code that report ``e``."""
    if isinstance(e, click.UsageError):  # Click's own: a bad option, argument or command
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        return f"{_lower_first(e.format_message())}{where}", EXIT_USAGE
    if isinstance(e, click.ClickException):
        return e.format_message(), e.exit_code
    if isinstance(e, UnknownEnvironment):
        known = ", ".join(["base", *e.known])
        more = "" if e.known else "; create one with `confman env create NAME`"
        return f"unknown environment {e.name!r} (known: {known}{more})", EXIT_USAGE
    if isinstance(e, EnvironmentNotEmpty):
        return (
            f"environment {e.name!r} still holds {e.documents} document(s); nothing was "
            "removed (--force removes them too, each removal audited)",
            EXIT_ERROR,
        )
    if isinstance(e, ConcurrencyConflict):
        return f"{e}; nothing was written (re-read and retry)", EXIT_CONFLICT
    if isinstance(e, ValidationFailed):
        return f"{e}; nothing was written", EXIT_INVALID
    if isinstance(e, BadFile):
        return f"{e}; nothing was written", EXIT_BAD_FILE
    if isinstance(e, KeysCannotDecrypt):
        return str(e), EXIT_KEYS
    if isinstance(e, ConfmanError):
        return str(e), EXIT_ERROR
    return f"unexpected {type(e).__name__}: {e} (run with -vv for details)", EXIT_ERROR


def _lower_first(text: str) -> str:
    # Click writes "No such option: --bogus."; our lines read "confman: error: no such ...".
    text = text.rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text
