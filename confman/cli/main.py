"""The parser and ``main``: every command and its options."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .. import __version__
from ..exceptions import ConfmanError
from ..store.engine import DEFAULT_DATABASE_URL

__all__ = ["main"]
from .base import (
    APP_VARIABLE,
    CLUSTER_VARIABLE,
    DATABASE_URL_VARIABLE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    REDIS_URL_VARIABLE,
    CliError,
    Context,
    _context,
    _error_line,
    _one_line,
    _Parser,
    log,
)
from .db import cmd_db_current, cmd_db_upgrade
from .documents import cmd_delete, cmd_get, cmd_list, cmd_set
from .history import cmd_history, cmd_rollback
from .keys import cmd_keys_generate, cmd_keys_rotate
from .serve import cmd_serve
from .tokens import cmd_tokens_create, cmd_tokens_list, cmd_tokens_revoke
from .watch import cmd_watch

# --------------------------------------------------------------------------- parser

Handler = Callable[[argparse.Namespace, Context], "int | Coroutine[Any, Any, int]"]

EPILOG = """\
exit codes: 0 ok, 1 error, 2 usage, 3 concurrency conflict, 4 validation refused.
environment: CONFMAN_DATABASE_URL, CONFMAN_APP (comma-separated module:attribute),
CONFMAN_ENCRYPTION_KEY; CONFMAN_<NAMESPACE>__<FIELD> variables and .env/local.env in the
working directory override stored values, as in services.
"""


def _common_options(suffix: str) -> argparse.ArgumentParser:
    """The options every command takes, before or after the subcommand's name.

    A sub-parser's values overwrite the main parser's, so the two levels store under
    different names (``suffix``) and `_merge_common` combines them.
    """
    common = _Parser(add_help=False)
    common.add_argument(
        "--database-url",
        dest=f"database_url{suffix}",
        metavar="URL",
        help=f"SQLAlchemy URL (default: ${DATABASE_URL_VARIABLE} or {DEFAULT_DATABASE_URL})",
    )
    common.add_argument(
        "--app",
        dest=f"app{suffix}",
        action="append",
        metavar="MODULE:ATTR",
        help="also use the manager class (or list of them) at MODULE:ATTR; repeatable "
        f"(default: ${APP_VARIABLE}, comma-separated)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        dest=f"verbose{suffix}",
        action="count",
        default=0,
        help="log more: -v info, -vv debug with tracebacks",
    )
    return common


def _merge_common(args: argparse.Namespace) -> argparse.Namespace:
    sub = "_sub"
    args.database_url = getattr(args, "database_url" + sub, None) or args.database_url
    apps = [*(args.app or []), *(getattr(args, "app" + sub, None) or [])]
    args.app = apps or None
    args.verbose = args.verbose + (getattr(args, "verbose" + sub, 0) or 0)
    return args


def build_parser() -> argparse.ArgumentParser:
    common = _common_options("_sub")

    parser = _Parser(
        prog="confman",
        description="Inspect, change, audit and watch confman configuration.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options("")],
    )
    parser.add_argument("--version", action="version", version=f"confman {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        subparsers: Any, name: str, handler: Handler, help: str, **kw: Any
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(
            name, help=help, description=help, parents=[common], **kw
        )
        p.set_defaults(handler=handler)
        return p

    def write_options(p: argparse.ArgumentParser, *, expect: bool = True) -> None:
        if expect:
            p.add_argument(
                "--expect-version",
                type=int,
                metavar="N",
                help="refuse (exit 3) unless the stored version is N (0: must not exist)",
            )
        p.add_argument("--reason", help="why, for the audit trail")
        p.add_argument("--actor", help="who, for the audit trail (default: your user name)")

    db = commands.add_parser("db", help="database schema", description="Database schema.")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    p = command(db_commands, "upgrade", cmd_db_upgrade, "create or migrate the database schema")
    p.add_argument("revision", nargs="?", default="head", help=argparse.SUPPRESS)
    p = command(db_commands, "current", cmd_db_current, "show the schema revision and head")
    p.add_argument("--check", action="store_true", help="exit 1 unless the schema is at head")

    command(commands, "list", cmd_list, "namespaces with their kind, items and version")

    p = command(commands, "get", cmd_get, "print an effective value as JSON (secrets masked)")
    p.add_argument("namespace")
    p.add_argument("key", nargs="?", help="collection item (all items when omitted)")
    p.add_argument("--explain", action="store_true", help="show where each field comes from")

    p = command(
        commands,
        "set",
        cmd_set,
        "change fields (a merge patch); creates a collection item that does not exist",
        usage="confman set NAMESPACE [KEY] FIELD=VALUE [FIELD=VALUE ...] [options]",
    )
    p.add_argument("namespace")
    p.add_argument(
        "words",
        nargs="+",
        metavar="[KEY] FIELD=VALUE",
        help="FIELD may be dotted (limits.rpm=10); VALUE is JSON if it parses, else a string; "
        "null resets a field to its default",
    )
    write_options(p)

    p = command(commands, "delete", cmd_delete, "delete an item, or reset a singleton")
    p.add_argument("namespace")
    p.add_argument("key", nargs="?")
    write_options(p)

    p = command(commands, "history", cmd_history, "audited changes, newest first")
    p.add_argument("namespace")
    p.add_argument("key", nargs="?")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (default 20)")

    p = command(commands, "rollback", cmd_rollback, "restore an earlier version as a new one")
    p.add_argument("namespace")
    p.add_argument("key", nargs="?")
    p.add_argument("--to-version", type=int, required=True, metavar="N")
    write_options(p)

    p = command(commands, "watch", cmd_watch, "print changes live, from any process")
    p.add_argument("namespaces", nargs="*", metavar="NAMESPACE", help="default: all")
    p.add_argument("--count", type=int, metavar="N", help="exit after N changes")
    p.add_argument(
        "--timeout", type=float, metavar="S", help="exit after S seconds (error if --count unmet)"
    )
    p.add_argument(
        "--interval",
        type=float,
        default=0.5,
        metavar="S",
        help="seconds between change-log polls (default 0.5)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    keys = commands.add_parser("keys", help="encryption keys", description="Encryption keys.")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    command(key_commands, "generate", cmd_keys_generate, "print a new encryption key")
    p = command(
        key_commands,
        "rotate",
        cmd_keys_rotate,
        "re-encrypt every stored secret with the first key of CONFMAN_ENCRYPTION_KEY",
    )
    p.add_argument("--actor", help="who, for the audit trail (default: your user name)")
    p.add_argument("--reason", help="why, for the audit trail")

    p = command(
        commands,
        "serve",
        cmd_serve,
        "serve the HTTP API, live change stream and dashboard (needs the api extra)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8400, help="port to listen on (8400)")
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"share changes with other instances through Redis (default: ${REDIS_URL_VARIABLE})",
    )
    p.add_argument(
        "--cluster",
        metavar="NAME",
        help=f"the fleet's name: Redis keys and channels start with it (default: "
        f"${CLUSTER_VARIABLE} or confman)",
    )
    p.add_argument(
        "--bootstrap-token",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="when no API token exists, create an admin token and print it once "
        "(default: on for embedded SQLite only)",
    )

    tokens = commands.add_parser(
        "tokens", help="API bearer tokens", description="API bearer tokens (confman serve)."
    )
    token_commands = tokens.add_subparsers(dest="tokens_command", metavar="COMMAND", required=True)
    p = command(
        token_commands,
        "create",
        cmd_tokens_create,
        "create a token and print it (only the hash is stored; it is shown once)",
    )
    p.add_argument("--name", required=True, help="also the actor its writes are audited as")
    p.add_argument("--role", required=True, choices=["viewer", "editor", "admin"])
    p.add_argument("--namespaces", metavar="A,B", help="only these namespaces (default: all)")
    p.add_argument("--actor", help="who, for the audit trail (default: your user name)")
    command(token_commands, "list", cmd_tokens_list, "list tokens (never their values)")
    p = command(token_commands, "revoke", cmd_tokens_revoke, "revoke a token on every instance")
    p.add_argument("name")
    p.add_argument("--actor", help="who, for the audit trail (default: your user name)")
    return parser


# --------------------------------------------------------------------------- main


class _Formatter(logging.Formatter):
    def __init__(self, tracebacks: bool) -> None:
        super().__init__("confman: %(levelname)s: %(name)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = record.levelname.lower()
        if not self.tracebacks:
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return super().format(record)


def _configure_logging(verbosity: int) -> None:
    root = logging.getLogger()
    if root.handlers:  # called from a program (or a test) that set logging up: leave it
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(tracebacks=verbosity >= 2))
    root.addHandler(handler)
    root.setLevel(
        logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING
    )
    if verbosity < 2:
        logging.getLogger("sqlalchemy").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``confman`` command; return its exit code (never raises, never exits)."""
    verbosity = 0
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help, --version
            return e.code if isinstance(e.code, int) else EXIT_OK
        args = _merge_common(args)
        verbosity = args.verbose
        _configure_logging(verbosity)
        ctx = _context(args)
        result = args.handler(args, ctx)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result)
    except KeyboardInterrupt:
        print("confman: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`confman watch | head -1`); silence the flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as e:
        message, code = _error_line(e)
        if verbosity >= 2 and not isinstance(e, CliError | ConfmanError):
            log.exception("unexpected error")
        print(f"confman: error: {_one_line(message)}", file=sys.stderr, flush=True)
        return code
