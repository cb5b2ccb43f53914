"""R1: remote propagation. A commit on one process until a remote hub's manager emits it.

The path of issue 14: this process writes the cache policy through a direct hub on the
Redis bus (B4's writer, `ConfmanWriter`); ``confman serve`` (a process of its own, a hub
on the same database and cluster) receives the notice, applies the change and streams it
with its document; a remote hub (`RemoteHub`, a third process, ``service`` token) applies
the event and its cache manager emits the `ConfigChange`, whose time it prints.

Next to it, in alternating blocks of the same figure: B4's confman side, direct over
Redis (the same writer code, a listener process on a database and cluster of their own,
so that the server stays idle while the direct side runs and the other way round). The
target (issue 14) holds the remote p99 against B4's p99 of the same run when B4 ran, and
against the direct side measured here in any case: <= 1.5x each.

Clock: B4's. Both sides are timed from the start of their write (``perf_counter_ns``,
CLOCK_MONOTONIC, shared by every process of the machine) to the listener's emission,
one change at a time (the next once the previous one arrived).
"""

from __future__ import annotations

from typing import Any

from .a1_http_reads import _port
from .b4_propagation import ConfmanWriter, Write, _cache_manager, confman_name, measure
from .common import Check, Context, FigureResult, Skipped, Worker, latency, workers

ID = "R1"
TITLE = "remote propagation: commit -> a remote hub's ConfigChange"

FIELD = "default_ttl_seconds"


async def service_token(url: str, ctx: Context, name: str) -> str:
    """A ``service`` token (reads secrets in clear, as a remote hub's should) on ``url``."""
    from confman import ConfigHub
    from confman.api.tokens import ApiTokenManager
    from confman.managers.cache import CacheConfigurationManager

    async with ConfigHub.connect(
        url, managers=[CacheConfigurationManager, ApiTokenManager], **ctx.hub_options()
    ) as hub:
        # Not a value B4's writer writes (1..1000): its first write must change something.
        await hub.manager(CacheConfigurationManager).update({FIELD: 5000}, actor="bench")
        created = await hub.manager(ApiTokenManager).create_token(name, "service")
        return str(created.plaintext)


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub

    from .b4_propagation import require_redis_bus

    if not ctx.redis_reachable():
        raise Skipped("Redis is not reachable (the writer reaches the server over Redis)")
    require_redis_bus()
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    total = ctx.scale(50, 2_000)
    block = ctx.scale(25, 500)
    warmup = ctx.scale(10, 50)
    result.facts.update(database=backend, changes_per_side=total, block=block)
    remote_cluster, direct_cluster = ctx.cluster("r1-remote"), ctx.cluster("r1-direct")
    async with ctx.database(backend) as served, ctx.database(backend) as direct_url:
        token = await service_token(served, ctx, "bench-r1")
        port = _port()
        common = {"key": ctx.encryption_key, "redis": ctx.redis_url}
        server_cfg = {
            **common, "role": "remote-serve", "name": "r1-server", "db": served, "port": port,
            "cluster": remote_cluster,
        }  # fmt: skip
        remote_cfg = {
            "role": "remote-listen", "name": "r1-remote", "url": f"http://127.0.0.1:{port}",
            "token": token,
        }  # fmt: skip
        direct_cfg = {
            **common, "role": "listen", "name": "r1-direct", "db": direct_url,
            "cluster": direct_cluster,
        }  # fmt: skip
        with workers([server_cfg]) as (server,):
            await server.aexpect("READY", 60)
            with workers([remote_cfg, direct_cfg]) as (remote, direct):
                for w in (remote, direct):
                    await w.aexpect("READY", 60)
                options: dict[str, Any] = {"managers": [_cache_manager()], **ctx.hub_options()}
                async with (
                    ConfigHub.connect(
                        served, instance_id="r1-writer", redis_url=ctx.redis_url,
                        cluster=remote_cluster, **options,
                    ) as remote_hub,
                    ConfigHub.connect(
                        direct_url, instance_id="r1-direct-writer", redis_url=ctx.redis_url,
                        cluster=direct_cluster, **options,
                    ) as direct_hub,
                ):  # fmt: skip
                    for hub in (remote_hub, direct_hub):
                        wait = getattr(hub.bus, "wait_connected", None)
                        if wait is not None:
                            await wait(10)
                    sides: dict[str, tuple[Write, Worker]] = {
                        "direct": (ConfmanWriter(direct_hub).write, direct),
                        "remote": (ConfmanWriter(remote_hub).write, remote),
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
                remote.stop()
                direct.stop()
            server.stop()
    remote_m = result.add(
        latency(
            "remote (Redis -> confman serve -> SSE -> RemoteHub): commit -> ConfigChange",
            samples["remote"],
        )
    )
    direct_m = result.add(
        latency(
            "direct (B4's confman side, Redis), alternating blocks: commit -> ConfigChange",
            samples["direct"],
            kind="baseline",
        )
    )
    assert remote_m.p99 is not None and direct_m.p99 is not None
    b4 = ctx.results.get("B4")
    b4_redis = None
    if b4 is not None:
        b4_redis = next((m for m in b4.measurements if m.name == confman_name("redis")), None)
    if b4_redis is not None and b4_redis.p99:
        result.facts["B4 redis p50/p99 ms (same run)"] = [b4_redis.p50, b4_redis.p99]
        result.check(
            Check.at_most(
                "remote p99 / B4's redis p99 (same run)", remote_m.p99 / b4_redis.p99, 1.5
            )
        )
    else:
        result.facts["B4"] = "not in this run: held against the direct side alone"
    result.check(
        Check.at_most(
            "remote p99 / direct p99 (alternating blocks)", remote_m.p99 / direct_m.p99, 1.5
        )
    )
    result.check(
        Check("remote p50 / direct p50", remote_m.value / direct_m.value, "reported", None)
    )
