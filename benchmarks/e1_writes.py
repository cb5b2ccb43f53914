"""E1: writes against etcd. confman ``update`` on PostgreSQL vs an etcd compare-and-put.

confman: ``await items.update({"weight": n}, key=k)`` (`benchmarks.models.ItemsManager`:
validated, the secret encrypted, version-checked, logged). etcd: one ``txn`` that
compares the key's ``mod_revision`` with the one this writer last wrote and puts the same
item document as JSON (the optimistic write confman does with its version), through the
JSON gateway (`benchmarks.etcd`). One writer, then 8 concurrent writers (8 asyncio tasks
in this process, each on its own key, for both sides). Sides alternate in rounds;
throughput is the median over rounds, latency p50/p99 over all writes of a side.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .common import Check, Context, FigureResult, Measurement, median, percentile
from .models import ItemsManager, item_document

ID = "E1"
TITLE = "writes: confman update (PostgreSQL) vs etcd txn compare+put"

Op = Callable[[int, int], Awaitable[None]]  # (writer, sequence number)


async def round_of(op: Op, writers: int, per_writer: int, start: int) -> tuple[float, list[int]]:
    """``writers`` tasks each doing ``per_writer`` writes; (writes/s, per-write ns)."""
    took: list[int] = []

    async def task(w: int) -> None:
        for i in range(start, start + per_writer):
            t0 = time.perf_counter_ns()
            await op(w, i)
            took.append(time.perf_counter_ns() - t0)

    began = time.perf_counter_ns()
    await asyncio.gather(*(task(w) for w in range(writers)))
    return writers * per_writer / ((time.perf_counter_ns() - began) / 1e9), took


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub

    from .etcd import EtcdClient

    ctx.require_postgres()
    server = await ctx.etcd()
    result.facts["etcd"] = server.version
    rounds = ctx.scale(2, 5)
    per_round = ctx.scale(30, 300)  # writes per round, split over the writers
    names = [f"e1-{w}" for w in range(8)]
    etcd = EtcdClient(server.url, connections=8)
    prefix = f"/confman-bench/{ctx.run_id}/e1/"
    try:
        async with (
            ctx.database("postgresql") as url,
            ConfigHub.connect(url, managers=[ItemsManager], **ctx.hub_options()) as hub,
        ):
            items = hub.manager(ItemsManager)
            revisions: dict[int, int] = {}
            versions: dict[int, int] = {}
            for w, name in enumerate(names):
                await items.create(name, item_document(w), actor="bench")
                versions[w] = 1
                created = await etcd.put_if(prefix + name, _payload(w, 1), 0)
                assert created is not None
                revisions[w] = created

            async def confman_op(w: int, i: int) -> None:
                await items.update({"weight": 2 + i}, key=names[w], actor="bench", reason="e1")
                versions[w] += 1

            async def etcd_op(w: int, i: int) -> None:
                revision = await etcd.put_if(prefix + names[w], _payload(w, 2 + i), revisions[w])
                if revision is None:
                    raise AssertionError(f"etcd: {names[w]} moved under its only writer")
                revisions[w] = revision

            sides: dict[str, Op] = {"etcd": etcd_op, "confman": confman_op}
            counter = 0
            for writers in (1, 8):
                per_writer = max(1, per_round // writers)
                for op in sides.values():  # warm-up
                    await round_of(op, writers, max(1, per_writer // 5), counter)
                counter += per_writer
                rates: dict[str, list[float]] = {k: [] for k in sides}
                took: dict[str, list[int]] = {k: [] for k in sides}
                for _ in range(rounds):
                    for side, op in sides.items():
                        per_second, times = await round_of(op, writers, per_writer, counter)
                        rates[side].append(per_second)
                        took[side] += times
                    counter += per_writer
                _report(result, writers, rates, took)
            for w, name in enumerate(names):  # every write landed, on both sides
                assert items.version(name) == versions[w], (name, items.version(name))
                stored = await etcd.get(prefix + name)
                assert stored is not None and stored[1] == revisions[w], (name, stored)
    finally:
        await etcd.close()


def _payload(w: int, version: int) -> bytes:
    return json.dumps(item_document(w, version), separators=(",", ":")).encode()


def _report(
    result: FigureResult, writers: int, rates: dict[str, list[float]], took: dict[str, list[int]]
) -> None:
    label = "1 writer" if writers == 1 else f"{writers} concurrent writers"
    for side, what in (
        ("etcd", "etcd txn (mod_revision compare + put)"),
        ("confman", "confman update() on PostgreSQL"),
    ):
        ms = [t / 1e6 for t in took[side]]
        detail: dict[str, Any] = {"rounds_per_s": rates[side], "writers": writers}
        result.add(
            Measurement(
                f"{label}: {what}",
                median(rates[side]),
                "writes/s (p50/p99: ms per write)",
                p50=percentile(ms, 50),
                p99=percentile(ms, 99),
                samples=len(ms),
                kind="baseline" if side == "etcd" else "confman",
                detail=detail,
            )
        )
    ratios = [c / e for c, e in zip(rates["confman"], rates["etcd"], strict=True)]
    result.check(Check(f"{label}: confman / etcd throughput", median(ratios), "reported", None))
