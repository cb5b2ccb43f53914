"""Change-log retention without Redis (one instance owns it, through a database lease)
and the library-level prune that ``confman db prune`` calls."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from confman import ConfmanError, LocalBus
from confman.cluster import ClusterOptions
from confman.retention import prune_change_log
from confman.store import store as store_module

from .cluster.models import CountersManager
from .support import connect

KEEP_2 = ClusterOptions(
    housekeeping_interval=0.5, retention_keep_versions=2, retention_max_age=None
)


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_retention_runs_without_redis_on_one_instance(
    database_url: str, hub_env: dict[str, str]
) -> None:
    bus = f"retention-{uuid.uuid4().hex}"
    hubs = [
        await connect(
            database_url, hub_env, managers=[CountersManager], instance_id=name,
            bus=LocalBus(bus), cluster_options=KEEP_2,
        )
        for name in ("a", "b")
    ]  # fmt: skip
    try:
        counters = hubs[0].manager(CountersManager)
        await counters.create("busy", {"value": 0})
        for i in range(1, 6):
            await counters.update({"value": i}, key="busy")

        async def versions() -> list[int]:
            return [c.version for c in await counters.history("busy")]

        async def pruned_to_two() -> bool:
            return await versions() == [6, 5]

        await wait_until(pruned_to_two)
        await asyncio.sleep(1.5)  # several more runs
        runs = {h.instance_id: h._retention.runs for h in hubs}
        owners = [name for name, n in runs.items() if n]
        assert len(owners) == 1, runs  # one instance owns retention
        owner = next(h for h in hubs if h.instance_id == owners[0])
        other = next(h for h in hubs if h is not owner)
        with pytest.raises(ConfmanError, match="holds the retention lease"):
            await other.run_housekeeping()
        # The owner goes away: after its lease (three intervals) the other takes over.
        await owner.close()
        counters = other.manager(CountersManager)
        for i in range(6, 9):
            await counters.update({"value": i}, key="busy")

        async def taken_over() -> bool:
            # A run counts once its last batch is done, which may be a moment after the
            # batch that deleted the rows has committed.
            assert other._retention is not None
            return await versions() == [9, 8] and other._retention.runs > 0

        await wait_until(taken_over)
    finally:
        for h in hubs:
            await h.close()


async def test_prune_change_log_by_url_and_by_store(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with connect(
        database_url, hub_env, managers=[CountersManager], bus=LocalBus(uuid.uuid4().hex),
        cluster_options=ClusterOptions(leader_election=False),
    ) as hub:  # fmt: skip
        counters = hub.manager(CountersManager)
        await counters.create("busy", {"value": 0})
        for i in range(1, 5):
            await counters.update({"value": i}, key="busy")
        await counters.create("quiet", {"value": 0})
        assert await prune_change_log(database_url, keep_versions=3, older_than=None) == 2
        assert [c.version for c in await counters.history("busy")] == [5, 4, 3]
        # By age (a time in the past keeps everything, "now" all but the newest).
        past = datetime.now(UTC) - timedelta(days=1)
        assert await prune_change_log(hub.store, keep_versions=None, older_than=past) == 0
        assert await prune_change_log(hub.store, keep_versions=None, older_than=timedelta(0)) == 2
        assert [c.version for c in await counters.history("busy")] == [5]
        assert [c.version for c in await counters.history("quiet")] == [1]
        assert await prune_change_log(hub.store, keep_versions=None, older_than=None) == 0
        with pytest.raises(ConfmanError, match="keep_versions must be at least 1"):
            await prune_change_log(hub.store, keep_versions=0)
        with pytest.raises(ConfmanError, match="older_than must not be negative"):
            await prune_change_log(hub.store, older_than=timedelta(seconds=-1))
        with pytest.raises(ConfmanError, match="takes no part in retention"):
            await hub.run_housekeeping()


async def test_a_long_log_is_pruned_in_batches(
    database_url: str, hub_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of 3 rows, so pruning 3 documents x 5 old versions takes several
    # transactions; interleaved writes put every document's rows in every batch.
    monkeypatch.setattr(store_module, "PRUNE_BATCH", 3)
    async with connect(
        database_url, hub_env, managers=[CountersManager], bus=LocalBus(uuid.uuid4().hex),
        cluster_options=ClusterOptions(leader_election=False),
    ) as hub:  # fmt: skip
        counters = hub.manager(CountersManager)
        keys = ("a", "b", "c")
        for key in keys:
            await counters.create(key, {"value": 0})
        for i in range(1, 6):
            for key in keys:
                await counters.update({"value": i}, key=key)
        assert await prune_change_log(hub.store, keep_versions=2, older_than=None) == 12
        for key in keys:
            assert [c.version for c in await counters.history(key)] == [6, 5]
        # The leader's fenced prune goes batch by batch the same way.
        deleted = await hub.store.prune_changes(
            cluster=f"batches-{uuid.uuid4().hex}", token=1, holder="t",
            keep_versions=1, older_than=None,
        )  # fmt: skip
        assert deleted == 3
        for key in keys:
            assert [c.version for c in await counters.history(key)] == [6]


async def test_a_closing_owner_hands_the_retention_lease_on_at_once(
    database_url: str, hub_env: dict[str, str]
) -> None:
    slow = ClusterOptions(housekeeping_interval=600, retention_keep_versions=2)
    bus = f"retention-{uuid.uuid4().hex}"
    owner, other = [
        await connect(
            database_url, hub_env, managers=[CountersManager], instance_id=name,
            bus=LocalBus(bus), cluster_options=slow,
        )
        for name in ("owner", "other")
    ]  # fmt: skip
    try:
        await owner.run_housekeeping()
        with pytest.raises(ConfmanError, match="holds the retention lease"):
            await other.run_housekeeping()
        await owner.close()  # without the hand-over, the lease would run for 30 minutes
        assert await other.run_housekeeping() == 0
    finally:
        await owner.close()
        await other.close()
