"""Leader election, fencing and the leader's retention (in one process)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as redis

from confman.cluster import ClusterOptions
from confman.store import FencingTokenRejected

from ..support import connect
from .helpers import first_leader, own_redis, workers
from .models import CountersManager

FAST = ClusterOptions(lease_ttl=1.0, heartbeat_interval=0.2, housekeeping_interval=3600)


def fleet_hub(
    database_url: str, redis_url: str, cluster: str, env: dict[str, str], name: str, **kw: Any
) -> Any:
    kw.setdefault("cluster_options", FAST)
    return connect(
        database_url, env, managers=[CountersManager], redis_url=redis_url,
        cluster=cluster, instance_id=name, **kw,
    )  # fmt: skip


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_one_leader_and_hand_over_on_close(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    a_conn = fleet_hub(database_url, redis_url, cluster, hub_env, "a")
    b_conn = fleet_hub(database_url, redis_url, cluster, hub_env, "b")
    a = await a_conn
    try:
        async with b_conn as b:
            await wait_until(lambda: a.is_leader or b.is_leader)
            await asyncio.sleep(0.5)
            assert a.is_leader != b.is_leader  # exactly one
            leader, follower = (a, b) if a.is_leader else (b, a)
            first = leader.fencing_token
            assert first is not None and follower.fencing_token is None
            seen: list[bool] = []
            follower.leadership.subscribe(seen.append)
            status = await follower.cluster_status()
            assert status.leader == leader.instance_id
            assert status.fencing_token == first
            await leader.close()  # releases the lease: no need to wait for its expiry
            await wait_until(lambda: follower.is_leader, timeout=5)
            assert follower.fencing_token is not None and follower.fencing_token > first
            assert seen == [False, True]
    finally:
        await a.close()


async def test_deposed_leader_is_fenced_off(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """A leader that freezes loses its lease; its late retention run is rejected."""
    async with (
        fleet_hub(database_url, redis_url, cluster, hub_env, "a") as a,
    ):
        await wait_until(lambda: a.is_leader)
        stale = a.fencing_token
        assert stale is not None
        assert await a.run_housekeeping() == 0  # the leader's work goes through
        # Freeze A's campaign: it can no longer renew, as if its process were paused.
        lease = a._cluster.lease
        assert lease._task is not None
        lease._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lease._task
        lease._task = None
        async with fleet_hub(database_url, redis_url, cluster, hub_env, "b") as b:
            told: list[bool] = []

            def on_leadership(leading: bool) -> None:
                # At the moment B leads, A must already know it does not.
                told.append(leading and not a.is_leader)

            b.leadership.subscribe(on_leadership)
            await wait_until(lambda: b.is_leader, timeout=10)
            assert told[-1] is True
            assert b.fencing_token is not None and b.fencing_token > stale
            await b.run_housekeeping()
            # A wakes up and finishes the work it started as leader: refused.
            with pytest.raises(FencingTokenRejected):
                await a._cluster.housekeeping(token=stale)
            assert not a.is_leader
            assert await b.store.fencing_token(cluster) == b.fencing_token


async def test_retention_keeps_the_newest_version(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    keep3 = ClusterOptions(
        lease_ttl=1.0, housekeeping_interval=3600, retention_keep_versions=3,
        retention_max_age=None,
    )  # fmt: skip
    async with fleet_hub(
        database_url, redis_url, cluster, hub_env, "a", cluster_options=keep3
    ) as hub:
        counters = hub.manager(CountersManager)
        await counters.create("busy", {"value": 0})
        for i in range(1, 10):
            await counters.update({"value": i}, key="busy")
        await counters.create("quiet", {"value": 0})
        await wait_until(lambda: hub.is_leader)
        assert await hub.run_housekeeping() == 7
        assert [c.version for c in await counters.history("busy")] == [10, 9, 8]
        assert [c.version for c in await counters.history("quiet")] == [1]
        # By age: everything but the newest version of each document.
        assert hub._cluster is not None
        hub._cluster.options = ClusterOptions(
            retention_keep_versions=None, retention_max_age=timedelta(0)
        )
        assert await hub.run_housekeeping() == 2
        assert [c.version for c in await counters.history("busy")] == [10]
        # A rollback target that is gone is refused clearly; the document is intact.
        assert counters.get("busy").value == 9


async def test_leader_steps_down_before_its_lease_can_expire(redis_url: str, cluster: str) -> None:
    """Redis unreachable while leading: leadership is dropped before the lease's TTL."""
    from confman.cluster import LeaderLease

    client = redis.Redis.from_url(redis_url)
    lease = LeaderLease(client, prefix=cluster, holder="solo", ttl=1.0)
    try:
        lease.start()
        await wait_until(lambda: lease.is_leader)
        events: list[tuple[bool, float]] = []
        loop = asyncio.get_running_loop()
        lease.leadership.subscribe(lambda v: events.append((v, loop.time())))
        ttl_ms = await client.pttl(f"{cluster}:leader")
        cut_at = loop.time()
        # Renewals now fail as if Redis were gone (and the lease runs out on the server).
        original = lease._renew

        async def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise redis.ConnectionError("cut")

        lease._renew = unreachable  # type: ignore[assignment]
        await wait_until(lambda: events[-1][0] is False, timeout=5)
        stepped_down_at = events[-1][1]
        assert stepped_down_at - cut_at < ttl_ms / 1000  # before Redis could expire it
        lease._renew = original
    finally:
        await lease.close()
        await client.delete(f"{cluster}:leader", f"{cluster}:fence")
        await client.aclose()


