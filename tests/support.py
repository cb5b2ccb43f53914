"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from confman import ConfigHub

POSTGRES_ADMIN_URL = os.environ.get(
    "CONFMAN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CONFMAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MQTT_URL = os.environ.get("CONFMAN_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
IN_CI = os.environ.get("CI", "").lower() == "true"
RUN_ID = uuid.uuid4().hex[:8]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Fail under CI, skip (saying why) elsewhere, when a service is not reachable."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}; run scripts/test, which starts it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def pg_url(database: str) -> str:
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{database}"


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def new_pg_database(template: str | None = None) -> str:
    """A new database (cloned from ``template`` when given); returns its name."""
    name = f"confman_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    await pg_admin(f'CREATE DATABASE "{name}"{clause}')
    return name


async def drop_pg_database(name: str) -> None:
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect(database_url: str, env: dict[str, str] | None = None, **options: Any) -> Any:
    """`ConfigHub.connect` with test isolation: no real environment, no env files."""
    options.setdefault("env_files", ())
    return ConfigHub.connect(database_url, env=env or {}, **options)


@contextlib.contextmanager
def own_database(kind: str, request: pytest.FixtureRequest, directory: Path) -> Iterator[str]:
    """A migrated, empty database of ``kind`` (cloned from the session's templates: the
    ``sqlite_template`` and ``pg_template`` fixtures), dropped afterwards."""
    if kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = directory / "confman.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    pg_tpl: str = request.getfixturevalue("pg_template")
    name = run(new_pg_database(pg_tpl))
    try:
        yield pg_url(name)
    finally:
        run(drop_pg_database(name))


def run(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def unique_cluster() -> str:
    """A cluster name (the Redis key and channel prefix) no other test or run uses."""
    return f"confman-test-{uuid.uuid4().hex[:12]}"
