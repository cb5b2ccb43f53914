"""The ``confman`` command: inspect, change, audit and watch configuration from a shell.

Every subcommand opens the same database the services use (embedded SQLite
``confman.db`` in the working directory by default, ``--database-url`` or
``CONFMAN_DATABASE_URL`` for another) and goes through the same managers, so a change
made here is validated, version-checked, audited and pushed to every running instance
exactly like one made in code. See ``docs/cli.md``.

Built on Click (parsing) and Rich (tables), one module per command group: ``db``,
``documents`` (list/get/set/delete), ``history`` (history/rollback), ``watch``,
``environments`` (env list/create/delete, reset), ``diff``, ``keys``, ``serve`` and
``tokens``; ``context`` holds the shared options and what they build (``-e`` among
them), ``errors`` the exit codes, ``output`` the printing, and ``main`` the group.

Errors are one line on stderr (``confman: error: ...``) with the exit code of
`confman.cli.errors`, never a traceback (``-vv`` adds tracebacks to log records, for
bug reports). No secret value is ever printed.
"""

from __future__ import annotations

from .documents import build_patch
from .errors import CannotStart, CliError, UsageError
from .main import cli, main

__all__ = ["CannotStart", "CliError", "UsageError", "build_patch", "cli", "main"]
