"""B4: propagation. A commit on one process until the `ConfigChange` on another.

Per transport (Redis; PostgreSQL LISTEN/NOTIFY when the database is PostgreSQL; MQTT
when a broker answers), each next to a prototype of its own transport, in the same run.

confman: this process runs a hub on that bus and updates the cache policy; a listener
process runs a hub on the same database and cluster and prints the time of every
`ConfigChange` it emits.

Prototype: the raw transaction of B2 (asyncpg), then the same small notice by hand on
the same transport (Redis ``PUBLISH``; ``pg_notify`` inside the transaction; an MQTT
QoS 1 publish that waits for the broker's acknowledgement, as confman's does); a
listener process receives it, re-reads the change-log row, validates it with the same
pydantic model and prints the time.

Both sides are timed from the start of their write (see ``ConfmanWriter.write``): the
moment of commit is not observable from outside confman, and the writes cost the same
(B2). The measurement names keep saying "commit".

One change at a time (the next is written once the previous one arrived), so the figure
is the latency of a change, not of a queue. Sides alternate in blocks; timestamps are
``perf_counter_ns`` (CLOCK_MONOTONIC, shared by all processes of the machine).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .common import Check, Context, FigureResult, Worker, latency, percentile, workers

ID = "B4"
TITLE = "propagation commit -> ConfigChange on another process"

FIELD = "default_ttl_seconds"


def require_redis_bus() -> None:
    from .common import NotAvailable

    try:
        import confman.bus.redis  # noqa: F401
    except ImportError as e:
        raise NotAvailable(f"missing module confman.bus.redis: {e}") from e


async def arrival(worker: Worker, version: int, timeout: float = 30.0) -> int:
    """The timestamp at which ``worker`` reported ``version`` (or a newer one)."""
    while True:
        line = await worker.aexpect("CHG", timeout)
        _, seen, ts = line.split()
        if int(seen) >= version:
            return int(ts)


class ConfmanWriter:
    """The writing instance: a hub on Redis; remembers when each version committed."""

    def __init__(self, hub: Any) -> None:
        from confman.managers.cache import CacheConfigurationManager

        self.cache = hub.manager(CacheConfigurationManager)

    async def write(self, i: int) -> tuple[int, int]:
        # Both writers are timed from the start of their write: the moment of commit is
        # not observable from outside confman (it publishes before its own subscribers
        # hear of the change), and the write itself costs the same (B2).
        started = time.perf_counter_ns()
        change = await self.cache.update({FIELD: 1 + i % 1000}, actor="bench", reason="b4")
        return change.version, started


Send = Callable[[str], Awaitable[Any]]


class PrototypeWriter:
    """Raw transaction + a hand-written notice: the floor a propagation path reaches.

    ``send`` publishes the notice after the commit (Redis, MQTT); ``notify`` instead
    names a PostgreSQL channel to NOTIFY inside the transaction."""

    def __init__(self, raw: Any, send: Send | None, notify: str | None = None) -> None:
        self.raw, self.send, self.notify = raw, send, notify
        self.version = 1

    async def write(self, i: int) -> tuple[int, int]:
        self.version += 1
        data = {FIELD: 1 + i % 1000}
        started = time.perf_counter_ns()
        seq = await self.raw.write(
            "bench_proto",
            "default",
            self.version,
            data,
            {FIELD: 1 + (i - 1) % 1000},
            [FIELD],
            "bench",
            "b4",
            **({"notify": self.notify} if self.notify else {}),
        )
        if self.send is not None:
            notice = {
                "namespace": "bench_proto",
                "key": "default",
                "version": self.version,
                "seq": seq,
                "origin": "prototype",
            }
            await self.send(json.dumps(notice, separators=(",", ":")))
        return self.version, started


Write = Callable[[int], Awaitable[tuple[int, int]]]


async def measure(write: Write, listeners: list[Worker], n: int, start: int) -> list[list[int]]:
    """Write ``n`` changes one at a time; per change, each listener's latency (ns)."""
    out: list[list[int]] = []
    for i in range(start, start + n):
        version, committed = await write(i)
        out.append([await arrival(w, version) - committed for w in listeners])
    return out


#: Per transport: what its prototype does, for the measurement's name.
PROTOTYPES = {
    "redis": "commit -> PUBLISH -> receive -> re-read -> validate",
    "postgres": "commit with NOTIFY -> receive -> re-read -> validate",
    "mqtt": "commit -> PUBLISH QoS 1 -> receive -> re-read -> validate",
}


def transports(ctx: Context, backend: str) -> list[str]:
    """The transports this machine can measure (Redis first, as before)."""
    found: list[str] = []
    if ctx.redis_reachable():
        found.append("redis")
    if backend == "postgresql":
        found.append("postgres")
    if ctx.mqtt_reachable():
        try:
            import confman.bus.mqtt  # noqa: F401
        except ImportError:
            pass
        else:
            found.append("mqtt")
    return found


def confman_name(transport: str) -> str:
    return f"confman {transport}: commit -> remote ConfigChange"


