"""A fleet on PostgreSQL alone: advisory-lock election with database fencing tokens,
heartbeats, cluster_status(), drift and wait_for_instances on NOTIFY; no Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confman import ChangeNotice
from confman.bus import NoticeHandler
from confman.bus.postgres import PostgresBus
from confman.cluster import ClusterOptions
from confman.cluster.pg_lease import PostgresLeaderLease
from confman.store import FencingTokenRejected

from ..faults import fault_proxy
from ..support import connect, own_database, require_service
from .models import LimitsManager

FAST = ClusterOptions(
    lease_ttl=1.0, heartbeat_interval=0.2, housekeeping_interval=3600, lag_grace=0.3
)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with own_database("postgresql", request, tmp_path) as url:
        yield url


def member(url: str, env: dict[str, str], cluster: str, name: str, **kw: Any) -> Any:
    kw.setdefault("bus", "postgres")
    kw.setdefault("cluster_options", FAST)
    return connect(
        url, env, managers=[LimitsManager], cluster=cluster, instance_id=name, **kw,
    )  # fmt: skip


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


def lease_of(hub: Any) -> PostgresLeaderLease:
    lease = hub._cluster.lease
    assert isinstance(lease, PostgresLeaderLease)
    return lease


async def test_one_leader_tokens_from_the_database_and_hand_over_on_close(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    a = await member(database_url, hub_env, cluster, "a")
    try:
        async with member(database_url, hub_env, cluster, "b") as b:
            await wait_until(lambda: a.is_leader or b.is_leader)
            await asyncio.sleep(0.4)
            assert a.is_leader != b.is_leader
            leader, follower = (a, b) if a.is_leader else (b, a)
            first = leader.fencing_token
            assert first is not None and follower.fencing_token is None
            assert await leader.store.fencing_token(cluster) == first  # from the database
            status = await follower.cluster_status()
            assert (status.leader, status.fencing_token) == (leader.instance_id, first)
            assert await leader.run_housekeeping() == 0  # fenced work goes through
            started = time.monotonic()
            await leader.close()  # releases the lock and marks the token released
            await wait_until(lambda: follower.is_leader, timeout=5)
            assert time.monotonic() - started < FAST.lease_ttl  # no wait after a release
            assert lease_of(follower).waits == 0
            assert follower.fencing_token is not None and follower.fencing_token > first
    finally:
        await a.close()


async def test_leader_cut_off_stops_before_the_successor_starts(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """A's database connections (its lock's session included) are cut: it steps down at
    once; B takes the freed lock but leads only a lease later; A's late work is fenced."""
    with fault_proxy("127.0.0.1", 5432) as proxy:
        via_proxy = database_url.replace("127.0.0.1:5432", proxy.address())
        async with member(via_proxy, hub_env, cluster, "a") as a:
            await wait_until(lambda: a.is_leader)
            stale = a.fencing_token
            assert stale is not None
            async with member(database_url, hub_env, cluster, "b") as b:
                events: list[tuple[str, bool, float]] = []
                a.leadership.subscribe(lambda v: events.append(("a", v, time.monotonic())))
                b.leadership.subscribe(lambda v: events.append(("b", v, time.monotonic())))

                def b_leads_while_a_does(leading: bool) -> None:
                    assert not (leading and a.is_leader)

                b.leadership.subscribe(b_leads_while_a_does)
                proxy.cut()
                await wait_until(lambda: any(w == "b" and v for w, v, _ in events), timeout=10)
                a_down = next(t for who, v, t in events if who == "a" and v is False)
                b_up = next(t for who, v, t in events if who == "b" and v is True)
                assert a_down < b_up
                assert lease_of(b).waits == 1  # A did not release: B waited a lease
                assert b.fencing_token is not None and b.fencing_token > stale
                await b.run_housekeeping()
                proxy.restore()
                with pytest.raises(FencingTokenRejected):
                    await a._cluster.housekeeping(token=stale)
                assert not a.is_leader


def deaf_bus(url: str, cluster: str) -> PostgresBus:
    """A bus that hears nothing (its instance stays live but never answers)."""
    bus = PostgresBus(url, prefix=cluster)
    start = bus.start

    async def deaf_start(handler: NoticeHandler) -> None:
        def ignore(notice: ChangeNotice) -> None:
            return None

        await start(ignore)

    bus.start = deaf_start  # type: ignore[method-assign]
    return bus


async def test_status_drift_and_wait_for_instances_without_redis(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    strict_env = {**hub_env, "CONFMAN_LIMITS__HIGH": "50"}  # c cannot take low=70
    async with (
        member(database_url, hub_env, cluster, "a") as a,
        member(database_url, hub_env, cluster, "b") as b,
        member(database_url, strict_env, cluster, "c") as c,
        member(database_url, hub_env, cluster, "d", bus=deaf_bus(database_url, cluster),
               catch_up_interval=3600) as d,
    ):  # fmt: skip
        status = await a.cluster_status()
        assert [i.instance_id for i in status.instances] == ["a", "b", "c", "d"]
        assert status.drift == ()
        change = await a.manager(LimitsManager).update({"low": 70}, wait_for_instances=1.5)
        report = change.fleet
        assert report is not None
        assert sorted(r.instance_id for r in report.applied) == ["a", "b"]
        assert [r.instance_id for r in report.refused] == ["c"]
        assert "CONFMAN_LIMITS__HIGH" in (report.refused[0].reason or "")
        assert report.missing == ("d",)
        assert c.manager(LimitsManager).current.low == 0
        assert d.manager(LimitsManager).version() == 0
        await asyncio.sleep(FAST.lag_grace + 2 * FAST.heartbeat_interval)
        drift = {(x.instance_id, x.kind) for x in (await b.cluster_status()).drift}
        assert ("c", "problems") in drift and ("d", "lagging") in drift
        assert not any(who in ("a", "b") for who, _ in drift)
    async with member(database_url, hub_env, cluster, "e") as e:
        # The others left cleanly: a newcomer sees only itself.
        assert [i.instance_id for i in (await e.cluster_status()).instances] == ["e"]


async def test_mqtt_fleet_elects_through_the_database(
    database_url: str, mqtt_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    env = {**hub_env, "CONFMAN_MQTT_URL": mqtt_url}
    async with (
        member(database_url, env, cluster, "a", bus="mqtt") as a,
        member(database_url, env, cluster, "b", bus="mqtt") as b,
    ):
        await wait_until(lambda: a.is_leader or b.is_leader)
        assert isinstance(a._cluster.lease, PostgresLeaderLease)
        change = await a.manager(LimitsManager).update({"high": 90}, wait_for_instances=5.0)
        assert change.fleet is not None and change.fleet.complete
        assert {i.instance_id for i in (await b.cluster_status()).instances} == {"a", "b"}
