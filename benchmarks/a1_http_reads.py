"""A1: GET of one document through ``confman serve`` vs a bare FastAPI route.

confman: `confman.api.serve.serve` (what ``confman serve`` runs) in its own process over
PostgreSQL (SQLite without it), ``GET /api/v1/namespaces/cache/documents/default`` with
a viewer token. Bare, in the same run: a FastAPI route in its own process returning the
very JSON confman returned, under the same uvicorn settings. Load: 16 concurrent
keep-alive httpx clients (one connection each) in a third process, for a fixed time per
round; sides alternate. Throughput is the median over rounds, p99 over each round's
requests (median of rounds). Target: confman >= 50% of the bare route's throughput.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from .common import Check, Context, FigureResult, Measurement, median, workers

ID = "A1"
TITLE = "HTTP read: confman serve GET vs a bare FastAPI route (16 clients)"

CLIENTS = 16
PATH = "/api/v1/namespaces/cache/documents/default"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(ctx: Context, result: FigureResult) -> None:
    import httpx

    from confman import ConfigHub
    from confman.api.tokens import ApiTokenManager
    from confman.managers.cache import CacheConfigurationManager

    rounds = ctx.scale(1, 3)
    seconds = 1.0 if ctx.quick else 5.0
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    result.facts.update(database=backend, clients=CLIENTS, seconds_per_round=seconds)
    async with ctx.database(backend) as url:
        async with ConfigHub.connect(
            url, managers=[CacheConfigurationManager, ApiTokenManager], **ctx.hub_options()
        ) as hub:
            await hub.manager(CacheConfigurationManager).update({"default_ttl_seconds": 120})
            token = (
                await hub.manager(ApiTokenManager).create_token("bench-a1", "viewer")
            ).plaintext
        headers = {"Authorization": f"Bearer {token}"}
        ports = {"confman": _port(), "bare": _port()}
        confman_cfg = {
            "role": "serve",
            "kind": "confman",
            "name": "a1-confman",
            "db": url,
            "key": ctx.encryption_key,
            "port": ports["confman"],
        }
        with workers([confman_cfg]) as (confman_server,):
            await confman_server.aexpect("READY", 60)
            async with httpx.AsyncClient(headers=headers, timeout=10) as http:
                response = await http.get(f"http://127.0.0.1:{ports['confman']}{PATH}")
                response.raise_for_status()
                body = response.json()
            bare_cfg = {
                "role": "serve",
                "kind": "bare",
                "name": "a1-bare",
                "path": PATH,
                "body": body,
                "port": ports["bare"],
            }
            with workers([bare_cfg]) as (bare_server,):
                await bare_server.aexpect("READY", 60)
                stats: dict[str, list[dict[str, Any]]] = {"bare": [], "confman": []}
                for r in range(rounds + 1):  # the first round warms both up
                    for side in ("bare", "confman"):
                        load_cfg = {
                            "role": "load",
                            "name": f"a1-load-{side}",
                            "url": f"http://127.0.0.1:{ports[side]}{PATH}",
                            "headers": headers,
                            "clients": CLIENTS,
                            "seconds": seconds if r else 0.5,
                        }
                        with workers([load_cfg]) as (loader,):
                            await loader.aexpect("READY", 60)
                            loader.send("GO")
                            done = json.loads((await loader.aexpect("DONE", 120)).split(" ", 1)[1])
                            loader.stop()
                        if done["errors"]:
                            raise AssertionError(f"A1 {side}: {done['errors']} failed requests")
                        if r:
                            stats[side].append(done)
                bare_server.stop()
            confman_server.stop()
    rates = {k: [d["requests"] / d["seconds"] for d in v] for k, v in stats.items()}
    for side, what in (("bare", "bare FastAPI route"), ("confman", "confman serve GET document")):
        result.add(
            Measurement(
                f"{what}, {CLIENTS} keep-alive clients",
                median(rates[side]),
                "requests/s (p50/p99: ms per request)",
                p50=median([d["p50_ms"] for d in stats[side]]),
                p99=median([d["p99_ms"] for d in stats[side]]),
                samples=sum(d["requests"] for d in stats[side]),
                kind="baseline" if side == "bare" else "confman",
                detail={"rounds": stats[side]},
            )
        )
    ratios = [c / b for c, b in zip(rates["confman"], rates["bare"], strict=True)]
    result.check(Check.at_least("confman / bare route throughput", median(ratios), 0.5))
