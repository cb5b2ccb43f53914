"""Fixtures of the gateway managers' tests: hubs with all four managers, raw table reads."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event

from confman import ConfigHub, ConfigurationManager
from confman.managers import (
    CacheConfigurationManager,
    ModelProviderConfigurationManager,
    RouterConfigurationManager,
    VirtualKeyConfigurationManager,
)
from confman.store.engine import sqlite_path

GATEWAY_MANAGERS: list[type[ConfigurationManager[Any]]] = [
    CacheConfigurationManager,
    ModelProviderConfigurationManager,
    RouterConfigurationManager,
    VirtualKeyConfigurationManager,
]


def connect_gateway(database_url: str, env: dict[str, str], **options: Any) -> Any:
    options.setdefault("managers", GATEWAY_MANAGERS)
    return ConfigHub.connect(database_url, env=env, env_files=(), **options)


@pytest.fixture
async def ghub(database_url: str, hub_env: dict[str, str]) -> AsyncIterator[ConfigHub]:
    """A hub with the four gateway managers on a fresh database of each kind."""
    async with connect_gateway(database_url, hub_env) as hub:
        yield hub


async def assert_nothing_written(
    manager: ConfigurationManager[Any], key: str, *, version: int = 0
) -> None:
    """The refused write left no trace: same version stored, no change logged past it."""
    doc = await manager.hub.store.load(manager.namespace, key)
    assert (doc.version if doc else 0) == version
    history = await manager.history(key)
    assert len(history) == version
    assert manager.version(key) == version


async def raw_table_text(database_url: str) -> list[str]:
    """Every row of both tables as the database holds it, as text."""
    path = sqlite_path(database_url)
    if path is not None:
        with sqlite3.connect(path) as conn:
            return [
                repr(r)
                for table in ("config_documents", "config_changes")
                for r in conn.execute(f"SELECT * FROM {table}")
            ]
    conn = await asyncpg.connect(database_url)
    try:
        rows = []
        for table in ("config_documents", "config_changes"):
            rows.extend(r[0] for r in await conn.fetch(f"SELECT t::text FROM {table} t"))
        return rows
    finally:
        await conn.close()


@contextmanager
def count_queries(hub: ConfigHub, table: str = "config_documents") -> Iterator[list[str]]:
    """Collect the SQL statements that touch ``table`` while the block runs."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if table in statement:
            seen.append(statement)

    engine = hub.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
