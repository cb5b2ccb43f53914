"""Several OS processes, each with its own hub, on one database and one Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..support import connect
from .helpers import KEYS, PER_KEY, assert_strictly_increasing, own_redis, workers, write_changes
from .models import CountersManager, LimitsManager


async def test_five_instances_converge_on_1000_changes(
    database_url: str,
    redis_url: str,
    cluster: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    if database_url.startswith("postgresql"):
        pytest.skip("on PostgreSQL, tests/cluster/test_transports.py runs it on every bus")
    expect = {f"counters/{k}": PER_KEY for k in KEYS}
    configs = [worker_config(f"w{i}", expect=expect) for i in range(5)]
    with workers(configs, tmp_path) as fleet:
        for w in fleet:
            w.expect("READY")
        await write_changes(database_url, hub_env, redis_url=redis_url, cluster=cluster)
        for w in fleet:
            await asyncio.to_thread(w.expect, "CONVERGED", 120)
        results = [w.stop() for w in fleet]
    for result in results:
        assert_strictly_increasing(result, expect)
        # Notices did the work: the catch-up is a safety net here, not the carrier.
        assert result["stats"]["notices_received"] > 0


async def test_dropped_notices_still_converge(
    database_url: str,
    redis_url: str,
    cluster: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Writers in two processes: one drops every other notice, one publishes nothing."""
    expect = {"counters/a": 41, "counters/b": 41}
    async with connect(database_url, hub_env, managers=[CountersManager]) as hub:
        await hub.manager(CountersManager).create("a", {"value": 0})
        await hub.manager(CountersManager).create("b", {"value": 0})
    listen = [worker_config(f"listener{i}", expect=expect) for i in (1, 2)]
    write = [
        worker_config("dropper", role="increment", increments=40, key="a", bus="drop_half"),
        worker_config("mute", role="increment", increments=40, key="b", bus="no_publish"),
    ]
    with workers(listen, tmp_path) as listeners:
        for w in listeners:
            w.expect("READY")
        with workers(write, tmp_path) as writers:
            for w in writers:
                assert (await asyncio.to_thread(w.expect, "DONE", 120)) == "DONE 40 0"
            for w in listeners:
                await asyncio.to_thread(w.expect, "CONVERGED", 60)
            for w in writers:
                w.stop()
        results = [w.stop() for w in listeners]
    for result in results:
        assert_strictly_increasing(result, expect)
        # Half of a's notices and all of b's were never sent: catch-up delivered them.
        assert result["stats"]["caught_up_changes"] > 0


async def test_concurrent_writers_lose_no_update(
    database_url: str,
    redis_url: str,
    cluster: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    async with connect(database_url, hub_env, managers=[CountersManager]) as hub:
        await hub.manager(CountersManager).create("shared", {"value": 0})
    per_writer = 25
    configs = [
        worker_config(f"inc{i}", role="increment", increments=per_writer, key="shared")
        for i in range(4)
    ]
    with workers(configs, tmp_path) as fleet:
        for w in fleet:
            w.expect("READY")
        done = [await asyncio.to_thread(w.expect, "DONE", 180) for w in fleet]
        results = [w.stop() for w in fleet]
    succeeded = sum(r["ok"] for r in results)
    assert succeeded == sum(int(line.split()[1]) for line in done)
    async with connect(database_url, hub_env, managers=[CountersManager]) as hub:
        counters = hub.manager(CountersManager)
        assert counters.get("shared").value == succeeded
        assert counters.version("shared") == succeeded + 1
        history = await counters.history("shared", limit=1000)
        assert sorted(c.version for c in history) == list(range(1, succeeded + 2))


async def test_redis_killed_and_restarted_mid_stream(
    database_url: str,
    cluster: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Our own redis-server dies while changes stream in, and comes back: writes keep
    committing, and every instance converges (pub/sub resumes on its own)."""
    if database_url.startswith("postgresql"):
        pytest.skip("on PostgreSQL, tests/cluster/test_transports.py runs it on every bus")
    keys = ["r0", "r1", "r2"]
    rounds = 60
    expect = {f"counters/{k}": rounds for k in keys}
    with own_redis() as server:
        configs = [
            worker_config(f"w{i}", redis=server.url, expect=expect, hub={"catch_up_interval": 30})
            for i in range(3)
        ]
        with workers(configs, tmp_path) as fleet:
            for w in fleet:
                w.expect("READY")
            async with connect(
                database_url, hub_env, managers=[CountersManager], redis_url=server.url,
                cluster=cluster,
            ) as hub:  # fmt: skip
                counters = hub.manager(CountersManager)
                for key in keys:
                    await counters.create(key, {"value": 0})
                for i in range(1, rounds):
                    if i == rounds // 3:
                        server.kill()
                    if i == 2 * rounds // 3:
                        server.start()
                    await asyncio.gather(*(counters.update({"value": i}, key=key) for key in keys))
                assert hub.bus.stats.publish_failures > 0  # type: ignore[attr-defined]
            # Catch-up runs every 30 s here: only the reconnect can bring the rest soon.
            for w in fleet:
                await asyncio.to_thread(w.expect, "CONVERGED", 25)
            results = [w.stop() for w in fleet]
    for result in results:
        assert_strictly_increasing(result, expect)


async def test_wait_for_instances_across_processes(
    database_url: str,
    redis_url: str,
    cluster: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Three instance processes, one of which refuses the change (its override)."""
    options = {"heartbeat_interval": 0.2, "housekeeping_interval": 3600}
    configs = [
        worker_config("ok1", cluster_options=options),
        worker_config("ok2", cluster_options=options),
        worker_config("strict", cluster_options=options, env={"CONFMAN_LIMITS__HIGH": "50"}),
    ]
    with workers(configs, tmp_path) as fleet:
        for w in fleet:
            w.expect("READY")
        async with connect(
            database_url, hub_env, managers=[LimitsManager], redis_url=redis_url,
            cluster=cluster, instance_id="writer",
        ) as hub:  # fmt: skip
            change = await hub.manager(LimitsManager).update({"low": 70}, wait_for_instances=20)
        for w in fleet:
            w.stop()
    report = change.fleet
    assert report is not None
    assert sorted(r.instance_id for r in report.applied) == ["ok1", "ok2", "writer"]
    assert [r.instance_id for r in report.refused] == ["strict"]
    assert "CONFMAN_LIMITS__HIGH" in (report.refused[0].reason or "")
    assert report.missing == ()
