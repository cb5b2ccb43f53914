"""B6: catch-up. An instance is away while 10,000 changes commit, then comes back.

The returning instance is a hub on its own ``LocalBus("private-...")``, so no notice
reaches it: only catch-up from the change log carries the changes. It loads the items,
the changes commit (bulk-seeded in confman's stored form, see `benchmarks.seed`), and we
time ``await hub.catch_up()`` until it returns, then verify every key is at its newest
version. Two shapes: every change on its own key (10,000 keys, each one applied), and the
same number of changes on 100 hot keys (newest-per-key coalescing applies).
"""

from __future__ import annotations

import time
import uuid

from .common import Check, Context, FigureResult, Measurement, median
from .models import Item, ItemsManager, item_document
from .seed import Doc, seed

ID = "B6"
TITLE = "catch-up after 10,000 changes"

TARGET_CHANGES = 10_000


async def once(ctx: Context, backend: str, keys: int, changes: int) -> tuple[float, int, int]:
    """One away-and-back; returns (seconds, rows read, ConfigChange events emitted)."""
    from confman import ConfigHub, LocalBus

    async with ctx.database(backend) as url:
        names = [f"item-{i:06d}" for i in range(keys)]
        await seed(
            url,
            ItemsManager.namespace,
            Item,
            [Doc(k, 1, item_document(i)) for i, k in enumerate(names)],
            encryption_key=ctx.encryption_key,
        )
        async with ConfigHub.connect(
            url,
            managers=[ItemsManager],
            bus=LocalBus(f"private-{uuid.uuid4().hex}"),
            catch_up_interval=3600,
            **ctx.hub_options(),
        ) as hub:
            items = hub.manager(ItemsManager)
            emitted = 0

            def count(_: object) -> None:
                nonlocal emitted
                emitted += 1

            items.changes.subscribe(count)
            # The away period: `changes` commits spread round-robin over the keys.
            away: list[Doc] = []
            for n in range(changes):
                i = n % keys
                version = 2 + n // keys
                away.append(
                    Doc(names[i], version, item_document(i, version), item_document(i, version - 1))
                )
            await seed(
                url,
                ItemsManager.namespace,
                Item,
                away,
                encryption_key=ctx.encryption_key,
                origin="bench-away-writer",
            )
            began = time.perf_counter()
            read = await hub.catch_up()
            took = time.perf_counter() - began
            newest = 1 + changes // keys
            stale = [k for k in names if items.version(k) != newest]
            if read != changes or stale:
                raise AssertionError(
                    f"catch-up read {read} of {changes} rows; {len(stale)} keys not at v{newest}"
                )
            assert items.get(names[-1]).weight == newest
            return took, read, emitted


async def run(ctx: Context, result: FigureResult) -> None:
    changes = ctx.scale(1_000, TARGET_CHANGES)
    repeats = ctx.scale(1, 3)
    backends = ["sqlite"] + (["postgresql"] if ctx.postgres_reachable() else [])
    if "postgresql" not in backends:
        result.facts["postgresql"] = "skipped: PostgreSQL not reachable"
    for backend in backends:
        for keys, shape in ((changes, "one change per key"), (100, "100 hot keys")):
            runs = [await once(ctx, backend, keys, changes) for _ in range(repeats)]
            seconds = median([r[0] for r in runs])
            result.add(
                Measurement(
                    f"{backend}: {changes:,} changes, {shape}",
                    seconds * 1000,
                    "ms",
                    samples=repeats,
                    detail={
                        "runs_s": [r[0] for r in runs],
                        "rows_read": runs[0][1],
                        "changes_emitted": runs[0][2],
                        "keys": keys,
                    },
                )
            )
            scaled = seconds * TARGET_CHANGES / changes
            label = "" if changes == TARGET_CHANGES else f" (x{TARGET_CHANGES // changes} scaled)"
            result.check(
                Check(
                    f"{backend}, {shape}: seconds for 10,000{label} / 1 s",
                    scaled,
                    "<= 1x (1 s)",
                    scaled <= 1.0,
                )
            )
            result.facts[f"{backend}/{shape}: seconds for 10,000"] = round(scaled, 3)
