"""The options every command shares, and the context they build: database and managers.

The shared options (``--database-url``, ``--app``, ``-v``) are module-level decorators,
stacked on the ``confman`` group and on every command, so they may be given before or
after the command's name; their values are gathered in one `Settings`. ``-e`` /
``--environment`` (`environment`) is stacked on each command that reads or writes
documents: its hub is opened in that environment (the base by default).
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import importlib
import logging
import os
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import click
from click.core import ParameterSource
from sqlalchemy.engine import URL

from ..environments import ENVIRONMENT_VARIABLE, UnknownEnvironment, check_environment_name
from ..exceptions import SchemaOutOfDate, ValidationFailed
from ..hub import ConfigHub, registered_managers
from ..manager import DEFAULT_KEY, ConfigurationManager
from ..store.engine import DEFAULT_DATABASE_URL, normalize_url, sqlite_path
from .errors import CliError, Interrupted, UsageError
from .output import warn

__all__ = [
    "APP_VARIABLE",
    "BASE_NAME",
    "DATABASE_URL_VARIABLE",
    "Context",
    "ManagerClass",
    "Settings",
    "actor_name",
    "actor_option",
    "app",
    "database_url",
    "environment",
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
#: What names the base on the command line (no environment can be called that).
BASE_NAME = "base"

# What the CLI can open: plain sqlite:// and postgresql:// get their async drivers
# (see normalize_url).
_BACKENDS = ("sqlite", "postgresql")
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
    # -e/--environment: whether the command takes it, and its value (None: the base).
    scoped: bool = False
    environment: str | None = None


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


def _store_environment(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    settings = _settings(ctx)
    settings.scoped = True
    name = (value or "").strip()
    settings.environment = None if name in ("", BASE_NAME) else name


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


environment = click.option(
    "-e",
    "--environment",
    metavar="NAME",
    envvar=ENVIRONMENT_VARIABLE,
    expose_value=False,
    callback=_store_environment,
    help=f"the environment to read or write (default: ${ENVIRONMENT_VARIABLE}, else the "
    f"base; {BASE_NAME!r} names the base)",
)


def shared_options(f: Callable[P, R]) -> Callable[P, R]:
    """``--database-url``, ``--app`` and ``-v``: on the group and on every command."""
    return database_url(app(verbose(f)))


expect_version = click.option(
    "--expect-version",
    type=click.IntRange(min=0),
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
    """Parse a database URL, refusing (exit 2) what confman cannot open."""
    try:
        parsed = normalize_url(url)
        port = parsed.port
    except Exception:
        raise UsageError(f"invalid database URL ({_URL_EXAMPLES})") from None
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise UsageError(
            f"unsupported database {backend!r} in the database URL: confman stores "
            f"configuration in SQLite or PostgreSQL ({_URL_EXAMPLES})"
        )
    try:
        is_async = bool(parsed.get_dialect().is_async)
    except Exception:
        is_async = False
    if not is_async:
        raise UsageError(
            f"database driver {parsed.drivername!r} is not an async driver confman can use: "
            "use sqlite:// (aiosqlite) or postgresql:// (asyncpg)"
        )
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"the database URL's port {port} is out of range (1-65535)")
    return parsed


@dataclass(slots=True)
class Context:
    """What every command needs: the database and the managers the CLI knows."""

    database_url: str
    known: dict[str, ManagerClass]
    given: bool = False  # by --database-url or $CONFMAN_DATABASE_URL, not the default
    from_env: bool = False
    verbosity: int = 0
    #: -e/--environment (None: the base); only commands that take it set ``scoped``.
    environment: str | None = None
    scoped: bool = False

    @property
    def where(self) -> str:
        """`` in staging`` after a document's name, nothing for the base."""
        return "" if self.environment is None else f" in {self.environment}"

    @property
    def shown_url(self) -> str:
        return normalize_url(self.database_url).render_as_string(hide_password=True)

    def hint(self, arguments: str, *, portable: bool = False) -> str:
        """The ``confman`` command line that runs ``arguments`` on this database, as printed.

        In this shell, the default database or ``$CONFMAN_DATABASE_URL`` needs nothing
        more; a ``portable`` hint (one to run from another terminal, say ``serve``'s)
        always names the database, a SQLite file by its absolute path. A password is
        never printed: a URL with one from the variable is named by the variable.
        """
        command = f"confman {arguments}"
        if not portable and (not self.given or self.from_env):
            return command
        parsed = normalize_url(self.database_url)
        path = sqlite_path(parsed)
        if path is not None:
            shown = parsed.set(database=str(path.resolve())).render_as_string()
        elif parsed.password is not None and self.from_env:
            return f'{command} --database-url "${DATABASE_URL_VARIABLE}"'
        else:
            shown = parsed.render_as_string(hide_password=True)
        return f"{command} --database-url {shlex.quote(shown)}"

    def create_sqlite_file(self) -> Path | None:
        """The SQLite file if this command must create it; refuse (exit 2) where it cannot.

        Checked before any engine opens it: SQLite's own failure, under ``/proc`` say, comes
        from aiosqlite's worker thread after the event loop is gone, as two tracebacks.
        """
        path = sqlite_path(self.database_url)
        if path is None or path.exists():
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as e:
            raise UsageError(
                f"cannot create the database file {path}: {e.strerror or e} (pass another "
                "--database-url)"
            ) from None
        path.unlink()  # SQLite creates it; this only proved it can
        return path

    @contextlib.contextmanager
    def removing_on_failure(self, path: Path | None) -> Iterator[None]:
        """Remove a database file this command created if the command then fails."""
        try:
            yield
        except BaseException:
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise

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
                f"database file {path} does not exist; run `{self.hint('db upgrade')}` to "
                "create it (or pass --database-url)"
            )

    @contextlib.asynccontextmanager
    async def hub(
        self, managers: Iterable[ManagerClass], **options: Any
    ) -> AsyncIterator[ConfigHub]:
        """A hub on this database; a command with ``-e`` gets one in that environment
        (``environment=""`` in ``options``: the base, whatever ``CONFMAN_ENVIRONMENT`` says).

        Raises:
            UnknownEnvironment: the environment names none (a malformed name included).
        """
        self.require_database()
        if self.scoped:
            options.setdefault("environment", self.environment or "")
        named = options.get("environment")
        if named:
            try:
                check_environment_name(named)
            except ValidationFailed:
                raise UnknownEnvironment(named, await self.environment_names()) from None
        try:
            async with ConfigHub.connect(
                self.database_url, managers=list(managers), **options
            ) as h:
                yield h
        except SchemaOutOfDate as e:
            # The library's hint names the default database; name this one.
            fixed = str(e).replace("`confman db upgrade`", f"`{self.hint('db upgrade')}`")
            raise CliError(fixed) from None

    async def environment_names(self) -> list[str]:
        """The environments the registry lists, by name."""
        async with self.hub([], environment="") as h:
            return sorted(h.known_environments)


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
        environment=settings.environment,
        scoped=settings.scoped,
    )


def pass_context(f: Callable[Concatenate[Context, P], R]) -> Callable[P, R]:
    """Build the `Context` (after logging is set up) and hand it to the command."""

    @functools.wraps(f)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        settings = _settings(click.get_current_context())
        _configure_logging(settings.verbose)
        try:
            return f(_context(settings), *args, **kwargs)
        except KeyboardInterrupt:
            # Click would print a blank line before its Abort: keep the report one line.
            raise Interrupted("interrupted") from None

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
