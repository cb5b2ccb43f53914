"""C1: a change set of 100 documents against 100 single-document writes, per database.

One hub, a collection of 100 items; each round writes all 100 once as 100 ``update``
calls and once as one change set of 100 members, alternating, so load from elsewhere
hits both alike. Target: the set takes at most a tenth of the time of the 100 writes
(one transaction, not one hundred).
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from .common import Check, Context, FigureResult, Measurement, median

ID = "C1"
TITLE = "a 100-document change set against 100 single writes"

DOCUMENTS = 100


class Item(BaseModel):
    title: str = "item"
    weight: int = 1


def _manager() -> type:
    from confman import ConfigurationManager

    class ItemsManager(ConfigurationManager[Item]):
        namespace = "bench_items"
        model = Item
        keyed = True

    return ItemsManager


async def run(ctx: Context, result: FigureResult) -> None:
    backends = ["sqlite"] + (["postgresql"] if ctx.postgres_reachable() else [])
    manager_cls = _manager()
    for backend in backends:
        async with ctx.database(backend) as url:
            await _measure(ctx, url, backend, manager_cls, result)


async def _measure(
    ctx: Context, url: str, backend: str, manager_cls: type, result: FigureResult
) -> None:
    from confman import ConfigHub

    rounds = ctx.scale(2, 7)
    async with ConfigHub.connect(url, managers=[manager_cls], **ctx.hub_options()) as hub:
        items = hub.manager(manager_cls)
        async with hub.change_set(actor="bench") as cs:
            for i in range(DOCUMENTS):
                cs.create(items, f"item-{i:03d}", {"weight": 1})
        value = 1
        singles: list[float] = []
        sets: list[float] = []
        for _ in range(rounds):
            value += 1
            began = time.perf_counter()
            for i in range(DOCUMENTS):
                await items.update({"weight": value}, key=f"item-{i:03d}", actor="bench")
            singles.append(time.perf_counter() - began)
            value += 1
            began = time.perf_counter()
            async with hub.change_set(actor="bench") as cs:
                for i in range(DOCUMENTS):
                    cs.update(items, {"weight": value}, key=f"item-{i:03d}")
            sets.append(time.perf_counter() - began)
            assert all(items.get(f"item-{i:03d}").weight == value for i in range(DOCUMENTS))
    result.add(
        Measurement(
            f"{backend}: {DOCUMENTS} update() calls",
            median(singles) * 1000,
            "ms",
            samples=rounds,
            kind="baseline",
        )
    )
    result.add(
        Measurement(
            f"{backend}: one change set of {DOCUMENTS}",
            median(sets) * 1000,
            "ms",
            samples=rounds,
        )
    )
    ratio = median([s / w for s, w in zip(sets, singles, strict=True)])
    result.check(Check.at_most(f"{backend}: set / {DOCUMENTS} single writes", ratio, 0.1))
