"""Alembic glue: where the migrations live, what head is, and whether a database is there."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ..exceptions import SchemaOutOfDate
from .engine import normalize_url

__all__ = [
    "alembic_config",
    "check_schema",
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
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    url = normalize_url(database_url).render_as_string(hide_password=False)
    # ConfigParser interpolation would choke on a '%' in a password.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def current_revisions(engine: AsyncEngine) -> tuple[str, ...]:
    async with engine.connect() as conn:
        heads = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_heads()
        )
    return tuple(heads)


async def check_schema(engine: AsyncEngine) -> None:
    """Raise `SchemaOutOfDate` unless the database is exactly at head."""
    current = await current_revisions(engine)
    head = head_revision()
    if current != (head,):
        raise SchemaOutOfDate(current, head)


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
    _off_loop(lambda: command.upgrade(alembic_config(database_url), revision))


def downgrade(database_url: str | URL, revision: str) -> None:
    _off_loop(lambda: command.downgrade(alembic_config(database_url), revision))


async def upgrade_async(database_url: str | URL, revision: str = "head") -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), revision)
