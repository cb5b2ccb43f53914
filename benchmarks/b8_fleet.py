"""B8: a fleet of 8 instances, one writer: how long until every instance emitted a change.

This process is the writing instance; 7 listener processes (a hub each, one Redis
cluster, one database) are the rest of the fleet. One change at a time, as in B4; per
change the figure is the latest arrival over the 7 listeners (and, as detail, every
single listener's latency). Compared with B4's single listener in the same run.
"""

from __future__ import annotations

from .b4_propagation import ConfmanWriter, _cache_manager, measure, require_redis_bus
from .common import Check, Context, FigureResult, latency, workers

ID = "B8"
TITLE = "fleet: 8 instances, one writer"

INSTANCES = 8


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub

    require_redis_bus()
    ctx.require_redis()
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    instances = ctx.scale(4, INSTANCES)
    total = ctx.scale(30, 1_000)
    warmup = ctx.scale(5, 30)
    cluster = ctx.cluster("b8")
    result.facts["database"] = backend
    result.facts["instances"] = f"{instances} (this writer + {instances - 1} listener processes)"
    async with ctx.database(backend) as url:
        configs = [
            {
                "role": "listen",
                "name": f"b8-listener-{i}",
                "db": url,
                "key": ctx.encryption_key,
                "redis": ctx.redis_url,
                "cluster": cluster,
            }
            for i in range(instances - 1)
        ]
        with workers(configs) as listeners:
            for w in listeners:
                await w.aexpect("READY", 120)
            async with ConfigHub.connect(
                url,
                managers=[_cache_manager()],
                redis_url=ctx.redis_url,
                cluster=cluster,
                instance_id="b8-writer",
                **ctx.hub_options(),
            ) as hub:
                wait = getattr(hub.bus, "wait_connected", None)
                if wait is not None:
                    await wait(10)
                writer = ConfmanWriter(hub)
                await measure(writer.write, listeners, warmup, 0)
                rows = await measure(writer.write, listeners, total, warmup)
            for w in listeners:
                w.stop()
    every = result.add(
        latency(f"commit -> all {instances - 1} other instances emitted", [max(r) for r in rows])
    )
    each = result.add(
        latency(
            "commit -> one instance emitted (all listeners pooled)",
            [x for r in rows for x in r],
            kind="info",
        )
    )
    b4 = ctx.results.get("B4")
    single = None
    if b4 is not None:
        single = next((m for m in b4.measurements if m.name.startswith("confman")), None)
    if single is not None and single.p99 and every.p99:
        result.check(
            Check("fleet p99 / B4 single-listener p99", every.p99 / single.p99, "reported", None)
        )
    result.facts["per_instance_p99_ms"] = each.p99
