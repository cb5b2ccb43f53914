"""The options every command shares, and the context they build: database and managers.

The shared options (``--database-url``, ``--app``, ``-v``) are module-level decorators,
stacked on the ``confman`` group and on every command, so they may be given before or
after the command's name; their values are gathered in one `Settings`.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import importlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import click
from click.core import ParameterSource
from sqlalchemy.engine import URL

from ..hub import ConfigHub, registered_managers
from ..manager import DEFAULT_KEY, ConfigurationManager
from ..store.engine import DEFAULT_DATABASE_URL, normalize_url, sqlite_path
from .errors import CliError, UsageError
from .output import warn

__all__ = [
    "APP_VARIABLE",
    "DATABASE_URL_VARIABLE",
    "Context",
    "ManagerClass",
    "Settings",
    "actor_name",
    "actor_option",
    "app",
    "database_url",
    "expect_version",
    "key_for",
    "pass_context",
    "reason",
    "report_problems",
    "shared_options",
    "verbose",
    "write_options",
]

ManagerClass = type[ConfigurationManager[Any]]

DATABASE_URL_VARIABLE = "CONFMAN_DATABASE_URL"
APP_VARIABLE = "CONFMAN_APP"

_URL_EXAMPLES = "e.g. sqlite:///confman.db or postgresql://user:password@host/dbname"

P = ParamSpec("P")
R = TypeVar("R")


# --------------------------------------------------------------------------- shared options


@dataclass(slots=True)
class Settings:
    """The shared options, from whichever level (group or command) gave them."""

    database_url: str | None = None
    database_url_from_env: bool = False
    apps: list[str] = field(default_factory=list)
    verbose: int = 0


def _settings(ctx: click.Context) -> Settings:
    return ctx.find_root().ensure_object(Settings)


def _store_database_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    settings = _settings(ctx)
    source = ctx.get_parameter_source(param.name or "")
    # The environment fills the option at both levels; a command-line value wins.
    if source is ParameterSource.COMMANDLINE or settings.database_url is None:
        settings.database_url = value
        settings.database_url_from_env = source is ParameterSource.ENVIRONMENT


def _store_apps(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    _settings(ctx).apps.extend(value)


def _store_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    _settings(ctx).verbose += value


database_url = click.option(
    "--database-url",
    metavar="URL",
    envvar=DATABASE_URL_VARIABLE,
    expose_value=False,
    callback=_store_database_url,
    help=f"SQLAlchemy URL (default: ${DATABASE_URL_VARIABLE} or {DEFAULT_DATABASE_URL})",
)
app = click.option(
    "--app",
    metavar="MODULE:ATTR",
    multiple=True,
    expose_value=False,
    callback=_store_apps,
    help="also use the manager class (or list of them) at MODULE:ATTR; repeatable "
    f"(default: ${APP_VARIABLE}, comma-separated)",
)
verbose = click.option(
    "-v",
    "--verbose",
    count=True,
    expose_value=False,
    callback=_store_verbose,
    help="log more: -v info, -vv debug with tracebacks",
)


def shared_options(f: Callable[P, R]) -> Callable[P, R]:
    """``--database-url``, ``--app`` and ``-v``: on the group and on every command."""
    return database_url(app(verbose(f)))


expect_version = click.option(
    "--expect-version",
    type=int,
    metavar="N",
    help="refuse (exit 3) unless the stored version is N (0: must not exist)",
)
reason = click.option("--reason", help="why, for the audit trail")
actor_option = click.option("--actor", help="who, for the audit trail (default: your user name)")


def write_options(f: Callable[P, R]) -> Callable[P, R]:
    """``--expect-version``, ``--reason`` and ``--actor``: on every command that writes."""
    return expect_version(reason(actor_option(f)))


# --------------------------------------------------------------------------- context


def check_database_url(url: str) -> URL:
    """Parse a database URL, refusing (exit 2) one that does not parse."""
    try:
        return normalize_url(url)
    except Exception:
        raise UsageError(f"invalid database URL ({_URL_EXAMPLES})") from None


@dataclass(slots=True)
class Context:
    """What every command needs: the database and the managers the CLI knows."""

    database_url: str
    known: dict[str, ManagerClass]
    given: bool = False  # by --database-url or $CONFMAN_DATABASE_URL, not the default
    from_env: bool = False
    verbosity: int = 0

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
                f"database file {path} does not exist; run `confman db upgrade` to "
                "create it (or pass --database-url)"
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


def _context(settings: Settings) -> Context:
    url = settings.database_url or DEFAULT_DATABASE_URL
    check_database_url(url)
    apps = settings.apps or [a for a in os.environ.get(APP_VARIABLE, "").split(",") if a.strip()]
    return Context(
        url,
        _known_managers(apps),
        given=settings.database_url is not None,
        from_env=settings.database_url_from_env,
        verbosity=settings.verbose,
    )


def pass_context(f: Callable[Concatenate[Context, P], R]) -> Callable[P, R]:
    """Build the `Context` (after logging is set up) and hand it to the command."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        settings = _settings(click.get_current_context())
        _configure_logging(settings.verbose)
        return f(_context(settings), *args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- helpers


def key_for(cls: ManagerClass, key: str | None, *, required: bool = True) -> str | None:
    if not cls.keyed:
        if key not in (None, DEFAULT_KEY):
            raise UsageError(f"{cls.namespace} is a singleton: it takes no KEY (got {key!r})")
        return DEFAULT_KEY
    if key is None and required:
        raise UsageError(f"{cls.namespace} is a collection: name the KEY")
    return key


def report_problems(manager: ConfigurationManager[Any]) -> None:
    for problem in manager.problems():
        warn(f"serving the last valid value; refused {problem}")


def actor_name(given: str | None) -> str | None:
    if given:
        return given
    try:
        return getpass.getuser()
    except Exception:
        return None


# --------------------------------------------------------------------------- logging


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
