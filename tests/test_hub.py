"""ConfigHub: lifecycle, ownership of tasks, catch-up across processes, clear failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import confman
from confman import ConfigHub, ConfmanError, LocalBus, StoreUnavailable
from confman.testing import record_changes, temporary_hub
from tests.models import ALL, CounterManager, FlagsManager

ROOT = Path(__file__).resolve().parent.parent


def test_public_api_is_exported() -> None:
    for name in confman.__all__:
        assert hasattr(confman, name), name
    assert issubclass(StoreUnavailable, ConfmanError)


async def test_close_stops_every_task_it_started(tmp_path: Path) -> None:
    before = asyncio.all_tasks()
    async with temporary_hub(tmp_path, managers=ALL, catch_up_interval=0.01) as hub:
        await asyncio.sleep(0.05)
        assert hub.stats.catch_up_runs > 0
        started = asyncio.all_tasks() - before
        assert started  # the catch-up loop at least
    await asyncio.sleep(0)
    assert all(t.done() for t in started)
    await hub.close()  # idempotent


async def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match="cannot open the database"):
        async with ConfigHub.connect(
            "postgresql://postgres@127.0.0.1:1/nothing", env={}, env_files=(), managers=[]
        ):
            pass


async def test_hub_can_be_awaited_and_closed(tmp_path: Path) -> None:
    async with temporary_hub(tmp_path, managers=[]) as first:
        url = first.engine.url.render_as_string(hide_password=False)
    hub = await ConfigHub.connect(url, env={}, env_files=(), managers=[FlagsManager])
    try:
        assert hub.manager(FlagsManager).version() == 0
    finally:
        await hub.close()


async def test_a_change_committed_by_another_process_arrives_by_catch_up(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from confman import ConfigHub\n"
        "from tests.models import FlagsManager\n"
        "async def main():\n"
        "    async with ConfigHub.connect(sys.argv[1], env={}, env_files=(),\n"
        "                                 managers=[FlagsManager]) as hub:\n"
        "        for name in ('one', 'two', 'from-elsewhere'):\n"
        "            await hub.manager(FlagsManager).update({'name': name})\n"
        "asyncio.run(main())\n"
    )
    async with temporary_hub(
        tmp_path, managers=[FlagsManager], bus=LocalBus("private"), catch_up_interval=0.05
    ) as hub:
        url = hub.engine.url.render_as_string(hide_password=False)
        seen = record_changes(hub.manager(FlagsManager))
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", script, url], cwd=ROOT, capture_output=True
        )
        assert result.returncode == 0, result.stderr
        change = await seen.wait_for(version=3)
        assert change.new is not None and change.new.name == "from-elsewhere"
        # Committed faster than the hub polls, yet each version is seen (`confman watch`).
        assert seen.versions() == [1, 2, 3]
        assert change.origin != hub.instance_id
        assert hub.applied_seq == change.seq


async def test_two_managers_on_one_namespace_are_refused(tmp_path: Path) -> None:
    class Again(FlagsManager):
        pass

    async with temporary_hub(tmp_path, managers=[FlagsManager]) as hub:
        with pytest.raises(ConfmanError, match="already managed by FlagsManager"):
            await hub.load(Again)


async def test_catch_up_reads_batch_after_batch_and_applies_every_version(
    tmp_path: Path,
) -> None:
    # More changes than one read returns (1,000): each batch starts where the last one
    # ended, so every version arrives, in order, and every row is read once.
    async with temporary_hub(
        tmp_path, managers=[CounterManager], bus=LocalBus("away"), catch_up_interval=3600
    ) as away:
        seen = record_changes(away.manager(CounterManager))
        url = away.engine.url.render_as_string(hide_password=False)
        async with ConfigHub.connect(
            url, env={}, env_files=(), managers=[CounterManager], bus=LocalBus("writer")
        ) as writer:
            counter = writer.manager(CounterManager)
            for value in range(2_345):
                await counter.update({"value": value})
        assert await away.catch_up() == 2_345
        assert seen.versions() == list(range(1, 2_346))
        assert away.manager(CounterManager).current.value == 2_344
        assert away.applied_seq == await away.store.max_seq()
        assert await away.catch_up() == 0
