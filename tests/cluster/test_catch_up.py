"""Catch-up from the change log: the late-commit trap, and a writer that dies before
publishing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from confman import LocalBus
from confman.testing import record_changes

from ..support import connect
from .helpers import workers, write_late_change
from .models import CountersManager


def asyncpg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.mark.parametrize("gap_timeout", [60.0, 0.2], ids=["within-gap-timeout", "beyond-it"])
async def test_late_commit_with_lower_seq_is_applied_once(
    database_url: str, hub_env: dict[str, str], gap_timeout: float
) -> None:
    """PostgreSQL hands out seq at INSERT: hold a transaction that took seq N open while
    another commits N+1; the observer must still apply N once it commits, exactly once
    (even when it commits after the observer stopped waiting for it every run)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers: ids commit in order")
    async with (
        connect(database_url, hub_env, managers=[CountersManager], instance_id="writer") as a,
        connect(
            database_url,
            hub_env,
            managers=[CountersManager],
            instance_id="observer",
            bus=LocalBus(f"isolated-{uuid.uuid4().hex}"),  # catch-up is the only path
            catch_up_interval=0.1,
            gap_timeout=gap_timeout,
        ) as b,
    ):
        counters_a, counters_b = a.manager(CountersManager), b.manager(CountersManager)
        await counters_a.create("x", {"value": 0})
        await counters_a.create("y", {"value": 0})
        seen = record_changes(counters_b)
        await seen.wait_for(key="y", version=1)
        seen.changes.clear()

        raw = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            tx = raw.transaction()
            await tx.start()
            late_seq = await write_late_change(raw)
            # A later id commits first.
            change_y = await counters_a.update({"value": 1}, key="y")
            assert change_y.seq > late_seq
            await seen.wait_for(key="y", version=2)
            await asyncio.sleep(0.5)  # several catch-up runs read past the hole
            assert counters_b.version("x") == 1
            if gap_timeout > 1:
                assert b.applied_seq < late_seq  # the hole holds the watermark back
            else:
                assert late_seq in b._late_gaps  # given up on, still looked for
            await tx.commit()
        finally:
            await raw.close()

        change = await seen.wait_for(key="x", version=2, timeout=20)
        assert change.new is not None and change.new.value == 7
        await asyncio.sleep(0.5)  # more catch-up runs must not emit anything again
        assert seen.versions("x") == [2]
        assert seen.versions("y") == [2]
        assert b.applied_seq >= change_y.seq


async def test_writer_dying_between_commit_and_publish(
    database_url: str,
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
    hub_env: dict[str, str],
) -> None:
    """The writer process commits and is gone before it could publish its notice."""
    async with connect(database_url, hub_env, managers=[CountersManager]) as hub:
        await hub.manager(CountersManager).create("c", {"value": 0})
    expect = {"counters/c": 2}
    with workers([worker_config("listener", expect=expect)], tmp_path) as (listener,):
        listener.expect("READY")
        with workers([worker_config("doomed", role="crash_after_commit", key="c")], tmp_path) as (
            doomed,
        ):
            await asyncio.to_thread(doomed.proc.wait, 60)
            assert doomed.proc.returncode == 17
        await asyncio.to_thread(listener.expect, "CONVERGED", 30)
        result = listener.stop()
    assert result["seen"]["counters/c"] == [2]
    assert result["stats"]["notices_received"] == 0
