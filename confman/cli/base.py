"""What every command shares: exit codes, errors, the context, output helpers."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from ..exceptions import ConcurrencyConflict, ConfmanError, ValidationFailed
from ..hub import ConfigHub, registered_managers
from ..manager import DEFAULT_KEY, ConfigurationManager
from ..secrets import mask_document
from ..sources.base import parse_value
from ..store.engine import DEFAULT_DATABASE_URL, normalize_url, sqlite_path

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
