"""One contract, three transports: the fault tests that do not depend on the bus, run on
Redis, PostgreSQL LISTEN/NOTIFY and MQTT alike (on PostgreSQL, which all three serve).

Each test uses the shared service with its own cluster name (Redis prefix, NOTIFY
channel, MQTT topic prefix), or, where the transport is killed, a server of its own on a
free port: a redis-server, a mosquitto, or for PostgreSQL a fault proxy that cuts the
listeners off the database (the shared server itself is never touched).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from confman.bus import CommitNotifyingBus
from confman.bus.mqtt import MqttBus
from confman.testing import record_changes

from ..faults import fault_proxy
from ..support import MQTT_URL, REDIS_URL, connect, own_database
from .helpers import (
    KEYS,
    PER_KEY,
    assert_strictly_increasing,
    first_leader,
    own_mosquitto,
    own_redis,
    workers,
    write_changes,
    write_late_change,
)
from .models import CountersManager

TRANSPORTS = ["redis", "postgres", "mqtt"]


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """PostgreSQL only: the one database every transport can serve."""
    with own_database("postgresql", request, tmp_path) as url:
        yield url


@dataclass
class Transport:
    """How workers (``config``: worker config keys) and in-process hubs reach a bus."""

    name: str
    cluster: str
    config: dict[str, Any] = field(default_factory=dict)
    kill: Callable[[], None] = lambda: None
    restart: Callable[[], None] = lambda: None

    def hub_options(self) -> dict[str, Any]:
        """`ConfigHub.connect` options of an in-process writer on this transport."""
        if self.name == "redis":
            return {"redis_url": self.config["redis"], "cluster": self.cluster}
        if self.name == "mqtt":
            bus = MqttBus(self.config["mqtt"], prefix=f"confman/{self.cluster}")
            return {"bus": bus, "cluster": self.cluster}
        return {"bus": "postgres", "cluster": self.cluster}


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest, cluster: str) -> Transport:
    """The shared service of each transport."""
    name: str = request.param
    if name == "redis":
        request.getfixturevalue("redis_url")
        return Transport(name, cluster, {"bus": "redis", "redis": REDIS_URL})
    if name == "mqtt":
        request.getfixturevalue("mqtt_url")
        return Transport(name, cluster, {"bus": "mqtt", "mqtt": MQTT_URL})
    return Transport(name, cluster, {"bus": "postgres"})


@contextlib.contextmanager
def killable(transport: Transport, database_url: str) -> Iterator[Transport]:
    """The transport on a server of its own, which the test can kill and restart."""
    if transport.name == "redis":
        with own_redis() as redis:
            yield Transport(
                "redis", transport.cluster, {"bus": "redis", "redis": redis.url},
                kill=redis.kill, restart=redis.start,
            )  # fmt: skip
    elif transport.name == "mqtt":
        with own_mosquitto() as broker:
            yield Transport(
                "mqtt", transport.cluster, {"bus": "mqtt", "mqtt": broker.url},
                kill=broker.kill, restart=broker.start,
            )  # fmt: skip
    else:
        with fault_proxy("127.0.0.1", 5432) as proxy:
            via_proxy = database_url.replace("127.0.0.1:5432", proxy.address())
            yield Transport(
                "postgres", transport.cluster, {"bus": "postgres", "db": via_proxy},
                kill=proxy.cut, restart=proxy.restore,
            )  # fmt: skip


async def test_five_instances_converge_on_1000_changes(
    transport: Transport,
    database_url: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    expect = {f"counters/{k}": PER_KEY for k in KEYS}
    configs = [worker_config(f"w{i}", expect=expect, **transport.config) for i in range(5)]
    with workers(configs, tmp_path) as fleet:
        for w in fleet:
            w.expect("READY")
        await write_changes(database_url, hub_env, **transport.hub_options())
        for w in fleet:
            await asyncio.to_thread(w.expect, "CONVERGED", 120)
        results = [w.stop() for w in fleet]
    for result in results:
        assert_strictly_increasing(result, expect)
        assert result["stats"]["notices_received"] > 0  # the bus carried them


async def test_transport_killed_and_restarted_mid_stream(
    transport: Transport,
    database_url: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The broker (or, for PostgreSQL, the listeners' connection) dies while changes
    stream in, and comes back: writes keep committing and every instance converges, the
    bus reconnecting on its own (the periodic catch-up is 30 s away)."""
    keys = ["r0", "r1", "r2"]
    rounds = 60
    expect = {f"counters/{k}": rounds for k in keys}
    with killable(transport, database_url) as own:
        configs = [
            worker_config(f"w{i}", expect=expect, hub={"catch_up_interval": 30}, **own.config)
            for i in range(3)
        ]
        with workers(configs, tmp_path) as fleet:
            for w in fleet:
                w.expect("READY")
            options = own.hub_options()
            async with connect(database_url, hub_env, managers=[CountersManager], **options) as hub:
                counters = hub.manager(CountersManager)
                for key in keys:
                    await counters.create(key, {"value": 0})
                for i in range(1, rounds):
                    if i == rounds // 3:
                        own.kill()
                    if i == 2 * rounds // 3:
                        own.restart()
                    await asyncio.gather(*(counters.update({"value": i}, key=key) for key in keys))
                stats: Any = hub.bus.stats  # type: ignore[attr-defined]
                if not isinstance(hub.bus, CommitNotifyingBus):
                    assert stats.publish_failures > 0  # the writer's broker was dead too
            for w in fleet:
                await asyncio.to_thread(w.expect, "CONVERGED", 25)
            results = [w.stop() for w in fleet]
    for result in results:
        assert_strictly_increasing(result, expect)


