"""A fleet of several environments: each instance says which one it runs in, drift
compares instances of one environment only, and fleet acknowledgements count per
(environment, namespace, key) and expect only the instances a change concerns.

On Redis and on PostgreSQL alone (NOTIFY); the multi-process run of two environments
is tests/cluster/test_environment_fleet.py."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from confman import ConfigHub, LocalBus
from confman.bus.postgres import PostgresBus
from confman.cluster import ClusterOptions, InstanceInfo
from confman.cluster.fleet import concerned

from ..support import connect, own_database, require_service
from .models import LimitsManager
from .worker import drop_received

OPTIONS = ClusterOptions(
    lease_ttl=2.0, heartbeat_interval=0.2, housekeeping_interval=3600, lag_grace=30.0
)


async def create_environments(url: str, env: dict[str, str], *names: str) -> None:
    async with connect(url, env, managers=[LimitsManager]) as admin:
        for name in names:
            await admin.create_environment(name, description=f"the {name} fleet")


@contextlib.asynccontextmanager
async def fleet(
    url: str,
    env: dict[str, str],
    cluster: str,
    members: dict[str, str | None],
    own: dict[str, dict[str, Any]],
    **kw: Any,
) -> AsyncIterator[dict[str, ConfigHub]]:
    """Hubs named by ``members`` (instance id → environment), all in one cluster;
    ``own``: options of some of them."""
    async with contextlib.AsyncExitStack() as stack:
        hubs: dict[str, ConfigHub] = {}
        for name, environment in members.items():
            options = {**kw, **own.get(name, {})}
            hub = connect(
                url, env, managers=[LimitsManager], cluster=cluster, instance_id=name,
                environment=environment, cluster_options=OPTIONS, **options,
            )  # fmt: skip
            hubs[name] = await stack.enter_async_context(hub)
        await wait_listed(hubs)
        yield hubs


async def wait_listed(hubs: dict[str, ConfigHub], timeout: float = 10.0) -> None:
    """Until every hub's fleet lists them all (NOTIFY heartbeats arrive after a start)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for hub in hubs.values():
        while {i.instance_id for i in (await hub.cluster_status()).instances} < hubs.keys():
            assert loop.time() < deadline, "the fleet did not list every instance"
            await asyncio.sleep(0.05)


def test_which_instances_a_change_concerns() -> None:
    def info(environment: str | None, namespaces: tuple[str, ...] = ("limits",)) -> InstanceInfo:
        digest: Any = None
        now = datetime.now(UTC)
        return InstanceInfo(
            "i", "h", 1, now, now, 0, {ns: digest for ns in namespaces}, environment=environment
        )

    base, staging, production = info(None), info("staging"), info("production")
    assert all(concerned(i, "limits", None) for i in (base, staging, production))
    assert [concerned(i, "limits", "staging") for i in (base, staging, production)] == [
        False, True, False,
    ]  # fmt: skip
    # A namespace that does not inherit: the base's documents are the base hubs' alone.
    assert [concerned(i, "limits", None, inherits=False) for i in (base, staging)] == [True, False]
    assert not concerned(info(None, ("cache",)), "limits", None)  # no manager for it
    # A heartbeat of a release before environments: the base, every namespace.
    old = InstanceInfo.from_json(info(None, ()).to_json().replace(',"environment":null', ""))
    assert old.environment is None and concerned(old, "limits", None)


