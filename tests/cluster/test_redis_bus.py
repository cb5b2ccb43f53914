"""RedisBus in one process: fan-out, isolation by prefix, reconnect and catch-up."""

from __future__ import annotations

import asyncio
from typing import Any

from confman import ChangeNotice
from confman.bus.redis import RedisBus, decode_notice, encode_notice
from confman.testing import record_changes

from ..support import connect
from .helpers import own_redis
from .models import CountersManager, LimitsManager

SLOW = {"catch_up_interval": 3600.0}  # only the bus can deliver quickly


def test_notice_round_trip() -> None:
    notice = ChangeNotice("cache", "default", 3, 17, "a")
    assert decode_notice(encode_notice(notice)) == notice


async def hub_pair(
    database_url: str, redis_url: str, cluster: str, env: dict[str, str], **options: Any
) -> tuple[Any, Any]:
    a = connect(
        database_url, env, managers=[LimitsManager, CountersManager],
        redis_url=redis_url, cluster=cluster, instance_id="a", **options,
    )  # fmt: skip
    b = connect(
        database_url, env, managers=[LimitsManager, CountersManager],
        redis_url=redis_url, cluster=cluster, instance_id="b", **options,
    )  # fmt: skip
    return a, b


async def test_change_reaches_other_hub_through_redis(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    a_conn, b_conn = await hub_pair(database_url, redis_url, cluster, hub_env, **SLOW)
    async with a_conn as a, b_conn as b:
        assert isinstance(a.bus, RedisBus)
        seen = record_changes(b.manager(LimitsManager))
        await a.manager(LimitsManager).update({"high": 10}, actor="t")
        change = await seen.wait_for(version=1, timeout=10)
        assert change.new is not None and change.new.high == 10
        assert change.origin == "a"
        assert b.stats.notices_received >= 1
        assert a.bus.stats.published >= 1 and a.bus.stats.publish_failures == 0


async def test_clusters_do_not_hear_each_other(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    one, two = cluster, f"{cluster}-two"
    async with (
        connect(database_url, hub_env, managers=[LimitsManager], redis_url=redis_url,
                cluster=one, **SLOW) as a,
        connect(database_url, hub_env, managers=[LimitsManager], redis_url=redis_url,
                cluster=two, **SLOW) as b,
    ):  # fmt: skip
        await a.manager(LimitsManager).update({"high": 10})
        await asyncio.sleep(0.5)
        assert b.stats.notices_received == 0
        assert b.manager(LimitsManager).current.high == 100


async def test_redis_down_then_back(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """Writes commit while Redis is dead; publish failures are counted; the listener
    resubscribes on its own and the reconnect triggers a catch-up."""
    with own_redis() as server:
        a_conn, b_conn = await hub_pair(database_url, server.url, cluster, hub_env, **SLOW)
        async with a_conn as a, b_conn as b:
            limits_b = b.manager(LimitsManager)
            seen = record_changes(limits_b)
            await a.manager(LimitsManager).update({"high": 11})
            await seen.wait_for(version=1)
            server.kill()
            # Writes still commit; the notice is lost.
            await a.manager(LimitsManager).update({"high": 12})
            await a.manager(LimitsManager).update({"high": 13})
            assert a.bus.stats.publish_failures >= 1
            await asyncio.sleep(0.3)
            assert limits_b.version() == 1  # slow catch-up: nothing else delivers
            server.start()
            # B resubscribes, and that alone makes it read the change log.
            change = await seen.wait_for(version=3, timeout=20)
            assert change.new is not None and change.new.high == 13
            versions = seen.versions()
            assert versions[0] == 1 and versions[-1] == 3 and versions == sorted(set(versions))
            assert b.bus.stats.connects >= 2
            # Pub/sub works again.
            await a.manager(LimitsManager).update({"high": 14})
            await seen.wait_for(version=4, timeout=20)