async def test_dropped_notices_still_converge(
    transport: Transport,
    database_url: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """One listener loses every other notice, one loses them all: catch-up fills in."""
    expect = {"counters/a": 41, "counters/b": 41}
    listen = [
        worker_config("half", expect=expect, drop_received=2, **transport.config),
        worker_config("deaf", expect=expect, drop_received=0, **transport.config),
    ]
    with workers(listen, tmp_path) as listeners:
        for w in listeners:
            w.expect("READY")
        options = transport.hub_options()
        async with connect(database_url, hub_env, managers=[CountersManager], **options) as hub:
            counters = hub.manager(CountersManager)
            for key in ("a", "b"):
                await counters.create(key, {"value": 0})
            for i in range(1, 41):
                await asyncio.gather(counters.update({"value": i}, key="a"),
                                     counters.update({"value": i}, key="b"))  # fmt: skip
        for w in listeners:
            await asyncio.to_thread(w.expect, "CONVERGED", 60)
        results = [w.stop() for w in listeners]
    for result in results:
        assert_strictly_increasing(result, expect)
        assert result["stats"]["caught_up_changes"] > 0
    half, deaf = results
    assert half["stats"]["notices_received"] > 0
    assert deaf["stats"]["notices_received"] == 0


async def test_late_commit_with_lower_seq_is_applied_once(
    transport: Transport, database_url: str, hub_env: dict[str, str]
) -> None:
    """A transaction takes seq N and stays open while N+1 commits and its notice is
    delivered: the observer applies N+1 at once, keeps its watermark below N, and
    applies N (which no notice announces) once it commits, each exactly once."""
    options = transport.hub_options()
    async with (
        connect(database_url, hub_env, managers=[CountersManager], instance_id="writer",
                **options) as a,
        connect(database_url, hub_env, managers=[CountersManager], instance_id="observer",
                catch_up_interval=0.2, **transport.hub_options()) as b,
    ):  # fmt: skip
        counters_a, counters_b = a.manager(CountersManager), b.manager(CountersManager)
        seen = record_changes(counters_b)  # before the writes: b may apply them at once
        await counters_a.create("x", {"value": 0})
        await counters_a.create("y", {"value": 0})
        await seen.wait_for(key="y", version=1)
        seen.changes.clear()
        raw = await asyncpg.connect(database_url)
        try:
            tx = raw.transaction()
            await tx.start()
            late_seq = await write_late_change(raw)
            received = b.stats.notices_received
            change_y = await counters_a.update({"value": 1}, key="y")
            assert change_y.seq > late_seq
            await seen.wait_for(key="y", version=2, timeout=10)
            await asyncio.sleep(0.6)  # several catch-up runs read past the hole
            assert b.stats.notices_received > received  # the bus delivered y's notice
            assert counters_b.version("x") == 1
            assert b.applied_seq < late_seq
            await tx.commit()
        finally:
            await raw.close()
        change = await seen.wait_for(key="x", version=2, timeout=20)
        assert change.new is not None and change.new.value == 7
        await asyncio.sleep(0.5)
        assert seen.versions("x") == [2] and seen.versions("y") == [2]
        assert b.applied_seq >= change_y.seq


async def test_writer_dying_between_commit_and_notice(
    transport: Transport,
    database_url: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The writer process commits and is gone before its hub could publish. On Redis and
    MQTT no notice ever goes out and catch-up delivers the change; on PostgreSQL the
    commit itself sent the notice."""
    async with connect(database_url, hub_env, managers=[CountersManager]) as hub:
        await hub.manager(CountersManager).create("c", {"value": 0})
    expect = {"counters/c": 2}
    listener_config = worker_config("listener", expect=expect, **transport.config)
    with workers([listener_config], tmp_path) as (listener,):
        listener.expect("READY")
        doomed_config = worker_config("doomed", role="crash_after_commit", key="c",
                                      **transport.config)  # fmt: skip
        with workers([doomed_config], tmp_path) as (doomed,):
            await asyncio.to_thread(doomed.proc.wait, 60)
            assert doomed.proc.returncode == 17
        await asyncio.to_thread(listener.expect, "CONVERGED", 30)
        result = listener.stop()
    assert result["seen"]["counters/c"] == [2]
    notified_by_commit = transport.name == "postgres"
    assert result["stats"]["notices_received"] == (1 if notified_by_commit else 0)


async def test_leader_kill_9_and_failover_within_a_lease(
    transport: Transport,
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The leader's process dies without releasing. Redis elects through its lease; a
    PostgreSQL or MQTT fleet through the database's advisory lock. Either way a follower
    leads within the documented ``lease_ttl + campaign_interval``, with a higher token."""
    ttl = 2.0
    options = {"lease_ttl": ttl, "heartbeat_interval": 0.5, "housekeeping_interval": 3600}
    configs = [
        worker_config(f"cand{i}", cluster_options=options, **transport.config) for i in range(3)
    ]
    with workers(configs, tmp_path) as fleet:
        for w in fleet:
            w.expect("READY")
        leader, token = await first_leader(fleet)
        await asyncio.sleep(ttl / 2)  # let the leader renew (or probe) at least once
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        leader.kill()
        _successor, new_token = await first_leader([w for w in fleet if w is not leader])
        took = loop.time() - killed_at
        assert new_token > token
        # The bound is the promise (plus scheduling slack), not a speed measurement.
        assert took < ttl + ttl / 10 + 1.0, took
        for w in fleet:
            if w is not leader:
                w.stop()
