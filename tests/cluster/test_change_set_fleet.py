"""Change sets across processes: listeners never observe part of a set, and a writer
killed while committing one leaves all of it or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..support import connect
from .helpers import assert_strictly_increasing, workers
from .models import CountersManager

KEYS = ["a", "b", "c"]
ROUNDS = 60


async def test_listeners_in_other_processes_never_see_half_a_set(
    worker_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    expect = {f"counters/{k}": ROUNDS for k in KEYS}
    listeners = [
        worker_config(f"listener{i}", expect=expect, snapshot=KEYS, **extra)
        for i, extra in enumerate([{}, {"drop_received": 3}])  # one loses 2 of 3 notices
    ]
    writer = worker_config("writer", role="sets", sets={"keys": KEYS, "rounds": ROUNDS})
    with workers(listeners, tmp_path) as fleet:
        for w in fleet:
            w.expect("READY")
        with workers([writer], tmp_path) as [w]:
            await asyncio.to_thread(w.expect, "DONE", 120)
            written = w.stop()
        for listener in fleet:
            await asyncio.to_thread(listener.expect, "CONVERGED", 120)
        results = [listener.stop() for listener in fleet]
    assert_strictly_increasing(written, expect)
    for result in results:
        assert_strictly_increasing(result, expect)
        # At every emission, every key of the set held the same round: no half sets
        # (the first set creates the keys: before it nothing is there at all).
        snapshots = result["snapshots"]
        assert snapshots, result["instance_id"]
        torn = [s for s in snapshots if len(set(s)) != 1]
        assert torn == [], (result["instance_id"], torn[:5])
    assert all(len(set(s)) == 1 for s in written["snapshots"])


async def test_a_writer_killed_while_committing_leaves_all_of_a_set_or_nothing(
    database_url: str,
    hub_env: dict[str, str],
    worker_config: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    writer = worker_config("doomed", role="sets", sets={"keys": KEYS, "rounds": 5, "crash_in": 3})
    with workers([writer], tmp_path) as [w]:
        await asyncio.to_thread(w.proc.wait, 60)
        assert w.proc.returncode == -9  # killed in round 3, as planned
    async with connect(database_url, hub_env, managers=[CountersManager]) as hub:
        counters = hub.manager(CountersManager)
        values = {counters.get(k).value for k in KEYS}
        assert values in ({2}, {3}), values  # round 3 committed whole, or not at all
        rounds = {r.reason for r in await hub.changes_since(0)}
        assert rounds <= {f"round {i}" for i in (1, 2, 3)}