async def exercise(
    url: str, env: dict[str, str], cluster: str, deaf: dict[str, Any], **kw: Any
) -> None:
    """The shared scenario of the Redis and the PostgreSQL-only fleet; ``deaf``: the
    options of a staging instance that is in the fleet (beats, answers) but hears no
    notices (and catches up only when told)."""
    deaf = {**deaf, "catch_up_interval": 3600}
    await create_environments(url, env, "staging", "production")
    members = {"base": None, "s1": "staging", "s2": "staging", "s3": "staging",
               "p1": "production"}  # fmt: skip
    async with fleet(url, env, cluster, members, {"s3": deaf}, **kw) as hubs:
        s3 = hubs["s3"]
        status = await hubs["base"].cluster_status()
        assert {i.instance_id: i.environment for i in status.instances} == members

        base = hubs["base"].manager(LimitsManager)
        change = await base.update({"high": 90}, environment=None, wait_for_instances=1.5)
        assert change.environment is None and change.version == 1
        report = change.fleet
        assert report is not None and report.environment is None
        # A base change concerns everyone; s3 can only answer once it caught up.
        assert report.missing == ("s3",)
        assert sorted(r.instance_id for r in report.applied) == ["base", "p1", "s1", "s2"]
        await s3.catch_up()  # s3 holds base v1 now, and says so

        # staging's overlay v1: s3's answer about the base's v1 must not count.
        staging = hubs["s1"].manager(LimitsManager)
        change = await staging.update({"low": 20}, wait_for_instances=1.0)
        assert (change.environment, change.version) == ("staging", 1)
        report = change.fleet
        assert report is not None and report.environment == "staging"
        assert [r.instance_id for r in report.applied] == ["s1", "s2"]
        assert report.missing == ("s3",)  # neither p1 nor the base instance is expected
        assert "in staging v1" in str(report)
        assert hubs["s2"].manager(LimitsManager).current.low == 20
        assert hubs["p1"].manager(LimitsManager).current.low == 0
        await s3.catch_up()

        # production's overlay, written from the base instance: p1 and the writer.
        change = await base.update({"high": 50}, environment="production", wait_for_instances=5.0)
        report = change.fleet
        assert report is not None and report.complete
        assert [r.instance_id for r in report.applied] == ["base", "p1"]
        assert hubs["p1"].manager(LimitsManager).current.high == 50
        assert hubs["s1"].manager(LimitsManager).current.high == 90

        # Staging (low 20) and production (high 50) differ from the base (high 90) and
        # from each other, on purpose: that is no drift.
        await asyncio.sleep(0.5)  # heartbeats carry the news
        status = await hubs["p1"].cluster_status()
        assert status.drift == (), status.drift
        by_id = {i.instance_id: i for i in status.instances}
        s1, s2 = by_id["s1"].namespaces["limits"], by_id["s2"].namespaces["limits"]
        assert s1 == s2  # same base and overlay versions, same values
        # p1 holds base v1 and production v1: the same versions as staging, other
        # values. Compared across environments, that would be drift.
        p1 = by_id["p1"].namespaces["limits"]
        assert (p1.versions, p1.overridden) == (s1.versions, False)
        assert p1.effective != s1.effective

        # A ghost in staging with staging's versions and other values is drift.
        assert hubs["s1"]._cluster is not None
        now = datetime.now(UTC)
        odd = type(s1)(s1.versions, "0" * 16, False, s1.keys)
        ghost = InstanceInfo(
            "ghost", "nowhere", 1, now, now, by_id["s1"].applied_seq, {"limits": odd},
            environment="staging",
        )  # fmt: skip
        await hubs["s1"]._cluster.registry.beat(ghost)
        status = await hubs["s1"].cluster_status()
        assert [(d.instance_id, d.kind) for d in status.drift] == [("ghost", "values")]
        assert status.drift[0].detail == (
            "limits: same stored versions as its peers in staging, different effective values"
        )


async def test_redis_fleet_of_environments(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    deaf = {"bus": LocalBus(f"isolated-{uuid.uuid4().hex}")}
    await exercise(database_url, hub_env, cluster, deaf, redis_url=redis_url)


@pytest.fixture
def pg_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with own_database("postgresql", request, tmp_path) as url:
        yield url


async def test_postgres_fleet_of_environments(
    pg_database: str, cluster: str, hub_env: dict[str, str]
) -> None:
    # No Redis: heartbeats and replies on NOTIFY.
    bus = PostgresBus(pg_database, prefix=cluster)
    drop_received(bus, 0)
    await exercise(pg_database, hub_env, cluster, {"bus": bus}, bus="postgres")
