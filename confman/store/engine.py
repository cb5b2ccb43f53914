"""Engine creation: async drivers by default, and SQLite made safe for concurrent writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["DEFAULT_DATABASE_URL", "WRITE", "create_engine", "normalize_url", "sqlite_path"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///confman.db"

# Execution option marking a write transaction; on SQLite it begins IMMEDIATE.
WRITE = "confman_write"


def normalize_url(url: str | URL) -> URL:
    """Pick the async driver when the URL names none (``postgresql://``, ``sqlite://``)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def sqlite_path(url: str | URL) -> Path | None:
    parsed = normalize_url(url)
    if (
        parsed.get_backend_name() != "sqlite"
        or not parsed.database
        or parsed.database == ":memory:"
    ):
        return None
    return Path(parsed.database)


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, pool_pre_ping=True, **kwargs)
    kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
    engine = create_async_engine(parsed, **kwargs)

    # pysqlite's own transaction handling defers BEGIN and cannot begin IMMEDIATE; take
    # it over (the SQLAlchemy-documented recipe) so that a writer takes the write lock
    # up front and waits its turn (busy timeout) instead of failing with SQLITE_BUSY.
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