async def test_kill_9_of_the_leader_process(
    worker_config: Any, tmp_path: Any, database_url: str
) -> None:
    """The leader's process dies without releasing: a follower takes over within one
    lease period, with a higher fencing token."""
    if not database_url.startswith("sqlite"):
        pytest.skip("leadership does not depend on the database; once is enough")
    ttl = 2.0
    options = {"lease_ttl": ttl, "heartbeat_interval": 0.5, "housekeeping_interval": 3600}
    configs = [worker_config(f"cand{i}", cluster_options=options) for i in range(3)]
    with workers(configs, tmp_path) as fleet:
        for w in fleet:
            w.expect("READY")
        leader, token = await first_leader(fleet)
        await asyncio.sleep(ttl / 2)  # let the leader renew at least once
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        leader.kill()
        _successor, new_token = await first_leader([w for w in fleet if w is not leader])
        took = loop.time() - killed_at
        assert new_token > token
        # Within one lease period (plus a campaign interval and scheduling slack on a
        # loaded machine: the bound is the promise, not a speed measurement).
        assert took < ttl + ttl / 10 + 1.0, took
        for w in fleet:
            if w is not leader:
                w.stop()


async def test_tokens_keep_increasing_when_redis_loses_its_data(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """Our own redis-server restarts empty: the fencing counter starts over, yet the new
    leader's token is above the one the database has seen, so its work is accepted."""
    with own_redis() as server:
        async with fleet_hub(database_url, server.url, cluster, hub_env, "a") as hub:
            await wait_until(lambda: hub.is_leader)
            first = hub.fencing_token
            assert first is not None
            await hub.run_housekeeping()
            server.kill()
            server.start()  # empty: no lease, no counter
            await wait_until(lambda: hub.is_leader and hub.fencing_token != first, timeout=15)
            second = hub.fencing_token
            assert second is not None and second > first
            await hub.run_housekeeping()  # accepted
            assert await hub.store.fencing_token(cluster) == second


async def test_never_two_leaders_when_redis_restarts_empty(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """Three hubs campaign on our own redis-server, killed for 2 s and restarted without
    its data, three times: sampled every 10 ms, at most one of them ever says it leads,
    and a leader is back after each restart. The lease outlives the outage, so the old
    leader still believes it leads when Redis comes back."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the election runs on Redis; the other tests fence on both databases")
    ttl = 4.0
    options = ClusterOptions(lease_ttl=ttl, heartbeat_interval=0.5, housekeeping_interval=3600)
    with own_redis() as server:
        hubs = [
            await fleet_hub(database_url, server.url, cluster, hub_env, f"h{i}",
                            cluster_options=options)
            for i in range(3)
        ]  # fmt: skip
        overlaps: list[tuple[float, list[str]]] = []
        stop = asyncio.Event()

        async def sample() -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                leading = [h.instance_id for h in hubs if h.is_leader]
                if len(leading) > 1:
                    overlaps.append((loop.time(), leading))
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        try:

            def newest_token() -> int:
                return max((h.fencing_token or 0) for h in hubs)

            await wait_until(lambda: newest_token() > 0, timeout=20)
            for _ in range(3):
                await asyncio.sleep(ttl / 2)  # the leader renews at least once
                before = newest_token()
                assert before > 0
                server.kill()
                await asyncio.sleep(2.0)
                server.start()  # empty: no lease, no counter
                # A new leadership (a higher token) follows; the old one has ended.
                await wait_until(lambda: overlaps or newest_token() > before, timeout=30)  # noqa: B023
                assert overlaps == [], overlaps[:5]
            leaders = [h for h in hubs if h.is_leader]
            assert len(leaders) == 1
            assert leaders[0].fencing_token == await leaders[0].store.fencing_token(cluster)
        finally:
            stop.set()
            await sampler
            for h in hubs:
                await h.close()


async def test_cut_off_leader_stops_leading_on_its_own_clock() -> None:
    """Our own redis-server is killed under a leader: whatever its campaign loop does,
    `is_leader` is False once a lease (less the margin) has passed since the kill, i.e.
    before Redis could have let anyone else in, measured on its own monotonic clock."""
    from confman.cluster import LeaderLease

    ttl = 2.0
    with own_redis() as server:
        client = redis.Redis.from_url(server.url, socket_timeout=0.5)
        lease = LeaderLease(client, prefix="cut", holder="solo", ttl=ttl)
        try:
            lease.start()
            await wait_until(lambda: lease.is_leader)
            await asyncio.sleep(ttl / 2)  # renewed at least once
            assert lease.is_leader
            killed_at = time.monotonic()
            server.kill()
            # Its last successful renewal was sent before the kill.
            await asyncio.sleep(max(0.0, killed_at + ttl - lease.margin - time.monotonic()))
            assert not lease.is_leader
            assert lease.fencing_token is None
        finally:
            await lease.close()
            await client.aclose()
