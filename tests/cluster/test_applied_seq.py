"""`hub.applied_seq` follows every change the instance applies: its own writes, notices
and catch-up, and never passes a change-log id that is still missing (an open gap)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from confman import LocalBus
from confman.cluster import ClusterOptions
from confman.snapshot import read_snapshot
from confman.testing import record_changes

from ..support import connect
from .helpers import write_late_change
from .models import CountersManager
from .test_catch_up import asyncpg_dsn

# Catch-up must not be what moves the watermark here.
NO_CATCH_UP = 3600.0


async def test_own_writes_and_notices_move_applied_seq(
    database_url: str, hub_env: dict[str, str]
) -> None:
    bus = f"applied-{uuid.uuid4().hex}"
    async with (
        connect(
            database_url, hub_env, managers=[CountersManager], instance_id="writer",
            bus=LocalBus(bus), catch_up_interval=NO_CATCH_UP,
        ) as a,
        connect(
            database_url, hub_env, managers=[CountersManager], instance_id="reader",
            bus=LocalBus(bus), catch_up_interval=NO_CATCH_UP,
        ) as b,
    ):  # fmt: skip
        counters = a.manager(CountersManager)
        seen = record_changes(b.manager(CountersManager))
        await counters.create("x", {"value": 0})
        change = await counters.update({"value": 1}, key="x")
        assert a.applied_seq == change.seq  # its own write
        await seen.wait_for(key="x", version=2)
        assert b.applied_seq == change.seq  # a notice
        # Catch-up reading the same rows again changes nothing.
        assert await b.catch_up() == 2
        assert b.applied_seq == change.seq


async def test_snapshot_right_after_a_write_records_its_seq(
    database_url: str, hub_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "snapshot.json"
    async with connect(
        database_url, hub_env, managers=[CountersManager], bus=LocalBus(uuid.uuid4().hex),
        catch_up_interval=NO_CATCH_UP, snapshot_path=path,
    ) as hub:  # fmt: skip
        change = await hub.manager(CountersManager).create("x", {"value": 5})
        await hub.write_snapshot()
        snapshot = read_snapshot(path)
        assert snapshot is not None
        assert snapshot.applied_seq == change.seq


async def test_notices_do_not_move_applied_seq_past_an_open_gap(
    database_url: str, hub_env: dict[str, str]
) -> None:
    """A transaction holds seq N open; N+1 commits and its notice is applied: the
    watermark stays below N until N commits and catch-up applies it."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers: ids commit in order")
    bus = f"applied-{uuid.uuid4().hex}"
    async with (
        connect(database_url, hub_env, managers=[CountersManager], instance_id="writer",
                bus=LocalBus(bus)) as a,
        connect(database_url, hub_env, managers=[CountersManager], instance_id="observer",
                bus=LocalBus(bus), catch_up_interval=0.1) as b,
    ):  # fmt: skip
        counters = a.manager(CountersManager)
        seen = record_changes(b.manager(CountersManager))
        await counters.create("x", {"value": 0})
        await counters.create("y", {"value": 0})
        await seen.wait_for(key="y", version=1)
        raw = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            tx = raw.transaction()
            await tx.start()
            late_seq = await write_late_change(raw)
            change_y = await counters.update({"value": 1}, key="y")
            assert change_y.seq > late_seq
            await seen.wait_for(key="y", version=2)
            assert a.applied_seq == late_seq - 1  # its own write is past the hole
            await asyncio.sleep(0.5)  # catch-up runs read past the hole
            assert b.applied_seq == late_seq - 1
            await tx.commit()
        finally:
            await raw.close()
        await seen.wait_for(key="x", version=2, timeout=20)
        for _ in range(100):
            if b.applied_seq == change_y.seq:
                break
            await asyncio.sleep(0.05)
        assert b.applied_seq == change_y.seq


async def test_no_false_lagging_drift_when_notices_keep_up(
    database_url: str, redis_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """Instances that applied every change through notices are not reported lagging,
    however long ago catch-up last ran."""
    options = ClusterOptions(lag_grace=0.2, heartbeat_interval=0.2, housekeeping_interval=3600)
    common: dict[str, Any] = dict(
        managers=[CountersManager], redis_url=redis_url, cluster=cluster,
        cluster_options=options, catch_up_interval=NO_CATCH_UP,
    )  # fmt: skip
    async with (
        connect(database_url, hub_env, instance_id="writer", **common) as a,
        connect(database_url, hub_env, instance_id="reader", **common) as b,
    ):
        seen = record_changes(b.manager(CountersManager))
        await a.manager(CountersManager).create("x", {"value": 1})
        await seen.wait_for(key="x", version=1)
        await asyncio.sleep(0.6)  # past lag_grace, and both hubs have beaten since
        status = await a.cluster_status()
        assert {i.instance_id for i in status.instances} == {"writer", "reader"}
        assert [d for d in status.drift if d.kind == "lagging"] == []
