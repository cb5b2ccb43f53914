"""The ``confman`` command: inspect, change, audit and watch configuration from a shell.

Every subcommand opens the same database the services use (embedded SQLite
``confman.db`` in the working directory by default, ``--database-url`` or
``CONFMAN_DATABASE_URL`` for another) and goes through the same managers, so a change
made here is validated, version-checked, audited and pushed to every running instance
exactly like one made in code. See ``docs/cli.md``.

Exit codes: 0 success, 1 error, 2 usage, 3 concurrency conflict, 4 validation refused.
Errors are one line on stderr (``confman: error: ...``), never a traceback (``-vv``
adds tracebacks to log records, for bug reports). No secret value is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .change import Action, ChangeRecord, ConfigChange, Layer
from .exceptions import ConcurrencyConflict, ConfmanError, NotFound, ValidationFailed
from .hub import ConfigHub, registered_managers
from .manager import DEFAULT_KEY, ConfigurationManager
from .secrets import generate_key, mask_document
from .sources.base import parse_value
from .store.engine import DEFAULT_DATABASE_URL, normalize_url, sqlite_path

if TYPE_CHECKING:
    from .api.tokens import ApiTokenManager

__all__ = ["main"]

ManagerClass = type[ConfigurationManager[Any]]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_INVALID = 4
EXIT_INTERRUPTED = 130

DATABASE_URL_VARIABLE = "CONFMAN_DATABASE_URL"
APP_VARIABLE = "CONFMAN_APP"
REDIS_URL_VARIABLE = "CONFMAN_REDIS_URL"
CLUSTER_VARIABLE = "CONFMAN_CLUSTER"

log = logging.getLogger("confman.cli")


# --------------------------------------------------------------------------- errors


class CliError(Exception):
    """A failure to report as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class _Parser(argparse.ArgumentParser):
    """argparse, but errors become one line and an exception instead of an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_line(e: BaseException) -> tuple[str, int]:
    if isinstance(e, CliError):
        return str(e), e.code
    if isinstance(e, ConcurrencyConflict):
        return f"{e}; nothing was written (re-read and retry)", EXIT_CONFLICT
    if isinstance(e, ValidationFailed):
        return f"{e}; nothing was written", EXIT_INVALID
    if isinstance(e, ConfmanError):
        return str(e), EXIT_ERROR
    return f"unexpected {type(e).__name__}: {e} (run with -vv for details)", EXIT_ERROR


# --------------------------------------------------------------------------- context


@dataclass(slots=True)
class Context:
    """What every command needs: the database and the managers the CLI knows."""

    database_url: str
    known: dict[str, ManagerClass]

    @property
    def shown_url(self) -> str:
        return normalize_url(self.database_url).render_as_string(hide_password=True)

    def manager_class(self, namespace: str) -> ManagerClass:
        found = self.known.get(namespace)
        if found is None:
            known = ", ".join(sorted(self.known)) or "none"
            raise UsageError(
                f"unknown namespace {namespace!r}; known: {known} "
                "(add managers with --app module:attribute)"
            )
        return found

    def require_database(self) -> None:
        """For SQLite, refuse to create a database file implicitly."""
        path = sqlite_path(self.database_url)
        if path is not None and not path.exists():
            raise CliError(
                f"database file {path} does not exist; run `confman db upgrade` to create it "
                "(or pass --database-url)"
            )

    @contextlib.asynccontextmanager
    async def hub(
        self, managers: Iterable[ManagerClass], **options: Any
    ) -> AsyncIterator[ConfigHub]:
        self.require_database()
        async with ConfigHub.connect(self.database_url, managers=list(managers), **options) as h:
            yield h


def _with_requirements(classes: Iterable[ManagerClass]) -> list[ManagerClass]:
    seen: list[ManagerClass] = []

    def visit(cls: ManagerClass) -> None:
        if cls in seen:
            return
        for required in cls.requires:
            visit(required)
        seen.append(cls)

    for cls in classes:
        visit(cls)
    return seen


def _load_app(spec: str) -> list[ManagerClass]:
    module_name, sep, attribute = spec.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"--app expects module:attribute, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules in the working directory
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(
            f"--app {spec}: cannot import {module_name!r}: {type(e).__name__}: {e}"
        ) from e
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"--app {spec}: {module_name} has no attribute {attribute!r}"
            ) from None
    candidates = list(obj) if isinstance(obj, list | tuple) else [obj]
    for cls in candidates:
        if not (
            isinstance(cls, type)
            and issubclass(cls, ConfigurationManager)
            and isinstance(getattr(cls, "namespace", None), str)
        ):
            raise UsageError(
                f"--app {spec}: expected a ConfigurationManager subclass or a list of them, "
                f"got {cls!r}"
            )
    return candidates


def _known_managers(apps: Sequence[str]) -> dict[str, ManagerClass]:
    """Registered managers, then the ``--app`` ones (which win on a shared namespace)."""
    known = {cls.namespace: cls for cls in _with_requirements(registered_managers())}
    from_apps: dict[str, ManagerClass] = {}
    for spec in apps:
        for cls in _with_requirements(_load_app(spec)):
            other = from_apps.get(cls.namespace)
            if other is not None and other is not cls:
                raise UsageError(
                    f"namespace {cls.namespace!r} is defined twice by --app: "
                    f"{other.__name__} and {cls.__name__}"
                )
            from_apps[cls.namespace] = cls
    known.update(from_apps)
    return dict(sorted(known.items()))


def _context(args: argparse.Namespace) -> Context:
    url = args.database_url or os.environ.get(DATABASE_URL_VARIABLE) or DEFAULT_DATABASE_URL
    try:
        normalize_url(url)
    except Exception:
        raise UsageError(
            "invalid database URL (expected e.g. sqlite:///confman.db or "
            "postgresql://user:password@host/dbname)"
        ) from None
    apps: list[str] | None = args.app
    if apps is None:
        apps = [a for a in os.environ.get(APP_VARIABLE, "").split(",") if a.strip()]
    return Context(url, _known_managers(apps))


# --------------------------------------------------------------------------- output


def _out(text: str = "") -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    print(f"confman: warning: {_one_line(text)}", file=sys.stderr, flush=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    body = [[_one_line(cell) or "-" for cell in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    lines = [[h.upper() for h in headers], *body]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in lines
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _masked(value: Any) -> dict[str, Any]:
    return mask_document(value.model_dump(mode="python"))


def _label(namespace: str, key: str) -> str:
    return f"{namespace}/{key}"


def _fields(paths: Sequence[str]) -> str:
    return ", ".join(paths) if paths else "-"


def _key_for(cls: ManagerClass, key: str | None, *, required: bool = True) -> str | None:
    if not cls.keyed:
        if key not in (None, DEFAULT_KEY):
            raise UsageError(f"{cls.namespace} is a singleton: it takes no KEY (got {key!r})")
        return DEFAULT_KEY
    if key is None and required:
        raise UsageError(f"{cls.namespace} is a collection: name the KEY")
    return key


def _report_problems(manager: ConfigurationManager[Any]) -> None:
    for problem in manager.problems():
        _warn(f"serving the last valid value; refused {problem}")


def _actor(args: argparse.Namespace) -> str | None:
    given: str | None = args.actor
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:
        return None


# --------------------------------------------------------------------------- set helpers


def build_patch(assignments: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as JSON if they can be).

    Never echoes a value in an error: it might be a secret.
    """
    patch: dict[str, Any] = {}
    assigned: list[tuple[str, ...]] = []
    for position, text in enumerate(assignments, start=1):
        field, sep, raw = text.partition("=")
        parts = tuple(p.strip() for p in field.split("."))
        if not sep or not field.strip():
            raise UsageError(f"assignment {position} is not of the form field=value")
        if not all(parts):
            raise UsageError(f"assignment {position}: empty field name in {field.strip()!r}")
        for earlier in assigned:
            shorter = min(len(earlier), len(parts))
            if earlier[:shorter] == parts[:shorter]:
                raise UsageError(
                    f"{'.'.join(parts)} and {'.'.join(earlier)} are assigned together; "
                    "assign each field once"
                )
        assigned.append(parts)
        node = patch
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_value(raw)
    return patch


