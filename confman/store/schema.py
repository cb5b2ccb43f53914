"""Alembic glue: where the migrations live, what head is, and whether a database is there."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..exceptions import SchemaOutOfDate
from .engine import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported inside the functions: every CLI run and hub start would otherwise
# pay for importing it, while only upgrades and the schema check need it.

__all__ = [
    "SCHEMA_HEAD",
    "alembic_config",
    "check_schema",
    "check_schema_on",
    "current_revisions",
    "downgrade",
    "head_revision",
    "migrations_dir",
    "upgrade",
]


def migrations_dir() -> Path:
    """The migrations: packed into the wheel, or the repository's ``migrations/``."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("confman's Alembic migrations are missing from this install")


def alembic_config(database_url: str | URL) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    url = normalize_url(database_url).render_as_string(hide_password=False)
    # ConfigParser interpolation would choke on a '%' in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def current_revisions(engine: AsyncEngine) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        heads = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_heads()
        )
    return tuple(heads)


# The newest migration's revision. Kept here so that start-up checks the schema with one
# query instead of importing Alembic and parsing every migration script; a test proves
# it equals Alembic's head.
SCHEMA_HEAD = "0003"


async def check_schema(engine: AsyncEngine) -> None:
    """Raise `SchemaOutOfDate` unless the database is exactly at head.

    With no deadline of its own (a CLI's one-off check); a running hub checks through
    `ConfigStore.check_schema`, which has one.
    """
    async with engine.connect() as conn:
        await check_schema_on(conn)


async def check_schema_on(conn: AsyncConnection) -> None:
    """`check_schema` on a connection the caller holds."""
    try:
        current = tuple(await conn.scalars(text("SELECT version_num FROM alembic_version")))
    except ProgrammingError:  # PostgreSQL: no such table
        current = ()
    except OperationalError as e:  # SQLite says "no such table" this way too
        if "no such table" not in str(e):
            raise
        current = ()
    if current != (SCHEMA_HEAD,):
        raise SchemaOutOfDate(current, SCHEMA_HEAD)


def _off_loop(fn: Callable[[], None]) -> None:
    # env.py drives its own event loop with asyncio.run(), which refuses to start on a
    # thread that already runs one; give it a thread of its own in that case.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fn()
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(fn).result()


def upgrade(database_url: str | URL, revision: str = "head") -> None:
    """``alembic upgrade`` (blocking; from async code prefer `upgrade_async`)."""
    from alembic import command

    _off_loop(lambda: command.upgrade(alembic_config(database_url), revision))


def downgrade(database_url: str | URL, revision: str) -> None:
    from alembic import command

    _off_loop(lambda: command.downgrade(alembic_config(database_url), revision))


async def upgrade_async(database_url: str | URL, revision: str = "head") -> None:
    from alembic import command

    await asyncio.to_thread(command.upgrade, alembic_config(database_url), revision)
