"""Fixtures of the multi-instance tests: a unique cluster name per test, Redis, workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


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
