"""S1: start-up and memory at ten times the data. 10,000 and 100,000 documents.

The documents are spread over the four shipped managers as `startup` spreads them: a
cache policy, a router (100 aliases), one model provider per ten documents (each with an
encrypted API key) and virtual keys for the rest. Per database and size: the time of
``ConfigHub.connect`` until ready (median of repeats after one warm-up start), and the
memory the connected hub holds (``tracemalloc``: what stays allocated after connect and
a full collection, in a start of its own since tracing slows everything). Virtual keys
are seeded without change-log rows: start-up reads documents and the log's high-water
mark only.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

from .common import Check, Context, FigureResult, Measurement, median
from .gateway import managers, seed_gateway

ID = "S1"
TITLE = "start-up and memory, four managers, 10,000 vs 100,000 documents"

MIB = 1024 * 1024


async def measure(ctx: Context, backend: str, documents: int, repeats: int) -> tuple[float, float]:
    """(median seconds until ready, bytes held by the hub) for ``documents``."""
    from confman import ConfigHub

    m = managers()
    loaded = [m["cache"], m["router"], m["model_provider"], m["virtual_key"]]
    providers = documents // 10
    async with ctx.database(backend) as url:
        await seed_gateway(
            ctx, url, providers=providers, virtual_keys=documents - providers - 2, log_keys=False
        )
        opened: list[float] = []
        for _ in range(repeats + 1):
            began = time.perf_counter()
            hub = await ConfigHub.connect(url, managers=loaded, **ctx.hub_options())
            opened.append(time.perf_counter() - began)
            try:
                assert len(hub.manager(m["model_provider"]).keys()) == providers
            finally:
                await hub.close()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            hub = await ConfigHub.connect(url, managers=loaded, **ctx.hub_options())
            try:
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                await hub.close()
        finally:
            tracemalloc.stop()
    return median(opened[1:]), float(held)


async def run(ctx: Context, result: FigureResult) -> None:
    managers()  # NotAvailable before any work
    small, large = ctx.scale(500, 10_000), ctx.scale(5_000, 100_000)
    repeats = ctx.scale(1, 3)
    backends = ["sqlite"] + (["postgresql"] if ctx.postgres_reachable() else [])
    if "postgresql" not in backends:
        result.facts["postgresql"] = "skipped: PostgreSQL not reachable"
    result.facts["sizes"] = [small, large]
    for backend in backends:
        figures = {n: await measure(ctx, backend, n, repeats) for n in (small, large)}
        for n, (seconds, held) in figures.items():
            result.add(
                Measurement(
                    f"{backend}, {n:,} documents: connect until ready",
                    seconds * 1000,
                    "ms",
                    samples=repeats,
                )
            )
            result.add(
                Measurement(
                    f"{backend}, {n:,} documents: memory held by the hub",
                    held / MIB,
                    "MiB",
                    detail={"bytes": held, "mib_per_10000_documents": held / MIB * 10_000 / n},
                )
            )
            result.add(
                Measurement(
                    f"{backend}, {n:,} documents: memory per 10,000 documents",
                    held / MIB * 10_000 / n,
                    "MiB",
                    kind="info",
                )
            )
        (t_small, m_small), (t_large, m_large) = figures[small], figures[large]
        label = f"{large:,} / {small:,}"
        result.check(Check.at_most(f"{backend}: start-up {label}", t_large / t_small, 10.0))
        result.check(Check.at_most(f"{backend}: memory {label}", m_large / m_small, 10.0))
