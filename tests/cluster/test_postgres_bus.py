"""PostgresBus: LISTEN/NOTIFY fan-out on the database itself, with no other server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from confman import ConfigHub
from confman.bus import CommitNotifyingBus
from confman.bus.postgres import PostgresBus
from confman.bus.wire import decode_notice
from confman.exceptions import ConfmanError
from confman.testing import record_changes

from ..faults import fault_proxy
from ..support import connect, own_database, pg_url, require_service
from .models import CountersManager, LimitsManager

SLOW = {"catch_up_interval": 3600.0}  # only the bus can deliver quickly


@pytest.fixture
def pg_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with own_database("postgresql", request, tmp_path) as url:
        yield url


def pg_hub(url: str, env: dict[str, str], cluster: str, name: str, **options: Any) -> Any:
    return connect(
        url, env, managers=[LimitsManager, CountersManager], bus="postgres",
        cluster=cluster, instance_id=name, **{**SLOW, **options},
    )  # fmt: skip


async def test_change_reaches_other_hub_through_notify(
    pg_database: str, cluster: str, hub_env: dict[str, str]
) -> None:
    async with (
        pg_hub(pg_database, hub_env, cluster, "a") as a,
        pg_hub(pg_database, hub_env, cluster, "b") as b,
    ):
        assert isinstance(a.bus, PostgresBus) and isinstance(a.bus, CommitNotifyingBus)
        assert a.store.notify_channel == f"{cluster}:changes"
        seen = record_changes(b.manager(LimitsManager))
        await a.manager(LimitsManager).update({"high": 10}, actor="t")
        change = await seen.wait_for(version=1, timeout=10)
        assert change.new is not None and change.new.high == 10 and change.origin == "a"
        assert b.bus.stats.received >= 1 and b.stats.catch_up_runs <= 1
        # The database sent the notice with the commit; the hub published nothing.
        assert a.bus.stats.published == 0 and a.bus.stats.publish_failures == 0


async def test_notice_is_sent_by_the_commit(pg_database: str, cluster: str) -> None:
    """A raw listener hears the notice of a hub's write, payload without any value, and
    hears nothing for a write that conflicts (nothing committed)."""
    heard: asyncio.Queue[str] = asyncio.Queue(maxsize=100)
    raw = await asyncpg.connect(pg_database)
    try:
        await raw.add_listener(f"{cluster}:changes", lambda *a: heard.put_nowait(a[3]))
        async with pg_hub(pg_database, {}, cluster, "a") as a:
            counters = a.manager(CountersManager)
            await counters.create("k", {"value": 7})
            payload = await asyncio.wait_for(heard.get(), 10)
            notice = decode_notice(payload)
            assert (notice.namespace, notice.key, notice.version, notice.origin) == (
                "counters", "k", 1, "a",
            )  # fmt: skip
            assert "7" not in payload.replace(f'"seq" : {notice.seq}', "")
            with pytest.raises(ConfmanError):
                await counters.create("k", {"value": 8})
            await asyncio.sleep(0.3)
            assert heard.empty()
    finally:
        await raw.close()


async def test_sqlite_refuses_the_postgres_bus(tmp_path: Path) -> None:
    with pytest.raises(ConfmanError, match="SQLite"):
        ConfigHub.connect(f"sqlite+aiosqlite:///{tmp_path}/x.db", bus="postgres", env={})


async def test_listener_lost_then_back_catches_up(
    pg_database: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """B reaches the database through a proxy that is cut: the notices of A's writes
    are lost; when it is back, B listens again and that alone makes it catch up."""
    database = pg_database.rsplit("/", 1)[1]
    with fault_proxy("127.0.0.1", 5432) as proxy:
        via_proxy = pg_url(database).replace("127.0.0.1:5432", proxy.address())
        async with (
            pg_hub(pg_database, hub_env, cluster, "a") as a,
            pg_hub(via_proxy, hub_env, cluster, "b", catch_up_interval=3600.0) as b,
        ):
            bus = b.bus
            assert isinstance(bus, PostgresBus)
            bus.health_interval = 0.2
            limits_b = b.manager(LimitsManager)
            seen = record_changes(limits_b)
            await a.manager(LimitsManager).update({"high": 11})
            await seen.wait_for(version=1, timeout=10)
            proxy.cut()
            for _ in range(50):
                if not bus.connected:
                    break
                await asyncio.sleep(0.05)
            assert not bus.connected
            await a.manager(LimitsManager).update({"high": 12})
            await a.manager(LimitsManager).update({"high": 13})
            await asyncio.sleep(0.3)
            assert limits_b.version() == 1
            proxy.restore()
            change = await seen.wait_for(version=3, timeout=20)
            assert change.new is not None and change.new.high == 13
            assert bus.stats.connects >= 2 and bus.stats.disconnects >= 1
            assert seen.versions() == sorted(set(seen.versions()))
            await a.manager(LimitsManager).update({"high": 14})
            await seen.wait_for(version=4, timeout=20)


async def test_terminated_listener_reconnects(
    pg_database: str, cluster: str, hub_env: dict[str, str]
) -> None:
    async with (
        pg_hub(pg_database, hub_env, cluster, "a") as a,
        pg_hub(pg_database, hub_env, cluster, "b") as b,
    ):
        bus = b.bus
        assert isinstance(bus, PostgresBus)
        raw = await asyncpg.connect(pg_database)
        try:
            killed = await raw.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                bus.application_name,
            )
        finally:
            await raw.close()
        assert killed == 2  # a's and b's listeners share the name
        for _ in range(200):
            if bus.stats.connects >= 2 and a.bus.stats.connects >= 2:
                break
            await asyncio.sleep(0.05)
        assert bus.stats.connects >= 2
        seen = record_changes(b.manager(LimitsManager))
        await a.manager(LimitsManager).update({"high": 15})
        await seen.wait_for(version=1, timeout=10)
