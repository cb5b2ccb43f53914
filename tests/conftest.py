"""Shared fixtures: real SQLite and PostgreSQL databases, isolated per test.

PostgreSQL: one migrated template database per test session, and for each test a new
database cloned from it (``CREATE DATABASE ... TEMPLATE``), dropped afterwards. SQLite: a
migrated template file copied into each test's ``tmp_path``. Nothing a test did not
create is ever touched.

Services: ``scripts/test`` starts PostgreSQL and Redis when they are down. If a test
still cannot reach one, it fails under ``CI=true`` and skips (saying why) elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from confman import ConfigHub, upgrade
from confman.managers import CacheConfigurationManager
from confman.secrets import generate_key

from .support import (
    MQTT_URL,
    REDIS_URL,
    RUN_ID,
    own_database,
    pg_admin,
    pg_url,
    require_service,
    run,
    unique_cluster,
)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"confman_tpl_{RUN_ID}"
    run(pg_admin(f'CREATE DATABASE "{name}"'))
    upgrade(pg_url(name))
    yield name
    run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "confman.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each kind."""
    with own_database(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture
def encryption_key() -> str:
    return generate_key()


@pytest.fixture
def hub_env(encryption_key: str) -> dict[str, str]:
    """The environment hubs in tests read: empty but for an encryption key."""
    return {"CONFMAN_ENCRYPTION_KEY": encryption_key}


@pytest.fixture
async def hub(database_url: str, hub_env: dict[str, str]) -> AsyncIterator[ConfigHub]:
    async with ConfigHub.connect(
        database_url, env=hub_env, env_files=(), managers=[CacheConfigurationManager]
    ) as h:
        yield h


@pytest.fixture
def redis_url() -> str:
    host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    require_service("Redis", host or "127.0.0.1", int(port or 6379))
    return REDIS_URL


@pytest.fixture
def mqtt_url() -> str:
    """The shared Mosquitto (tests isolate themselves by topic prefix: the cluster)."""
    host_port = MQTT_URL.split("//", 1)[1]
    host, _, port = host_port.rpartition(":")
    require_service("Mosquitto", host or "127.0.0.1", int(port or 1883))
    return MQTT_URL


@pytest.fixture
def cluster() -> Iterator[str]:
    """A cluster name (Redis prefix) no other test or run uses; its keys on the shared
    Redis are deleted afterwards: only keys under this unique prefix, which also covers
    clusters a test names after it (``f"{cluster}-two"``)."""
    name = unique_cluster()
    yield name
    with contextlib.suppress(redis.RedisError, OSError):
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        try:
            keys = list(client.scan_iter(match=f"{name}*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
