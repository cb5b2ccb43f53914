"""A2: PATCH with ``If-Match`` through ``confman serve`` vs B2's direct ``update``.

confman serve (`confman.api.serve.serve`) in its own process over PostgreSQL (SQLite
without it); this process PATCHes the cache policy one write at a time on one keep-alive
connection, each with ``If-Match`` the ETag of the previous response (editor token).
Direct, in the same run: B2's confman side, ``await cache.update(patch)`` on a hub in
this process over a database of its own. Sides alternate in rounds; throughput is the
median over rounds. Target: the HTTP write >= 50% of the direct write.
"""

from __future__ import annotations

from .a1_http_reads import _port
from .common import Check, Context, FigureResult, Measurement, median, percentile, rate, workers

ID = "A2"
TITLE = "HTTP write: PATCH with If-Match vs the direct update() (one writer)"

PATH = "/api/v1/namespaces/cache/documents/default"
FIELD = "default_ttl_seconds"


async def run(ctx: Context, result: FigureResult) -> None:
    import httpx

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
        with workers([server_cfg]) as (server,):
            await server.aexpect("READY", 60)
            async with (
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                ) as http,
                ConfigHub.connect(
                    direct_url, managers=[CacheConfigurationManager], **ctx.hub_options()
                ) as hub,
            ):
                cache = hub.manager(CacheConfigurationManager)
                etag = (await http.get(PATH)).headers["ETag"]

                async def http_op(i: int) -> None:
                    nonlocal etag
                    response = await http.patch(
                        PATH, json={FIELD: 2 + i % 1000}, headers={"If-Match": etag}
                    )
                    response.raise_for_status()
                    etag = response.headers["ETag"]

                async def direct_op(i: int) -> None:
                    await cache.update({FIELD: 2 + i % 1000}, actor="bench", reason="a2")

                sides = {"direct": direct_op, "http": http_op}
                counter = 0
                for op in sides.values():
                    await rate(op, max(5, per_round // 5), start=counter)
                counter += per_round
                rates: dict[str, list[float]] = {k: [] for k in sides}
                took: dict[str, list[int]] = {k: [] for k in sides}
                for _ in range(rounds):
                    for side, op in sides.items():
                        per_second, times = await rate(op, per_round, start=counter)
                        rates[side].append(per_second)
                        took[side] += times
                    counter += per_round
            server.stop()
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