async def run(ctx: Context, result: FigureResult) -> None:
    from .common import Skipped

    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    found = transports(ctx, backend)
    if "redis" in found:
        require_redis_bus()
    if not found:
        raise Skipped("no transport reachable (Redis, PostgreSQL or an MQTT broker)")
    total = ctx.scale(100, 5_000)
    block = ctx.scale(50, 500)
    warmup = ctx.scale(10, 50)
    result.facts["database"] = backend
    result.facts["changes_per_side"] = total
    result.facts["transports"] = ", ".join(found)
    for transport in found:
        samples = await propagation(ctx, backend, total, block, warmup, transport)
        confman = result.add(latency(confman_name(transport), samples["confman"]))
        proto = result.add(
            latency(
                f"prototype {transport}: {PROTOTYPES[transport]}",
                samples["prototype"],
                kind="baseline",
            )
        )
        assert confman.p99 is not None and proto.p99 is not None
        result.check(
            Check.at_most(f"{transport}: confman p99 / prototype p99", confman.p99 / proto.p99, 2.0)
        )
        result.check(
            Check(
                f"{transport}: confman p50 / prototype p50",
                confman.value / proto.value,
                "reported",
                None,
            )
        )


def transport_options(ctx: Context, transport: str, cluster: str) -> dict[str, Any]:
    """`ConfigHub.connect` options of a hub on ``transport``."""
    if transport == "postgres":
        return {"bus": "postgres", "cluster": cluster}
    if transport == "mqtt":
        from confman.bus.mqtt import MqttBus

        return {"bus": MqttBus(ctx.mqtt_url, prefix=f"confman/{cluster}"), "cluster": cluster}
    return {"redis_url": ctx.redis_url, "cluster": cluster}


@contextlib.asynccontextmanager
async def prototype_sender(
    ctx: Context, transport: str, raw: Any, channel: str
) -> AsyncIterator[PrototypeWriter]:
    """The prototype writer of ``transport``, with its own connection to it."""
    if transport == "postgres":
        yield PrototypeWriter(raw, None, notify=channel)
    elif transport == "mqtt":
        import aiomqtt

        host, port = ctx.mqtt_url.split("//", 1)[1].rsplit(":", 1)
        async with aiomqtt.Client(host, int(port)) as client:

            async def publish(payload: str) -> None:
                await client.publish(channel, payload, qos=1)

            yield PrototypeWriter(raw, publish)
    else:
        from redis.asyncio import Redis

        redis: Redis = Redis.from_url(ctx.redis_url)
        try:

            async def send(payload: str) -> None:
                await redis.publish(channel, payload)

            yield PrototypeWriter(raw, send)
        finally:
            await redis.aclose()


async def propagation(
    ctx: Context, backend: str, total: int, block: int, warmup: int, transport: str = "redis"
) -> dict[str, list[int]]:
    """Run both sides in alternating blocks; latencies in ns per side."""
    from confman import ConfigHub

    from .raw import open_writer

    cluster = ctx.cluster("b4")
    # A channel (Redis, PostgreSQL) or a topic (MQTT) of the prototype's own.
    channel = f"{cluster}/prototype" if transport == "mqtt" else f"{cluster}:prototype"
    async with ctx.database(backend) as url:
        common = {
            "db": url, "key": ctx.encryption_key, "redis": ctx.redis_url, "mqtt": ctx.mqtt_url,
            "transport": transport,
        }  # fmt: skip
        configs = [
            {**common, "role": "listen", "name": "b4-listener", "cluster": cluster},
            {**common, "role": "proto-listen", "name": "b4-proto-listener", "channel": channel},
        ]
        raw = await open_writer(url)
        try:
            await raw.create("bench_proto", "default", {FIELD: 1})
            with workers(configs) as (listener, proto_listener):
                for w in (listener, proto_listener):
                    await w.aexpect("READY")
                async with (
                    prototype_sender(ctx, transport, raw, channel) as prototype,
                    ConfigHub.connect(
                        url,
                        managers=[_cache_manager()],
                        instance_id="b4-writer",
                        **transport_options(ctx, transport, cluster),
                        **ctx.hub_options(),
                    ) as hub,
                ):
                    wait = getattr(hub.bus, "wait_connected", None)
                    if wait is not None:
                        await wait(10)
                    sides: dict[str, tuple[Write, Worker]] = {
                        "prototype": (prototype.write, proto_listener),
                        "confman": (ConfmanWriter(hub).write, listener),
                    }
                    for write, w in sides.values():
                        await measure(write, [w], warmup, 0)
                    samples: dict[str, list[int]] = {k: [] for k in sides}
                    done = 0
                    while done < total:
                        n = min(block, total - done)
                        for name, (write, w) in sides.items():
                            rows = await measure(write, [w], n, warmup + done)
                            samples[name] += [r[0] for r in rows]
                        done += n
                listener.stop()
                proto_listener.stop()
        finally:
            await raw.close()
    return samples


def _cache_manager() -> Any:
    from confman.managers.cache import CacheConfigurationManager

    return CacheConfigurationManager


def summary_ms(samples: list[int]) -> tuple[float, float]:
    ms = [s / 1e6 for s in samples]
    return percentile(ms, 50), percentile(ms, 99)
