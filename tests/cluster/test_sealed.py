"""A committed change carried in its notice (`confman.sealed`), over real Redis.

A listener applies a sealed change without reading the change log; a change it cannot
open (another key, a forgery, a stale or moved token) is read from the database instead,
so what the transport carries never decides a value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from confman.secrets import generate_key

from ..support import connect
from .models import CountersManager, LimitsManager


def member(
    database_url: str,
    env: dict[str, str],
    redis_url: str,
    cluster: str,
    manager: type,
    name: str,
) -> Any:
    # No background catch-up: what arrives, arrives by notice.
    return connect(
        database_url,
        env,
        managers=[manager],
        instance_id=name,
        redis_url=redis_url,
        cluster=cluster,
        catch_up_interval=3600,
    )


async def settled(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {timeout} s")


async def test_a_listener_applies_the_sealed_change_without_a_read(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    async with (
        member(database_url, hub_env, redis_url, cluster, CountersManager, "w") as writer,
        member(database_url, hub_env, redis_url, cluster, CountersManager, "l") as listener,
    ):
        reads = 0
        read = listener.store.change_at

        async def counted(*args: object, **kwargs: object) -> object:
            nonlocal reads
            reads += 1
            return await read(*args, **kwargs)  # type: ignore[arg-type]

        listener.store.change_at = counted  # type: ignore[method-assign]
        counters = writer.manager(CountersManager)
        heard = listener.manager(CountersManager)
        for value in range(1, 4):
            document = {"value": value, "token": f"secret-{value}"}
            if value == 1:
                await counters.create("a", document, actor="ops", reason="step 1")
            else:
                await counters.update(document, key="a", actor="ops", reason=f"step {value}")
            await settled(lambda v=value: heard.version("a") == v)
        item = heard.get("a")
        assert item.token is not None and item.token.get_secret_value() == "secret-3"
        assert listener.stats.sealed_applied == 3
        assert listener.stats.sealed_refused == 0
        assert reads == 0  # every change came with its notice
        assert listener.applied_seq == await listener.store.max_seq()
        records = await heard.history("a")
        assert [r.reason for r in records] == ["step 3", "step 2", "step 1"]


async def test_a_change_sealed_under_another_key_is_read_from_the_database(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    other = {"CONFMAN_ENCRYPTION_KEY": generate_key()}
    async with (
        member(database_url, hub_env, redis_url, cluster, LimitsManager, "w") as writer,
        member(database_url, other, redis_url, cluster, LimitsManager, "l") as listener,
    ):
        await writer.manager(LimitsManager).update({"low": 7})
        heard = listener.manager(LimitsManager)
        await settled(lambda: heard.current.low == 7)
        assert listener.stats.sealed_refused == 1
        assert listener.stats.sealed_applied == 0


async def test_a_forged_notice_on_the_channel_does_not_decide_a_value(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    async with (
        member(database_url, hub_env, redis_url, cluster, LimitsManager, "w") as writer,
        member(database_url, hub_env, redis_url, cluster, LimitsManager, "l") as listener,
    ):
        limits = writer.manager(LimitsManager)
        change = await limits.update({"low": 5})
        heard = listener.manager(LimitsManager)
        await settled(lambda: heard.current.low == 5)
        # Someone who can publish on Redis, not read the database or the keys, claims
        # version 2 with a value of their own.
        await limits.update({"low": 6})  # version 2 exists; its notice is the real one
        body = json.dumps(
            ["limits", "default", 3, change.seq + 5, "", "update", "mallory", None,
             ["low"], "w", "2026-01-01T00:00:00+00:00", {"low": 99}]
        ).encode()  # fmt: skip
        forged = {
            "namespace": "limits", "key": "default", "version": 3, "seq": change.seq + 5,
            "origin": "w", "change": Fernet(Fernet.generate_key()).encrypt(body).decode(),
        }  # fmt: skip
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.publish(f"{cluster}:changes", json.dumps(forged))
        finally:
            await client.aclose()
        await settled(lambda: listener.stats.sealed_refused == 1)
        await settled(lambda: heard.current.low == 6)
        await asyncio.sleep(0.2)
        assert heard.current.low == 6  # the forgery's 99 never served
        assert heard.version() == 2