def _split_key(cls: ManagerClass, words: Sequence[str]) -> tuple[str | None, list[str]]:
    """``set``'s positionals: an optional KEY (no '='), then field=value assignments."""
    key: str | None = None
    rest = list(words)
    if rest and "=" not in rest[0]:
        first = rest.pop(0)
        if not cls.keyed and first != DEFAULT_KEY:
            raise UsageError(
                f"{cls.namespace} is a singleton: it takes no KEY, only field=value "
                f"assignments (got {first!r})"
            )
        key = first
    if not rest:
        raise UsageError("nothing to set: give at least one field=value")
    return key, rest


# --------------------------------------------------------------------------- commands


async def cmd_db_current(args: argparse.Namespace, ctx: Context) -> int:
    from .store import create_engine, head_revision
    from .store.schema import current_revisions

    ctx.require_database()
    engine = create_engine(ctx.database_url)
    try:
        current = await current_revisions(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    at_head = current == (head,)
    _out(f"database: {ctx.shown_url}")
    _out(f"current:  {', '.join(current) or 'none (no confman schema)'}")
    _out(f"head:     {head}")
    _out("up to date" if at_head else "out of date: run `confman db upgrade`")
    if args.check and not at_head:
        raise CliError("the database schema is not at head; run `confman db upgrade`")
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace, ctx: Context) -> int:
    from .store import head_revision, upgrade

    path = sqlite_path(ctx.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(ctx.database_url, args.revision)
    target = head_revision() if args.revision == "head" else args.revision
    _out(f"database {ctx.shown_url} is at {target}")
    return EXIT_OK


async def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    rows: list[list[str]] = []
    failed = 0
    async with ctx.hub([]) as hub:
        stored = await hub.store.namespaces()
        for namespace, cls in ctx.known.items():
            kind = "collection" if cls.keyed else "singleton"
            try:
                manager = await hub.load(cls)
            except ConfmanError as e:
                failed += 1
                _warn(f"{namespace}: {e}")
                rows.append([namespace, kind, "?", "?"])
                continue
            if cls.keyed:
                # Count what is stored: a lazily loaded manager holds only what it cached.
                rows.append([namespace, kind, str(stored.get(namespace, 0)), ""])
            else:
                version = manager.version()
                shown = str(version) if version else "0 (defaults)"
                rows.append([namespace, kind, "1", shown])
        for namespace, count in sorted(stored.items()):
            if namespace not in ctx.known:
                rows.append([namespace, "unknown (no manager; see --app)", str(count), ""])
    _out(_table(["namespace", "kind", "items", "version"], rows))
    if failed:
        raise CliError(f"{failed} namespace(s) could not be loaded (see the warnings above)")
    return EXIT_OK


async def cmd_get(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    key = _key_for(cls, args.key, required=args.explain)
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        _report_problems(manager)
        if key is None:  # a whole collection, as stored (lazy managers cache only some)
            documents = await hub.store.load_namespace(cls.namespace)
            items = {}
            for doc in sorted(documents, key=lambda d: d.key):
                found = await manager.fetch(doc.key)
                if found is not None:
                    items[doc.key] = _masked(found)
            _out(json.dumps(items, indent=2, ensure_ascii=False))
            return EXIT_OK
        value = await manager.fetch(key)
        if value is None:
            raise NotFound(f"{cls.namespace} has no item {key!r}")
        if not args.explain:
            _out(json.dumps(_masked(value), indent=2, ensure_ascii=False))
            return EXIT_OK
        version = manager.version(key)
        stored = f"version {version}" if version else "nothing stored (version 0)"
        _out(f"{_label(cls.namespace, key)}: {stored}")
        rows = [
            [f.path, _json(f.value), str(f.layer), f.detail or "", ", ".join(f.shadows)]
            for f in manager.explain(key)
        ]
        _out(_table(["path", "value", "layer", "detail", "shadows"], rows))
    return EXIT_OK


def _describe_change(change: ConfigChange[Any], manager: ConfigurationManager[Any]) -> None:
    label = _label(change.namespace, change.key)
    verb = {
        Action.CREATE: "created",
        Action.UPDATE: "updated",
        Action.DELETE: "deleted",
        Action.ROLLBACK: "rolled back",
        Action.IMPORT: "imported",
    }[change.action]
    _out(f"{verb} {label}: now version {change.version}")
    if change.changed_fields:
        _out(f"changed: {', '.join(change.changed_fields)}")
    elif change.new is not None and change.old is not None and not change.pinned:
        _out("changed: nothing (the effective value is the same)")
    if change.pinned:
        origins: list[str] = []
        if change.new is not None:
            for f in manager.explain(change.key):
                pinned = any(f.path == p or f.path.startswith(p + ".") for p in change.pinned)
                overridden = f.layer in (Layer.ENV_FILE, Layer.ENVIRONMENT)
                if pinned and overridden and f.detail and f.detail not in origins:
                    origins.append(f.detail)
        by = f" ({', '.join(origins)})" if origins else ""
        _out(
            f"note: {', '.join(change.pinned)} pinned by an override{by}: the stored value "
            "changed, the effective value did not"
        )


async def cmd_set(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    word_key, assignments = _split_key(cls, args.words)
    key = _key_for(cls, word_key)
    assert key is not None
    patch = build_patch(assignments)
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        actor, reason = _actor(args), args.reason
        # fetch, not `in`: a lazily loaded manager (virtual keys) holds only what it cached.
        missing = cls.keyed and await manager.fetch(key) is None
        if missing and args.expect_version in (None, 0):
            change = await manager.create(key, patch, actor=actor, reason=reason)
        else:
            change = await manager.update(
                patch, key=key, expected_version=args.expect_version, actor=actor, reason=reason
            )
        _describe_change(change, manager)
    return EXIT_OK


async def cmd_delete(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    key = _key_for(cls, args.key)
    assert key is not None
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        change = await manager.delete(
            key, expected_version=args.expect_version, actor=_actor(args), reason=args.reason
        )
        _describe_change(change, manager)
        if not cls.keyed:
            _out(f"{cls.namespace} is back to its defaults (and any overrides)")
    return EXIT_OK


async def cmd_history(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    key = _key_for(cls, args.key)
    assert key is not None
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    # Read the log directly: history must work even when the current value cannot load.
    async with ctx.hub([]) as hub:
        records: list[ChangeRecord] = await hub.store.history(cls.namespace, key, limit=args.limit)
    if not records:
        _out(f"{_label(cls.namespace, key)} has no recorded changes")
        return EXIT_OK
    rows = [
        [
            str(r.seq),
            str(r.version),
            str(r.action),
            r.actor or "",
            r.reason or "",
            _time(r.committed_at),
            _fields(r.changed),
        ]
        for r in records
    ]
    _out(_table(["seq", "version", "action", "actor", "reason", "time", "changed"], rows))
    return EXIT_OK


async def cmd_rollback(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    key = _key_for(cls, args.key)
    assert key is not None
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        change = await manager.rollback(
            key,
            to_version=args.to_version,
            expected_version=args.expect_version,
            actor=_actor(args),
            reason=args.reason,
        )
        _describe_change(change, manager)
    return EXIT_OK


def _watch_line(change: ConfigChange[Any]) -> str:
    parts = [
        _time(change.at),
        f"#{change.seq}",
        _label(change.namespace, change.key),
        f"v{change.version}",
        str(change.action),
        f"by {change.actor or '-'}:",
        _fields(change.changed_fields)
        if change.changed_fields or (change.old is None) == (change.new is None)
        else ("(new item)" if change.old is None else "(item removed)"),
    ]
    if change.pinned:
        parts.append(f"[pinned: {', '.join(change.pinned)}]")
    if change.reason:
        parts.append(f"({_one_line(change.reason)})")
    return " ".join(parts)


def _watch_json(change: ConfigChange[Any]) -> str:
    return _json(
        {
            "seq": change.seq,
            "namespace": change.namespace,
            "key": change.key,
            "version": change.version,
            "action": str(change.action),
            "actor": change.actor,
            "reason": change.reason,
            "changed": list(change.changed_fields),
            "pinned": list(change.pinned),
            "origin": change.origin,
            "at": _time(change.at),
        }
    )


async def cmd_watch(args: argparse.Namespace, ctx: Context) -> int:
    classes = [ctx.manager_class(n) for n in args.namespaces] or list(ctx.known.values())
    if not classes:
        raise CliError("no managers to watch")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    fmt: Callable[[ConfigChange[Any]], str] = _watch_json if args.json else _watch_line
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    queue: asyncio.Queue[ConfigChange[Any]] = asyncio.Queue()
    seen = 0
    async with ctx.hub(classes, catch_up_interval=args.interval) as hub:
        names = []
        for cls in classes:
            manager = hub.manager(cls)
            _report_problems(manager)
            manager.changes.subscribe(on_next=queue.put_nowait)
            names.append(cls.namespace)
        print(
            f"confman: watching {', '.join(names)} on {ctx.shown_url} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )

        async def consume() -> None:
            nonlocal seen
            while args.count is None or seen < args.count:
                change = await queue.get()
                _out(fmt(change))
                seen += 1

        consumer = asyncio.ensure_future(consume())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {consumer, stopper}, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (consumer, stopper):
                task.cancel()
            await asyncio.gather(consumer, stopper, return_exceptions=True)
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)
        if consumer in done:
            consumer.result()  # re-raise a failure (a closed stdout, say)
        elif not done and args.count is not None:
            raise CliError(f"timed out after {args.timeout:g}s with {seen} of {args.count} changes")
    return EXIT_OK


def cmd_keys_generate(args: argparse.Namespace, ctx: Context) -> int:
    _out(generate_key())
    return EXIT_OK


async def cmd_keys_rotate(args: argparse.Namespace, ctx: Context) -> int:
    # Imported lazily: the command exists before (and without) the rotation module.
    try:
        rotation = importlib.import_module("confman.rotation")
    except ModuleNotFoundError as e:
        if e.name != "confman.rotation":
            raise
        raise CliError("key rotation is not available in this version of confman") from None
    rotate_keys: Callable[..., Awaitable[int]] = rotation.rotate_keys
    options = {"reason": args.reason} if args.reason else {}
    async with ctx.hub(ctx.known.values()) as hub:
        count: int = await rotate_keys(hub, actor=_actor(args), **options)
    _out(f"re-encrypted {count} stored secret(s) under the newest key")
    return EXIT_OK


async def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
    try:
        serving = importlib.import_module("confman.api.serve")
    except ModuleNotFoundError as e:
        if e.name is None or e.name.startswith("confman"):
            raise
        raise CliError(
            f"confman serve needs the api extra ({e.name} is missing): pip install 'confman[api]'"
        ) from None
    path = sqlite_path(ctx.database_url)
    if path is not None and not path.exists():
        from .store import upgrade_async

        path.parent.mkdir(parents=True, exist_ok=True)
        await upgrade_async(ctx.database_url)
        _out(f"confman serve: created the embedded database {path}")
    bootstrap = args.bootstrap_token if args.bootstrap_token is not None else path is not None
    redis_url = args.redis_url or os.environ.get(REDIS_URL_VARIABLE) or None
    managers = [*ctx.known.values(), _token_manager()]
    options: dict[str, Any] = {"redis_url": redis_url}
    cluster = args.cluster or os.environ.get(CLUSTER_VARIABLE)
    if cluster:
        options["cluster"] = cluster
    async with ctx.hub(managers, **options) as hub:
        for manager in hub.managers():
            _report_problems(manager)
        await serving.serve(
            hub,
            host=args.host,
            port=args.port,
            bootstrap=bootstrap,
            out=_out,
            verbosity=args.verbose,
        )
    return EXIT_OK


def _token_manager() -> type[ApiTokenManager]:
    # Imported on use: the other commands need nothing of the api package.
    from .api.tokens import ApiTokenManager

    return ApiTokenManager


@contextlib.asynccontextmanager
async def _tokens(ctx: Context) -> AsyncIterator[ApiTokenManager]:
    cls = _token_manager()
    async with ctx.hub([cls]) as hub:
        yield hub.manager(cls)


async def cmd_tokens_create(args: argparse.Namespace, ctx: Context) -> int:
    namespaces = None
    if args.namespaces is not None:
        namespaces = [n.strip() for n in args.namespaces.split(",") if n.strip()]
        unknown = [n for n in namespaces if n not in ctx.known]
        if unknown:
            raise UsageError(f"unknown namespace(s): {', '.join(unknown)}")
    async with _tokens(ctx) as tokens:
        issued = await tokens.create_token(
            args.name, args.role, namespaces=namespaces, actor=_actor(args)
        )
    grants = ", ".join(issued.namespaces) if issued.namespaces is not None else "all namespaces"
    print(
        f"confman: created {issued.role} token {issued.name!r} ({grants}); it is shown only now:",
        file=sys.stderr,
        flush=True,
    )
    _out(issued.plaintext)
    return EXIT_OK


async def cmd_tokens_list(args: argparse.Namespace, ctx: Context) -> int:
    async with _tokens(ctx) as tokens:
        rows = [
            [
                name,
                str(token.role),
                ", ".join(token.namespaces) if token.namespaces is not None else "all",
                _time(token.created_at),
            ]
            for name, token in sorted(tokens.items())
        ]
    _out(_table(["name", "role", "namespaces", "created"], rows))
    return EXIT_OK


async def cmd_tokens_revoke(args: argparse.Namespace, ctx: Context) -> int:
    async with _tokens(ctx) as tokens:
        await tokens.revoke(args.name, actor=_actor(args))
    _out(f"revoked token {args.name!r}")
    return EXIT_OK


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


if __name__ == "__main__":
    sys.exit(main())
