"""Engine creation: async drivers by default, and SQLite made safe for concurrent writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, PoolResetState

__all__ = [
    "DEFAULT_DATABASE_TIMEOUT",
    "DEFAULT_DATABASE_URL",
    "WRITE",
    "create_engine",
    "normalize_url",
    "sqlite_path",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///confman.db"

#: Seconds any one database call may take: connecting, the pool checkout, a statement,
#: a commit, and (in `ConfigStore`) each whole store operation. See docs/concepts.md.
DEFAULT_DATABASE_TIMEOUT = 10.0

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


def create_engine(
    url: str | URL, *, timeout: float | None = DEFAULT_DATABASE_TIMEOUT, **kwargs: Any
) -> AsyncEngine:
    """An async engine whose driver gives up on any one call after ``timeout`` seconds.

    Driver-level timeouts are the first line only: a connection whose peer went silent
    can still hang in places they do not cover, so `ConfigStore` also bounds each whole
    operation. ``timeout=None`` keeps the drivers' own defaults (no statement timeout:
    for migrations, whose statements may rightly take long). ``kwargs`` go to
    SQLAlchemy and win over these defaults.
    """
    parsed = normalize_url(url)
    if timeout is not None:
        # Waiting for a free pooled connection is a wait on the database too.
        kwargs.setdefault("pool_timeout", timeout)
    if parsed.get_backend_name() != "sqlite":
        return _server_engine(parsed, timeout=timeout, **kwargs)
    # SQLite's busy timeout: how long a writer waits for another's write lock (without
    # a deadline, the 30 s it had before there were deadlines).
    busy = 30.0 if timeout is None else timeout
    kwargs.setdefault("connect_args", {}).setdefault("timeout", busy)
    # Every transaction confman runs ends itself (COMMIT or ROLLBACK), so the pool's
    # ROLLBACK on every return is a wasted trip to aiosqlite's thread; `_reset` below
    # rolls back only what is still open.
    kwargs.setdefault("pool_reset_on_return", None)
    engine = create_async_engine(parsed, **kwargs)

    # pysqlite's own transaction handling defers BEGIN and cannot begin IMMEDIATE; take
    # it over (the SQLAlchemy-documented recipe) so that a writer takes the write lock
    # up front and waits its turn (busy timeout) instead of failing with SQLITE_BUSY.
    # `ConfigStore.write` issues the same BEGIN IMMEDIATE itself on the driver thread.
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

    @event.listens_for(engine.sync_engine, "reset")
    def _reset(dbapi_connection: Any, record: ConnectionPoolEntry, state: PoolResetState) -> None:
        # A connection must never go back to the pool inside a transaction: a
        # forgotten BEGIN would pin an old snapshot (reads) or the write lock (writes).
        # Asking costs nothing (sqlite3_get_autocommit, no thread hop).
        if state.terminate_only or not state.asyncio_safe or state.transaction_was_reset:
            return
        driver = record.driver_connection
        if driver is not None and driver.in_transaction:
            dbapi_connection.rollback()

    return engine


def _server_engine(url: URL, *, timeout: float | None, **kwargs: Any) -> AsyncEngine:
    connect_args = kwargs.setdefault("connect_args", {})
    if timeout is None:
        pass  # the drivers' own defaults
    elif url.get_driver_name() == "asyncpg":
        connect_args.setdefault("timeout", timeout)  # connecting (asyncpg's default: 60 s)
        connect_args.setdefault("command_timeout", timeout)  # each statement (default: none)
    elif url.get_driver_name() == "psycopg":
        connect_args.setdefault("connect_timeout", max(1, round(timeout)))  # libpq: seconds
    # No pool_pre_ping: on asyncpg it costs three round trips (BEGIN, ";", ROLLBACK) per
    # checkout. A pooled connection the server closed is found here for free (the
    # driver saw the socket close) and replaced; one that dies unnoticed fails its first
    # statement, SQLAlchemy invalidates the pool, and `ConfigStore` retries once.
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(
        _dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        is_closed = getattr(record.driver_connection, "is_closed", None)  # asyncpg
        if is_closed is not None and is_closed():
            raise exc.DisconnectionError("the pooled connection was closed by the server")

    return engine
