"""A3: 100 SSE clients while A1's load runs.

``confman serve`` in its own process (PostgreSQL; SQLite without it). In alternating
rounds, A1's load (16 keep-alive clients GETting one document, a process of their own)
runs alone, then with 100 open ``/api/v1/events`` streams (a third process) while this
process PATCHes the document every 100 ms. Reported: the GET throughput and p99 in
both, their ratio, and whether every stream received every change of its round.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from .a1_http_reads import CLIENTS, PATH, _port
from .common import Check, Context, FigureResult, Measurement, median, workers

ID = "A3"
TITLE = "HTTP: A1's reads with 100 SSE clients connected"

STREAMS = 100


async def run(ctx: Context, result: FigureResult) -> None:
    import httpx

    from confman import ConfigHub
    from confman.api.tokens import ApiTokenManager
    from confman.managers.cache import CacheConfigurationManager

    rounds = ctx.scale(1, 3)
    seconds = 1.0 if ctx.quick else 5.0
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    result.facts.update(database=backend, clients=CLIENTS, streams=STREAMS)
    async with ctx.database(backend) as url:
        async with ConfigHub.connect(
            url, managers=[CacheConfigurationManager, ApiTokenManager], **ctx.hub_options()
        ) as hub:
            await hub.manager(CacheConfigurationManager).update({"default_ttl_seconds": 1})
            token = (
                await hub.manager(ApiTokenManager).create_token("bench-a3", "editor")
            ).plaintext
        headers = {"Authorization": f"Bearer {token}"}
        port = _port()
        base = f"http://127.0.0.1:{port}"
        server_cfg = {
            "role": "serve",
            "kind": "confman",
            "name": "a3-confman",
            "db": url,
            "key": ctx.encryption_key,
            "port": port,
        }
        stats: dict[str, list[dict[str, Any]]] = {"alone": [], "streams": []}
        delivered: list[bool] = []
        with workers([server_cfg]) as (server,):
            await server.aexpect("READY", 60)
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
                etag = (await http.get(PATH)).headers["ETag"]
                value = 1

                async def patch_every(interval: float, stop: asyncio.Event) -> int:
                    nonlocal etag, value
                    sent = 0
                    while not stop.is_set():
                        value += 1
                        response = await http.patch(
                            PATH, json={"default_ttl_seconds": value}, headers={"If-Match": etag}
                        )
                        response.raise_for_status()
                        etag = response.headers["ETag"]
                        sent += 1
                        await asyncio.sleep(interval)
                    return sent

                for r in range(rounds):
                    for side in ("alone", "streams"):
                        load_cfg = {
                            "role": "load",
                            "name": f"a3-load-{side}-{r}",
                            "url": base + PATH,
                            "headers": headers,
                            "clients": CLIENTS,
                            "seconds": seconds,
                        }
                        sse_cfg = {
                            "role": "sse",
                            "name": f"a3-sse-{r}",
                            "url": base + "/api/v1/events",
                            "headers": headers,
                            "streams": STREAMS,
                        }
                        configs = [load_cfg] + ([sse_cfg] if side == "streams" else [])
                        with workers(configs) as procs:
                            for w in procs:
                                await w.aexpect("READY", 90)
                            stop = asyncio.Event()
                            patcher = asyncio.create_task(
                                patch_every(0.1, stop) if side == "streams" else _zero()
                            )
                            procs[0].send("GO")
                            line = await procs[0].aexpect("DONE", 120)
                            stop.set()
                            sent = await patcher
                            stats[side].append(json.loads(line.split(" ", 1)[1]))
                            if side == "streams":
                                counts = await _settled_counts(procs[1], sent)
                                delivered.append(min(counts) == sent == max(counts))
                                result.facts[f"round {r}: changes sent / received per stream"] = [
                                    sent,
                                    min(counts),
                                    max(counts),
                                ]
                            for w in procs:
                                w.stop()
            server.stop()
    for side, label in (
        ("alone", "GET, 16 clients, alone"),
        ("streams", "GET, 16 clients, with 100 SSE streams and a PATCH every 100 ms"),
    ):
        done = stats[side]
        if any(d["errors"] for d in done):
            raise AssertionError(f"A3 {side}: failed requests")
        result.add(
            Measurement(
                label,
                median([d["requests"] / d["seconds"] for d in done]),
                "requests/s (p50/p99: ms per request)",
                p50=median([d["p50_ms"] for d in done]),
                p99=median([d["p99_ms"] for d in done]),
                samples=sum(d["requests"] for d in done),
                kind="baseline" if side == "alone" else "confman",
                detail={"rounds": done},
            )
        )
    alone = [d["requests"] / d["seconds"] for d in stats["alone"]]
    crowded = [d["requests"] / d["seconds"] for d in stats["streams"]]
    ratio = median([c / a for c, a in zip(crowded, alone, strict=True)])
    result.check(Check("GET throughput with streams / alone", ratio, "reported", None))
    result.check(Check.fact("every stream received every change", all(delivered), "all"))


async def _zero() -> int:
    return 0


async def _settled_counts(sse: Any, sent: int, timeout: float = 10.0) -> list[int]:
    """The per-stream counts once every stream has them all (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        sse.send("COUNT")
        counts: list[int] = json.loads((await sse.aexpect("COUNTS", 30)).split(" ", 1)[1])
        if min(counts) >= sent or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)
