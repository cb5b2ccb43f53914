"""Heartbeats, cluster_status() and update(..., wait_for_instances=...)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from confman import LocalBus
from confman.cluster import ClusterOptions, InstanceInfo

from ..support import connect
from .models import LimitsManager

OPTIONS = ClusterOptions(
    lease_ttl=2.0, heartbeat_interval=0.2, housekeeping_interval=3600, lag_grace=0.3
)


def member(
    database_url: str, redis_url: str, cluster: str, env: dict[str, str], name: str, **kw: Any
) -> Any:
    return connect(
        database_url, env, managers=[LimitsManager], redis_url=redis_url, cluster=cluster,
        instance_id=name, cluster_options=OPTIONS, **kw,
    )  # fmt: skip


async def test_wait_for_instances_reports_applied_refused_and_missing(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    strict_env = {**hub_env, "CONFMAN_LIMITS__HIGH": "50"}  # c cannot take low=70
    deaf = LocalBus(f"isolated-{uuid.uuid4().hex}")
    async with (
        member(database_url, redis_url, cluster, hub_env, "a") as a,
        member(database_url, redis_url, cluster, hub_env, "b") as b,
        member(database_url, redis_url, cluster, strict_env, "c") as c,
        member(database_url, redis_url, cluster, hub_env, "d", bus=deaf,
               catch_up_interval=3600) as d,
    ):  # fmt: skip
        status = await a.cluster_status()
        assert [i.instance_id for i in status.instances] == ["a", "b", "c", "d"]
        me = next(i for i in status.instances if i.instance_id == "a")
        assert me.pid > 0 and me.host and me.started_at <= datetime.now(UTC)
        assert "limits" in me.namespaces
        assert status.drift == ()

        change = await a.manager(LimitsManager).update(
            {"low": 70}, actor="ops", wait_for_instances=1.5
        )
        report = change.fleet
        assert report is not None and report.version == change.version == 1
        assert sorted(r.instance_id for r in report.applied) == ["a", "b"]
        assert [r.instance_id for r in report.refused] == ["c"]
        assert "CONFMAN_LIMITS__HIGH" in (report.refused[0].reason or "")
        assert report.missing == ("d",)  # never heard of it: no bus, slow catch-up
        assert not report.complete
        assert b.manager(LimitsManager).current.low == 70
        assert c.manager(LimitsManager).current.low == 0  # last valid value serves
        assert [p.key for p in c.manager(LimitsManager).problems()] == ["default"]

        await asyncio.sleep(0.6)  # heartbeats carry the news
        status = await b.cluster_status()
        drift = {(x.instance_id, x.kind) for x in status.drift}
        assert ("c", "problems") in drift
        assert ("d", "lagging") in drift
        assert status.database_seq == change.seq
        assert status.leader in {"a", "b", "c", "d"}
        assert {i.instance_id: i.applied_seq for i in status.instances}["b"] == change.seq

        # Another update everyone can take, d caught up by hand: a complete report.
        await d.catch_up()
        change = await a.manager(LimitsManager).update({"low": 10}, wait_for_instances=1.0)
        assert change.fleet is not None
        # d has no bus and a slow catch-up: it cannot answer in time.
        assert sorted(r.instance_id for r in change.fleet.applied) == ["a", "b", "c"]
        assert change.fleet.missing == ("d",)


async def test_values_drift_and_a_silent_instance(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    async with (
        member(database_url, redis_url, cluster, hub_env, "a") as a,
        member(database_url, redis_url, cluster, hub_env, "b") as b,
    ):
        await a.manager(LimitsManager).update({"high": 90}, wait_for_instances=5.0)
        # A ghost that claims the same versions but other values, and does not answer.
        await asyncio.sleep(0.5)  # b's heartbeat shows the change
        status = await a.cluster_status()
        real = next(i for i in status.instances if i.instance_id == "b")
        digest = real.namespaces["limits"]
        ghost = InstanceInfo(
            instance_id="ghost", host="nowhere", pid=1, started_at=datetime.now(UTC),
            beat_at=datetime.now(UTC), applied_seq=real.applied_seq,
            namespaces={"limits": type(digest)(digest.versions, "0" * 16, False, 1)},
        )  # fmt: skip
        assert a._cluster is not None
        await a._cluster.registry.beat(ghost)
        status = await b.cluster_status()
        assert ("ghost", "values") in {(x.instance_id, x.kind) for x in status.drift}
        change = await b.manager(LimitsManager).update({"high": 80}, wait_for_instances=0.5)
        assert change.fleet is not None and change.fleet.missing == ("ghost",)
        assert [r.instance_id for r in change.fleet.applied] == ["b", "a"]
