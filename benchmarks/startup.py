"""Start-up: ``ConfigHub.connect`` with all four managers on a filled database.

The database holds a cache policy, 1,000 model providers (each with an encrypted API
key), a router with 100 aliases over them, and 10,000 virtual keys with their change
log. Timed from ``connect`` until the hub is usable (schema check, change-log high-water
mark, every manager loaded, bus started), in this process, after one warm-up start.
"""

from __future__ import annotations

import time

from .common import Context, FigureResult, Measurement, median
from .gateway import managers, seed_gateway

ID = "startup"
TITLE = "hub start-up, four managers (1,000 providers, 10,000 keys)"


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub

    m = managers()
    providers = 1_000
    virtual_keys = ctx.scale(2_000, 10_000)
    repeats = ctx.scale(2, 7)
    loaded = [m["cache"], m["router"], m["model_provider"], m["virtual_key"]]
    backends = ["sqlite"] + (["postgresql"] if ctx.postgres_reachable() else [])
    result.facts["virtual_keys"] = virtual_keys
    result.facts["providers"] = providers
    for backend in backends:
        async with ctx.database(backend) as url:
            await seed_gateway(ctx, url, providers=providers, virtual_keys=virtual_keys)
            opened: list[float] = []
            closed: list[float] = []
            for _ in range(repeats + 1):
                began = time.perf_counter()
                hub = await ConfigHub.connect(url, managers=loaded, **ctx.hub_options())
                ready = time.perf_counter()
                try:
                    assert len(hub.manager(m["model_provider"]).keys()) == providers
                    assert len(hub.manager(m["router"]).current.aliases) == 100
                finally:
                    await hub.close()
                opened.append(ready - began)
                closed.append(time.perf_counter() - ready)
            opened, closed = opened[1:], closed[1:]  # the first start warmed caches up
        result.add(
            Measurement(
                f"{backend}: connect until ready",
                median(opened) * 1000,
                "ms",
                samples=repeats,
                detail={"runs_ms": [x * 1000 for x in opened]},
            )
        )
        result.add(
            Measurement(
                f"{backend}: close", median(closed) * 1000, "ms", samples=repeats, kind="info"
            )
        )
    if virtual_keys != 10_000:
        result.facts["note"] = f"quick mode: {virtual_keys:,} virtual keys instead of 10,000"
