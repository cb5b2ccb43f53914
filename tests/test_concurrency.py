"""No lost update under real concurrency: tasks on separate hubs and separate processes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from sqlalchemy import func, select

from confman import ConcurrencyConflict
from confman.store.tables import config_changes
from tests.models import Counter, CounterManager
from tests.support import connect

ROOT = Path(__file__).resolve().parent.parent


async def test_racing_writers_on_one_document_lose_nothing(database_url: str) -> None:
    # Four hubs (four engines, four connection pools) in one process, five tasks each,
    # all incrementing one counter with a single attempt: some must conflict.
    hubs = [await connect(database_url, managers=[CounterManager]) for _ in range(4)]
    try:
        outcomes: list[bool] = []

        async def once(hub_index: int) -> None:
            counter = hubs[hub_index].manager(CounterManager)
            for _ in range(5):
                await hubs[hub_index].catch_up()
                try:
                    await counter.update(lambda c: Counter(value=c.value + 1))
                    outcomes.append(True)
                except ConcurrencyConflict as e:
                    assert e.current_version >= e.expected_version
                    outcomes.append(False)

        await asyncio.gather(*(once(i % 4) for i in range(20)))
        successes = outcomes.count(True)
        assert successes >= 1
        assert False in outcomes, "the writers never raced; the test proves nothing"
        async with connect(database_url, managers=[CounterManager]) as fresh:
            counter = fresh.manager(CounterManager)
            # The value is the number of successful writes: no update was lost...
            assert counter.current.value == successes
            assert counter.version() == successes
            # ...and the change log has exactly one row per committed change.
            async with fresh.engine.connect() as conn:
                rows = await conn.scalar(select(func.count()).select_from(config_changes))
            assert rows == successes
            versions = [r.version for r in await counter.history(limit=1000)]
            assert versions == list(range(successes, 0, -1))
    finally:
        for hub in hubs:
            await hub.close()


async def _run_workers(
    database_url: str, processes: int, n: int, mode: str
) -> list[dict[str, int]]:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.workers.increment",
            database_url,
            str(n),
            mode,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    results = []
    for proc in procs:
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        results.append(json.loads(out))
    return results


async def test_processes_retrying_functions_apply_every_increment(database_url: str) -> None:
    results = await _run_workers(database_url, processes=3, n=15, mode="retry")
    assert all(r["ok"] == 15 for r in results)
    async with connect(database_url, managers=[CounterManager]) as hub:
        counter = hub.manager(CounterManager)
        assert counter.current.value == 45
        assert counter.version() == 45
        actors = {r.actor for r in await counter.history(limit=100)}
        assert len(actors) == 3


async def test_processes_single_attempts_never_lose_an_update(database_url: str) -> None:
    results = await _run_workers(database_url, processes=3, n=15, mode="once")
    successes = sum(r["ok"] for r in results)
    assert successes + sum(r["conflicts"] for r in results) == 45
    async with connect(database_url, managers=[CounterManager]) as hub:
        assert hub.manager(CounterManager).current.value == successes
        async with hub.engine.connect() as conn:
            rows = await conn.scalar(select(func.count()).select_from(config_changes))
        assert rows == successes
