"""The ``confman`` command: inspect, change, audit and watch configuration from a shell.

Every subcommand opens the same database the services use (embedded SQLite
``confman.db`` in the working directory by default, ``--database-url`` or
``CONFMAN_DATABASE_URL`` for another) and goes through the same managers, so a change
made here is validated, version-checked, audited and pushed to every running instance
exactly like one made in code. See ``docs/cli.md``.

Exit codes: 0 success, 1 error, 2 usage, 3 concurrency conflict, 4 validation refused.
Errors are one line on stderr (``confman: error: ...``), never a traceback (``-vv``
adds tracebacks to log records, for bug reports). No secret value is ever printed.

One module per command group: ``db``, ``documents`` (list/get/set/delete), ``history``
(history/rollback), ``watch``, ``keys``, ``serve`` and ``tokens``; ``base`` holds what
they share and ``main`` the parser.
"""

from __future__ import annotations

from .base import CliError, UsageError, build_patch
from .main import build_parser, main

__all__ = ["CliError", "UsageError", "build_parser", "build_patch", "main"]
