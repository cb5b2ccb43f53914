"""B2: single-writer ``update`` throughput against the raw driver, SQLite (WAL) and PostgreSQL.

Both writers run in this process on one database, in alternating rounds (raw, confman,
raw, confman, ...), so drift in the machine's load hits both alike. Throughput is the
median over rounds; per-write latency p50/p99 is over all writes of a side.
"""

from __future__ import annotations

from typing import Any

from .common import Check, Context, FigureResult, Measurement, median, percentile, rate
from .raw import open_writer

ID = "B2"
TITLE = "single-writer update throughput"

FIELD = "default_ttl_seconds"


def _value(i: int) -> int:
    return 1 + i % 1000


async def measure(ctx: Context, url: str, backend: str, result: FigureResult) -> None:
    from confman import ConfigHub
    from confman.managers.cache import CacheConfigurationManager

    rounds = ctx.scale(3, 7)
    per_round = ctx.scale(40, 400)
    warmup = ctx.scale(10, 50)
    raw = await open_writer(url)
    try:
        async with ConfigHub.connect(
            url, managers=[CacheConfigurationManager], **ctx.hub_options()
        ) as hub:
            cache = hub.manager(CacheConfigurationManager)
            await raw.create("bench_raw", "default", {FIELD: _value(0)})
            raw_version = 1

            async def raw_op(i: int) -> None:
                nonlocal raw_version
                raw_version += 1
                await raw.write(
                    "bench_raw",
                    "default",
                    raw_version,
                    {FIELD: _value(i)},
                    {FIELD: _value(i - 1)},
                    [FIELD],
                    "bench",
                    "b2",
                )

            async def confman_op(i: int) -> None:
                await cache.update({FIELD: _value(i)}, actor="bench", reason="b2")

            counter = 1
            await rate(raw_op, warmup, start=counter)
            await rate(confman_op, warmup, start=counter)
            counter += warmup
            rates: dict[str, list[float]] = {"raw": [], "confman": []}
            took: dict[str, list[int]] = {"raw": [], "confman": []}
            for _ in range(rounds):
                for side, op in (("raw", raw_op), ("confman", confman_op)):
                    per_second, times = await rate(op, per_round, start=counter)
                    rates[side].append(per_second)
                    took[side] += times
                counter += per_round
            assert cache.version() == warmup + rounds * per_round
    finally:
        await raw.close()

    ratios = [c / r for c, r in zip(rates["confman"], rates["raw"], strict=True)]
    for side, label in (("raw", "raw driver"), ("confman", "confman update()")):
        ms = [t / 1e6 for t in took[side]]
        detail: dict[str, Any] = {"rounds_per_s": rates[side], "writes_per_round": per_round}
        result.add(
            Measurement(
                f"{backend}: {label}",
                median(rates[side]),
                "writes/s (p50/p99: ms per write)",
                p50=percentile(ms, 50),
                p99=percentile(ms, 99),
                samples=len(ms),
                kind="baseline" if side == "raw" else "confman",
                detail=detail,
            )
        )
    result.check(Check.at_least(f"{backend}: confman / raw throughput", median(ratios), 0.6))


async def run(ctx: Context, result: FigureResult) -> None:
    result.facts["latency_unit"] = "p50/p99 are per write, in ms"
    async with ctx.database("sqlite") as url:
        await measure(ctx, url, "sqlite", result)
    if ctx.postgres_reachable():
        async with ctx.database("postgresql") as url:
            await measure(ctx, url, "postgresql", result)
    else:
        result.facts["postgresql"] = "skipped: PostgreSQL not reachable"
