"""CacheConfigurationManager: constraints, change stream, history, overrides."""

from __future__ import annotations

from typing import Any

import pytest

from confman import Action, ConfigHub, ValidationFailed
from confman.managers import CacheBackend, CacheConfig, CacheConfigurationManager
from confman.testing import record_changes

from .conftest import assert_nothing_written, connect_gateway

REDIS_URL = "redis://:hunter2-cache-pw@redis.internal:6379/2"


async def test_defaults_need_no_database_row(ghub: ConfigHub) -> None:
    cache = ghub.manager(CacheConfigurationManager)
    assert cache.current == CacheConfig()
    assert cache.current.backend is CacheBackend.MEMORY
    assert cache.current.ttl_for("gpt-4o") == 300
    assert cache.version() == 0


@pytest.mark.parametrize(
    ("patch", "path", "message"),
    [
        ({"default_ttl_seconds": 0}, "default_ttl_seconds", "greater than 0"),
        ({"default_ttl_seconds": -5}, "default_ttl_seconds", "greater than 0"),
        ({"max_entries": 0}, "max_entries", "greater than 0"),
        ({"max_item_bytes": -1}, "max_item_bytes", "greater than 0"),
        ({"ttl_by_model": {"gpt-4o": 0}}, "ttl_by_model.gpt-4o", "greater than 0"),
        ({"backend": "memcached"}, "backend", "'memory' or 'redis'"),
        ({"backend": "redis"}, "redis_url", "backend 'redis' needs a redis_url"),
        ({"redis_url": "http://x"}, "redis_url", "must start with redis://"),
        ({"key_parameters": []}, "key_parameters", "at least 1 item"),
        ({"key_parameters": ["messages"]}, "key_parameters", "must include 'model'"),
        (
            {"excluded_models": ["gpt-4o"], "ttl_by_model": {"gpt-4o": 60}},
            "ttl_by_model.gpt-4o",
            "also in excluded_models",
        ),
        ({"default_ttl": 60}, "default_ttl", "no such field"),
    ],
)
async def test_each_constraint_refuses_and_writes_nothing(
    ghub: ConfigHub, patch: dict[str, Any], path: str, message: str
) -> None:
    cache = ghub.manager(CacheConfigurationManager)
    seen = record_changes(cache)
    with pytest.raises(ValidationFailed) as caught:
        await cache.update(patch, actor="ops")
    assert path in caught.value.paths
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)
    await assert_nothing_written(cache, "default")
    assert cache.current == CacheConfig()
    assert seen.changes == []


async def test_refused_after_a_valid_version_keeps_it(ghub: ConfigHub) -> None:
    cache = ghub.manager(CacheConfigurationManager)
    await cache.update({"default_ttl_seconds": 60})
    with pytest.raises(ValidationFailed):
        await cache.update({"default_ttl_seconds": 0})
    await assert_nothing_written(cache, "default", version=1)
    assert cache.current.default_ttl_seconds == 60


async def test_ttl_for(ghub: ConfigHub) -> None:
    cache = ghub.manager(CacheConfigurationManager)
    await cache.update(
        {"ttl_by_model": {"gpt-4o": 30}, "excluded_models": ["o1"], "default_ttl_seconds": 90}
    )
    policy = cache.current
    assert policy.ttl_for("gpt-4o") == 30
    assert policy.ttl_for("o1") is None
    assert policy.ttl_for("other") == 90
    await cache.update({"enabled": False})
    assert cache.current.ttl_for("gpt-4o") is None


async def test_change_stream_and_history(ghub: ConfigHub) -> None:
    cache = ghub.manager(CacheConfigurationManager)
    seen = record_changes(cache)
    await cache.update({"default_ttl_seconds": 60}, actor="ops", reason="load test")
    await cache.update({"backend": "redis", "redis_url": REDIS_URL}, actor="ops")
    await cache.rollback(to_version=1, actor="ops")

    assert seen.versions() == [1, 2, 3]
    first, second, third = seen.changes
    assert first.changed_fields == ("default_ttl_seconds",)
    assert set(second.changed_fields) == {"backend", "redis_url"}
    assert third.action is Action.ROLLBACK
    assert cache.current.backend is CacheBackend.MEMORY
    assert cache.current.default_ttl_seconds == 60

    history = await cache.history()
    assert [h.version for h in history] == [3, 2, 1]
    assert history[2].actor == "ops" and history[2].reason == "load test"
    assert history[1].after is not None
    masked = history[1].after["redis_url"]
    assert masked.startswith("**********#") and "hunter2" not in repr(history)


async def test_environment_override_wins_and_is_explained(
    database_url: str, hub_env: dict[str, str]
) -> None:
    env = {**hub_env, "CONFMAN_CACHE__DEFAULT_TTL_SECONDS": "15"}
    async with connect_gateway(database_url, env) as hub:
        cache = hub.manager(CacheConfigurationManager)
        change = await cache.update({"default_ttl_seconds": 60})
        assert cache.current.default_ttl_seconds == 15
        assert change.pinned == ("default_ttl_seconds",)
        (ttl,) = [s for s in cache.explain() if s.path == "default_ttl_seconds"]
        assert ttl.detail == "environment variable CONFMAN_CACHE__DEFAULT_TTL_SECONDS"


async def test_invalid_environment_override_is_refused_at_start(
    database_url: str, hub_env: dict[str, str]
) -> None:
    env = {**hub_env, "CONFMAN_CACHE__DEFAULT_TTL_SECONDS": "0"}
    with pytest.raises(ValidationFailed) as caught:
        async with connect_gateway(database_url, env):
            pass
    assert "CONFMAN_CACHE__DEFAULT_TTL_SECONDS" in str(caught.value)
