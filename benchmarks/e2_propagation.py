"""E2: propagation against etcd. A commit on one process until it is seen on another.

confman: exactly B4's confman side (this process updates the cache policy through a hub
on the Redis bus; a listener process runs a hub on the same database and cluster and
prints the time of every `ConfigChange` it emits).

etcd, in the same run: this process writes the same cache policy document as JSON with
E1's compare-and-put; a listener process holds an etcd watch on the key, decodes each
put's value with the same pydantic model (``CacheConfig``) and prints the time.

Both sides are timed from the start of their write, one change at a time (the next once
the previous arrived), in alternating blocks; timestamps are ``perf_counter_ns``
(CLOCK_MONOTONIC, shared by the processes of the machine).
"""

from __future__ import annotations

import time
from typing import Any

from .b4_propagation import FIELD, ConfmanWriter, Write, measure, require_redis_bus
from .common import Check, Context, FigureResult, latency, workers

ID = "E2"
TITLE = "propagation: confman over Redis vs an etcd watch"


class EtcdWriter:
    """The peer's write: the whole cache policy as JSON, compare-and-put."""

    def __init__(self, client: Any, key: str, revision: int) -> None:
        self.client, self.key, self.revision = client, key, revision

    async def write(self, i: int) -> tuple[int, int]:
        from confman.managers.cache import CacheConfig

        payload = CacheConfig(**{FIELD: 1 + i % 1000}).model_dump_json().encode()
        started = time.perf_counter_ns()
        revision = await self.client.put_if(self.key, payload, self.revision)
        if revision is None:
            raise AssertionError(f"etcd: {self.key} moved under its only writer")
        self.revision = revision
        return revision, started


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub
    from confman.managers.cache import CacheConfig, CacheConfigurationManager

    from .etcd import EtcdClient

    require_redis_bus()
    ctx.require_redis()
    server = await ctx.etcd()
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    total = ctx.scale(60, 3_000)
    block = ctx.scale(30, 500)
    warmup = ctx.scale(10, 50)
    result.facts.update(database=backend, changes_per_side=total, etcd=server.version)
    cluster = ctx.cluster("e2")
    key = f"/confman-bench/{ctx.run_id}/e2/cache"
    client = EtcdClient(server.url, connections=1)
    try:
        created = await client.put_if(key, CacheConfig().model_dump_json().encode(), 0)
        assert created is not None
        async with ctx.database(backend) as url:
            common = {"db": url, "key": ctx.encryption_key, "redis": ctx.redis_url}
            configs = [
                {**common, "role": "listen", "name": "e2-listener", "cluster": cluster},
                {
                    "role": "etcd-watch",
                    "name": "e2-etcd-watch",
                    "etcd": server.url,
                    "etcd_key": key,
                },
            ]
            with workers(configs) as (listener, watcher):
                for w in (listener, watcher):
                    await w.aexpect("READY")
                async with ConfigHub.connect(
                    url,
                    managers=[CacheConfigurationManager],
                    redis_url=ctx.redis_url,
                    cluster=cluster,
                    instance_id="e2-writer",
                    **ctx.hub_options(),
                ) as hub:
                    wait = getattr(hub.bus, "wait_connected", None)
                    if wait is not None:
                        await wait(10)
                    sides: dict[str, tuple[Write, Any]] = {
                        "etcd": (EtcdWriter(client, key, created).write, watcher),
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
                watcher.stop()
    finally:
        await client.close()
    confman = result.add(latency("confman: commit -> remote ConfigChange", samples["confman"]))
    peer = result.add(
        latency(
            "etcd: txn -> watch event on another process -> decode -> validate",
            samples["etcd"],
            kind="baseline",
        )
    )
    assert confman.p99 is not None and peer.p99 is not None
    result.check(Check.at_most("confman p99 / etcd p99", confman.p99 / peer.p99, 1.0))
    result.check(Check("confman p50 / etcd p50", confman.value / peer.value, "reported", None))
