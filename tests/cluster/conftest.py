"""Fixtures of the multi-instance tests: a unique cluster name per test, Redis, workers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from ..support import REDIS_URL, require_service
from .helpers import unique_cluster


@pytest.fixture
def cluster() -> Iterator[str]:
    """A cluster name (Redis prefix) no other test or run uses; its keys on the shared
    Redis are deleted afterwards (only keys under this unique prefix)."""
    name = unique_cluster()
    yield name
    with contextlib.suppress(redis.RedisError, OSError):
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        try:
            keys = list(client.scan_iter(match=f"{name}:*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
def redis_url() -> str:
    host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    require_service("Redis", host or "127.0.0.1", int(port or 6379))
    return REDIS_URL


@pytest.fixture
def worker_config(
    database_url: str, redis_url: str, cluster: str, encryption_key: str, tmp_path: Path
) -> Callable[..., dict[str, Any]]:
    """Build a worker config: ``worker_config("w1", role="listen", ...)``."""

    def build(instance_id: str, **extra: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "db": database_url,
            "redis": redis_url,
            "cluster": cluster,
            "instance_id": instance_id,
            "key_material": encryption_key,
            "hub": {"catch_up_interval": 1.0},
        }
        config.update(extra)
        return config

    return build
