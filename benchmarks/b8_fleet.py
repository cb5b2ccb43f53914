"""B8: a fleet of 8 instances, one writer: how long until every instance emitted a change.

This process is the writing instance; 7 listener processes (a hub each, one cluster,
one database) are the rest of the fleet. One change at a time, as in B4; per change the
figure is the latest arrival over the 7 listeners (and, as detail, every single
listener's latency). Per transport B4 measures (Redis, PostgreSQL NOTIFY, MQTT),
compared with B4's single listener on the same transport in the same run.
"""

from __future__ import annotations

from .b4_propagation import (
    ConfmanWriter,
    _cache_manager,
    confman_name,
    measure,
    require_redis_bus,
    transport_options,
    transports,
)
from .common import Check, Context, FigureResult, Skipped, latency, workers

ID = "B8"
TITLE = "fleet: 8 instances, one writer"

INSTANCES = 8


async def run(ctx: Context, result: FigureResult) -> None:
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    found = transports(ctx, backend)
    if "redis" in found:
        require_redis_bus()
    if not found:
        raise Skipped("no transport reachable (Redis, PostgreSQL or an MQTT broker)")
    instances = ctx.scale(4, INSTANCES)
    result.facts["database"] = backend
    result.facts["instances"] = f"{instances} (this writer + {instances - 1} listener processes)"
    result.facts["transports"] = ", ".join(found)
    for transport in found:
        await fleet(ctx, result, backend, transport, instances)


async def fleet(
    ctx: Context, result: FigureResult, backend: str, transport: str, instances: int
) -> None:
    from confman import ConfigHub

    total = ctx.scale(30, 1_000)
    warmup = ctx.scale(5, 30)
    cluster = ctx.cluster("b8")
    async with ctx.database(backend) as url:
        configs = [
            {
                "role": "listen",
                "name": f"b8-listener-{i}",
                "db": url,
                "key": ctx.encryption_key,
                "redis": ctx.redis_url,
                "mqtt": ctx.mqtt_url,
                "transport": transport,
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
                instance_id="b8-writer",
                **transport_options(ctx, transport, cluster),
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
        latency(
            f"{transport}: commit -> all {instances - 1} other instances emitted",
            [max(r) for r in rows],
        )
    )
    each = result.add(
        latency(
            f"{transport}: commit -> one instance emitted (all listeners pooled)",
            [x for r in rows for x in r],
            kind="info",
        )
    )
    b4 = ctx.results.get("B4")
    single = None
    if b4 is not None:
        single = next((m for m in b4.measurements if m.name == confman_name(transport)), None)
    if single is not None and single.p99 and every.p99:
        result.check(
            Check(
                f"{transport}: fleet p99 / B4 single-listener p99",
                every.p99 / single.p99,
                "reported",
                None,
            )
        )
    result.facts[f"{transport}_per_instance_p99_ms"] = each.p99
