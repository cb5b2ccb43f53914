"""B8: a fleet of 8 instances, one writer: how long until every instance emitted a change.

This process is the writing instance; 7 listener processes (a hub each, one cluster,
one database) are the rest of the fleet. One change at a time, as in B4; per change the
figure is the latest arrival over the 7 listeners (and, as detail, every single
listener's latency). Per transport B4 measures (Redis, PostgreSQL NOTIFY, MQTT), next
to a fleet of B4's prototype on the same transport in the same run: B4's raw writer and
7 of its prototype listeners (each receives the notice, re-reads the change-log row
and validates it), sides alternating in blocks. Target (issue 15): per transport, the
fleet's p99 <= 2x its prototype fleet's p99. Also reported: the fleet's p99 against
B4's single confman listener on the same transport, when B4 ran in the same run.
"""

from __future__ import annotations

from .b4_propagation import (
    FIELD,
    ConfmanWriter,
    Write,
    _cache_manager,
    confman_name,
    measure,
    prototype_sender,
    require_redis_bus,
    transport_options,
    transports,
)
from .common import Check, Context, FigureResult, Skipped, Worker, latency, workers

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
    instances = ctx.scale(3, INSTANCES)  # quick: 2 listeners and 2 prototype listeners
    result.facts["database"] = backend
    result.facts["instances"] = f"{instances} (this writer + {instances - 1} listener processes)"
    result.facts["transports"] = ", ".join(found)
    for transport in found:
        await fleet(ctx, result, backend, transport, instances)


async def fleet(
    ctx: Context, result: FigureResult, backend: str, transport: str, instances: int
) -> None:
    from confman import ConfigHub

    from .raw import open_writer

    total = ctx.scale(20, 1_000)
    block = ctx.scale(10, 250)
    warmup = ctx.scale(5, 30)
    cluster = ctx.cluster("b8")
    channel = f"{cluster}/prototype" if transport == "mqtt" else f"{cluster}:prototype"
    async with ctx.database(backend) as url:
        common = {
            "db": url, "key": ctx.encryption_key, "redis": ctx.redis_url, "mqtt": ctx.mqtt_url,
            "transport": transport,
        }  # fmt: skip
        configs = [
            {**common, "role": "listen", "name": f"b8-listener-{i}", "cluster": cluster}
            for i in range(instances - 1)
        ] + [
            {**common, "role": "proto-listen", "name": f"b8-proto-{i}", "channel": channel}
            for i in range(instances - 1)
        ]
        raw = await open_writer(url)
        try:
            await raw.create("bench_proto", "default", {FIELD: 1})
            with workers(configs) as started:
                listeners, proto_listeners = started[: instances - 1], started[instances - 1 :]
                for w in started:
                    await w.aexpect("READY", 120)
                async with (
                    prototype_sender(ctx, transport, raw, channel) as prototype,
                    ConfigHub.connect(
                        url,
                        managers=[_cache_manager()],
                        instance_id="b8-writer",
                        **transport_options(ctx, transport, cluster),
                        **ctx.hub_options(),
                    ) as hub,
                ):
                    wait = getattr(hub.bus, "wait_connected", None)
                    if wait is not None:
                        await wait(10)
                    sides: dict[str, tuple[Write, list[Worker]]] = {
                        "prototype": (prototype.write, proto_listeners),
                        "confman": (ConfmanWriter(hub).write, listeners),
                    }
                    for write, fleet_of in sides.values():
                        await measure(write, fleet_of, warmup, 0)
                    samples: dict[str, list[list[int]]] = {k: [] for k in sides}
                    done = 0
                    while done < total:
                        n = min(block, total - done)
                        for name, (write, fleet_of) in sides.items():
                            samples[name] += await measure(write, fleet_of, n, warmup + done)
                        done += n
                for w in started:
                    w.stop()
        finally:
            await raw.close()
    rows = samples["confman"]
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
    proto = result.add(
        latency(
            f"prototype {transport}: commit -> all {instances - 1} prototype listeners "
            "received, re-read, validated",
            [max(r) for r in samples["prototype"]],
            kind="baseline",
        )
    )
    assert every.p99 is not None and proto.p99 is not None
    result.check(
        Check.at_most(f"{transport}: fleet p99 / prototype fleet p99", every.p99 / proto.p99, 2.0)
    )
    result.check(
        Check(
            f"{transport}: fleet p50 / prototype fleet p50",
            every.value / proto.value,
            "reported",
            None,
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
