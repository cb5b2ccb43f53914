"""A2: PATCH with ``If-Match`` through ``confman serve`` vs B2's direct ``update``.

confman serve (`confman.api.serve.serve`) in its own process over PostgreSQL (SQLite
without it); a writer process of its own PATCHes the cache policy one write at a time on
one keep-alive connection, each with ``If-Match`` the ETag of the previous response
(editor token), through `benchmarks.http_roles.RawHttp` (not httpx: see there).
Direct, in the same run: B2's confman side, ``await cache.update(patch)`` on a hub in
this process over a database of its own. Sides alternate in rounds; throughput is the
median over rounds. Target: the HTTP write >= 50% of the direct write.
"""

from __future__ import annotations

import json
import os

from .a1_http_reads import _port
from .common import Check, Context, FigureResult, Measurement, median, percentile, rate, workers

ID = "A2"
TITLE = "HTTP write: PATCH with If-Match vs the direct update() (one writer)"

PATH = "/api/v1/namespaces/cache/documents/default"
FIELD = "default_ttl_seconds"


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub
    from confman.api.tokens import ApiTokenManager
    from confman.managers.cache import CacheConfigurationManager

    rounds = ctx.scale(2, 5)
    per_round = ctx.scale(30, 300)
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    result.facts.update(database=backend, writes_per_round=per_round)
    async with ctx.database(backend) as served, ctx.database(backend) as direct_url:
        async with ConfigHub.connect(
            served, managers=[CacheConfigurationManager, ApiTokenManager], **ctx.hub_options()
        ) as hub:
            await hub.manager(CacheConfigurationManager).update({FIELD: 1})
            token = (
                await hub.manager(ApiTokenManager).create_token("bench-a2", "editor")
            ).plaintext
        port = _port()
        server_cfg = {
            "role": "serve",
            "kind": "confman",
            "name": "a2-confman",
            "db": served,
            "key": ctx.encryption_key,
            "port": port,
        }
        writer_cfg = {
            "role": "patch",
            "name": "a2-writer",
            "port": port,
            "path": PATH,
            "field": FIELD,
            "headers": {"Authorization": f"Bearer {token}"},
        }
        client_cpu: list[float] = []
        server_cpu: list[float] = []  # ms of the server process's CPU per PATCH
        with workers([server_cfg]) as (server,):
            await server.aexpect("READY", 60)
            with workers([writer_cfg]) as (writer,):
                await writer.aexpect("READY", 60)
                async with ConfigHub.connect(
                    direct_url, managers=[CacheConfigurationManager], **ctx.hub_options()
                ) as hub:
                    cache = hub.manager(CacheConfigurationManager)

                    async def http_batch(start: int, n: int) -> tuple[float, list[int]]:
                        cpu0 = _cpu_seconds(server.proc.pid)
                        writer.send(f"GO {start} {n}")
                        done = json.loads((await writer.aexpect("DONE ", 120))[5:])
                        client_cpu.append(done["cpu"] / done["seconds"])
                        if cpu0 is not None and (cpu1 := _cpu_seconds(server.proc.pid)):
                            server_cpu.append((cpu1 - cpu0) / n * 1e3)
                        return n / done["seconds"], done["took"]

                    async def direct_op(i: int) -> None:
                        await cache.update({FIELD: 2 + i % 1000}, actor="bench", reason="a2")

                    async def direct_batch(start: int, n: int) -> tuple[float, list[int]]:
                        return await rate(direct_op, n, start=start)

                    sides = {"direct": direct_batch, "http": http_batch}
                    counter = 0
                    for batch in sides.values():  # warm-up
                        await batch(counter, max(5, per_round // 5))
                    client_cpu.clear()
                    server_cpu.clear()
                    counter += per_round
                    rates: dict[str, list[float]] = {k: [] for k in sides}
                    took: dict[str, list[int]] = {k: [] for k in sides}
                    for _ in range(rounds):
                        for side, batch in sides.items():
                            per_second, times = await batch(counter, per_round)
                            rates[side].append(per_second)
                            took[side] += times
                        counter += per_round
                writer.stop()
            server.stop()
    # The writer is a process of its own, on a client far cheaper than httpx (which
    # costs more CPU per request than the server's answer on this machine): the share
    # of one core it used shows that the server, not the generator, is measured.
    result.facts.update(writer_cpu_share=median(client_cpu))
    if server_cpu:
        result.facts.update(server_cpu_ms_per_patch=median(server_cpu))
    for side, what in (
        ("direct", "direct: await cache.update(patch)"),
        ("http", "HTTP: PATCH with If-Match (confman serve)"),
    ):
        ms = [t / 1e6 for t in took[side]]
        result.add(
            Measurement(
                what,
                median(rates[side]),
                "writes/s (p50/p99: ms per write)",
                p50=percentile(ms, 50),
                p99=percentile(ms, 99),
                samples=len(ms),
                kind="baseline" if side == "direct" else "confman",
                detail={"rounds_per_s": rates[side]},
            )
        )
    ratios = [h / d for h, d in zip(rates["http"], rates["direct"], strict=True)]
    result.check(Check.at_least("HTTP PATCH / direct update() throughput", median(ratios), 0.5))
