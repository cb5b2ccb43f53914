"""E3: catch-up against etcd. 10,000 changes missed while away, then caught up.

confman: exactly B6's one-change-per-key shape (a hub on a private ``LocalBus`` loads
10,000 items, 10,000 changes commit behind its back, ``await hub.catch_up()`` until
every key is at its newest version), on PostgreSQL (SQLite without it).

etcd, in the same run: 10,000 item documents (JSON) under a prefix, the revision noted,
then 10,000 changes (one per key) committed in transactions of 128 puts (etcd's default
``--max-txn-ops``), as B6 bulk-seeds confman's. The returning watcher opens a prefix
watch resumed from the noted revision + 1 and decodes every event's value with the same
pydantic model (``Item``) into its own dict, timed until the 10,000th change is held;
then every key is checked at its newest version. Sides alternate per repeat.
"""

from __future__ import annotations

import json
import time

from .b6_catchup import once as confman_once
from .common import Check, Context, FigureResult, Measurement, median
from .models import Item, item_document

ID = "E3"
TITLE = "catch-up after 10,000 missed changes: confman vs an etcd watch from a revision"


async def etcd_once(ctx: Context, url: str, changes: int, attempt: int) -> float:
    """One away-and-back against etcd; seconds from opening the watch to the last change."""
    from .etcd import MAX_TXN_OPS, EtcdClient, event_value

    client = EtcdClient(url, connections=2)
    prefix = f"/confman-bench/{ctx.run_id}/e3/{attempt}/"
    names = [f"{prefix}item-{i:06d}" for i in range(changes)]

    def payload(i: int, version: int) -> bytes:
        return json.dumps(item_document(i, version), separators=(",", ":")).encode()

    async def put_all(version: int) -> int:
        revision = 0
        for start in range(0, changes, MAX_TXN_OPS):
            chunk = range(start, min(changes, start + MAX_TXN_OPS))
            revision = await client.put_many([(names[i], payload(i, version)) for i in chunk])
        return revision

    try:
        seen = await put_all(1)  # what the returning instance held before it left
        await put_all(2)  # the away period
        held: dict[str, Item] = {}
        began = time.perf_counter()
        async with client.watch(prefix, prefix=True, start_revision=seen + 1) as batches:
            async for batch in batches:
                for event in batch:
                    key, value, _ = event_value(event)
                    held[key] = Item.model_validate_json(value)
                if len(held) >= changes:
                    break
        took = time.perf_counter() - began
        stale = [k for k in names if held[k].weight != 2]
        if len(held) != changes or stale:
            raise AssertionError(f"etcd catch-up held {len(held)} of {changes}; {len(stale)} stale")
        return took
    finally:
        await client.close()


async def run(ctx: Context, result: FigureResult) -> None:
    server = await ctx.etcd()
    changes = ctx.scale(1_000, 10_000)
    repeats = ctx.scale(1, 3)
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    result.facts.update(database=backend, changes=changes, etcd=server.version)
    times: dict[str, list[float]] = {"etcd": [], "confman": []}
    for attempt in range(repeats):
        times["etcd"].append(await etcd_once(ctx, server.url, changes, attempt))
        took, read, _ = await confman_once(ctx, backend, changes, changes)
        assert read == changes
        times["confman"].append(took)
    for side, what in (
        ("etcd", "etcd: prefix watch resumed from a revision, decode + validate"),
        ("confman", f"confman: hub.catch_up() on {backend}"),
    ):
        result.add(
            Measurement(
                f"{changes:,} changes, one per key: {what}",
                median(times[side]) * 1000,
                "ms",
                samples=repeats,
                kind="baseline" if side == "etcd" else "confman",
                detail={"runs_s": times[side]},
            )
        )
    ratios = [c / e for c, e in zip(times["confman"], times["etcd"], strict=True)]
    result.check(Check("confman time / etcd time", median(ratios), "reported", None))
