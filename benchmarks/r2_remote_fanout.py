"""R2: remote fan-out. One ``confman serve``, many SSE clients: how long until every one
of them has a change, what it costs the server, and how often it reads the database.

Server: ``confman serve`` (a process of its own, over PostgreSQL, on the Redis bus). This
process commits through a direct hub on the same database and cluster (B4's writer), one
change at a time, timed from the start of the write as B4 is.

Clients: ``clients`` worker processes (4; quick: 2), each holding an equal share of the
connections on ``/api/v1/events`` with a ``service`` token. They are raw SSE readers
(`benchmarks.remote_roles.fanout`: an asyncio connection each, the chunked response read
by hand), not RemoteHubs nor httpx: httpx's CPU per event would be the clients', not the
server's, and on 2 shared cores it would measure the clients. Each client counts the
``change`` events it receives; a process reports the k-th change once every one of its
clients has it (with the latest receive time); per change the figure is the latest over
all processes, minus the start of the write. Clock: ``perf_counter_ns`` (CLOCK_MONOTONIC,
shared by every process of the machine).

Peer, in the same run with the same clients: a minimal Starlette SSE broadcaster
(`benchmarks.broadcaster`) in a uvicorn process of its own under `confman serve`'s
settings, which on ``POST /change`` queues the exact bytes of one real confman change
event (taken from the server at the start) for every connected client. Each client
process holds its connections to both servers at once; sides alternate in blocks.

Per side, the server's CPU per change (``time.process_time`` of the server process, read
between blocks; ``/proc/<pid>/stat`` utime+stime, 10 ms ticks, in the JSON too), and for
confman the change-log reads per change made for the events' documents
(``confman_event_reads_total`` on ``/metrics``), at two client counts: the reads must not
grow with the clients. Target (issue 14): confman's p99 <= 2x the broadcaster's p99 at the
larger count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .a1_http_reads import _port
from .a2_http_writes import _cpu_seconds
from .b4_propagation import ConfmanWriter, _cache_manager, require_redis_bus
from .common import Check, Context, FigureResult, Measurement, Skipped, Worker, latency, workers
from .r1_remote_propagation import service_token
from .remote_roles import CHANGE, READY, sse_chunks

ID = "R2"
TITLE = "remote fan-out: one confman serve, many SSE clients"

EVENTS = "/api/v1/events"


class _Writer:
    """B4's writer with a running index (every write changes the value)."""

    def __init__(self, hub: Any) -> None:
        self.writer = ConfmanWriter(hub)
        self.i = 0

    async def write(self) -> int:
        self.i += 1
        _, started = await self.writer.write(self.i)
        return started


async def _capture(port: int, headers: dict[str, str], writer: _Writer) -> tuple[bytes, bytes]:
    """One real change event and the ready event, as ``confman serve`` sends them."""
    chunks = sse_chunks("127.0.0.1", port, EVENTS, headers)
    try:
        ready = await anext(chunks)
        if not ready.startswith(READY):
            raise RuntimeError(f"the stream began with {ready[:80]!r}")
        await writer.write()
        while not (chunk := await anext(chunks)).startswith(CHANGE):
            pass
        return chunk, ready
    finally:
        await chunks.aclose()


async def _cpu(server: Worker) -> float:
    server.send("CPU")
    return float((await server.aexpect("CPU ", 30)).split()[1])


async def _scrape(port: int) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    wanted = {
        "confman_event_reads_total",
        "confman_hub_notices_received_total",
        "confman_hub_catch_up_runs_total",
        "confman_hub_caught_up_changes_total",
    }
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in wanted
    }


async def _arrival(worker: Worker, side: str, k: int, timeout: float = 60.0) -> tuple[int, int]:
    """When every client of ``worker`` on ``side`` had its ``k``-th change, and when the
    first of them had it."""
    while True:
        _, seen_side, seen, latest, earliest = (await worker.aexpect("GOT ", timeout)).split()
        if seen_side == side and int(seen) >= k:
            return int(latest), int(earliest)


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub

    from .http_roles import RawHttp

    if not ctx.redis_reachable():
        raise Skipped("Redis is not reachable (the writer reaches the server over Redis)")
    require_redis_bus()
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    counts = [10, 50] if ctx.quick else [100, 1000]
    processes = ctx.scale(2, 4)
    total, block, warmup = ctx.scale(10, 100), ctx.scale(5, 25), ctx.scale(3, 10)
    result.facts.update(
        database=backend,
        client_processes=processes,
        changes_per_side=total,
        block=block,
        clients="raw asyncio SSE readers (one connection each, chunked response read by hand)",
    )
    cluster = ctx.cluster("r2")
    async with ctx.database(backend) as url:
        token = await service_token(url, ctx, "bench-r2")
        auth = {"Authorization": f"Bearer {token}"}
        cport, bport = _port(), _port()
        server_cfg = {
            "role": "remote-serve", "name": "r2-server", "db": url, "port": cport,
            "key": ctx.encryption_key, "redis": ctx.redis_url, "cluster": cluster,
        }  # fmt: skip
        with workers([server_cfg]) as (server,):
            await server.aexpect("READY", 60)
            async with ConfigHub.connect(
                url,
                managers=[_cache_manager()],
                instance_id="r2-writer",
                redis_url=ctx.redis_url,
                cluster=cluster,
                **ctx.hub_options(),
            ) as hub:
                wait = getattr(hub.bus, "wait_connected", None)
                if wait is not None:
                    await wait(10)
                writer = _Writer(hub)
                frame, ready = await _capture(cport, auth, writer)
                result.facts["event bytes (one real confman change event)"] = len(frame)
                result.facts["event carries its document"] = (
                    b'"data":{' in frame and b'"data_omitted":false' in frame
                )
                broadcaster_cfg = {
                    "role": "broadcast", "name": "r2-broadcaster", "port": bport,
                    "frame": frame.hex(), "ready": ready.hex(),
                }  # fmt: skip
                with workers([broadcaster_cfg]) as (broadcaster,):
                    await broadcaster.aexpect("READY", 60)
                    async with contextlib.AsyncExitStack() as stack:
                        poster = await stack.enter_async_context(RawHttp("127.0.0.1", bport, {}))

                        async def post() -> int:
                            nonlocal poster
                            for _ in range(3):
                                started = time.perf_counter_ns()
                                try:
                                    status, _, _ = await poster.request("POST", "/change", b"{}")
                                except (asyncio.IncompleteReadError, ConnectionError):
                                    # uvicorn closes a keep-alive connection idle for 5 s
                                    # (clients connecting, the other side's block): the
                                    # POST never reached the app; reconnect and time anew.
                                    poster = await stack.enter_async_context(
                                        RawHttp("127.0.0.1", bport, {})
                                    )
                                    continue
                                if status != 204:
                                    raise RuntimeError(f"POST /change: {status}")
                                return started
                            raise RuntimeError("POST /change: the broadcaster keeps closing")

                        starts = {"confman": writer.write, "broadcaster": post}
                        servers = {"confman": server, "broadcaster": broadcaster}
                        targets = [
                            {"side": "confman", "port": cport, "path": EVENTS, "headers": auth},
                            {
                                "side": "broadcaster",
                                "port": bport,
                                "path": "/events",
                                "headers": {},
                            },
                        ]
                        reads: dict[int, float] = {}
                        for n in counts:
                            reads[n] = await _fan(
                                ctx, result, n, processes, targets, starts, servers, cport,
                                total, block, warmup, n == counts[-1],
                            )  # fmt: skip
                    broadcaster.stop()
            server.stop()
    low, high = counts
    result.check(
        Check(
            f"change-log reads per change: {high} clients / {low} clients",
            reads[high] / reads[low] if reads[low] else None,  # none at all: no ratio
            "reported",
            None,
        )
    )
    result.check(
        Check.fact(
            f"change-log reads per change do not grow with clients ({reads[low]:.2f} at "
            f"{low}, {reads[high]:.2f} at {high})",
            reads[high] <= reads[low] and reads[high] <= 1.0,
            "<= 1 per change, not more at more clients",
        )
    )


async def _fan(
    ctx: Context,
    result: FigureResult,
    n: int,
    processes: int,
    targets: list[dict[str, Any]],
    starts: dict[str, Any],
    servers: dict[str, Worker],
    cport: int,
    total: int,
    block: int,
    warmup: int,
    held: bool,
) -> float:
    """Both sides at ``n`` clients; returns confman's change-log reads per change."""
    share = [n // processes + (1 if p < n % processes else 0) for p in range(processes)]
    configs = [
        {"role": "fanout", "name": f"r2-clients-{n}-{p}", "clients": c, "targets": targets}
        for p, c in enumerate(share)
    ]
    seen = {"confman": 0, "broadcaster": 0}
    with workers(configs) as clients:
        for w in clients:
            await w.aexpect("READY", 180)

        first: dict[str, list[int]] = {side: [] for side in starts}

        async def one(side: str) -> int:
            seen[side] += 1
            started = await starts[side]()
            arrivals = [await _arrival(w, side, seen[side]) for w in clients]
            first[side].append(min(a[1] for a in arrivals) - started)
            return max(a[0] for a in arrivals) - started

        for _ in range(warmup):
            for side in starts:
                await one(side)
        samples: dict[str, list[int]] = {side: [] for side in starts}
        cpu = dict.fromkeys(starts, 0.0)
        ticks = dict.fromkeys(starts, 0.0)
        metrics: dict[str, float] = {}
        done = 0
        while done < total:
            m = min(block, total - done)
            for side in ("broadcaster", "confman"):
                server = servers[side]
                before = await _scrape(cport) if side == "confman" else {}
                c0, t0 = await _cpu(server), _cpu_seconds(server.proc.pid) or 0.0
                for _ in range(m):
                    samples[side].append(await one(side))
                cpu[side] += await _cpu(server) - c0
                ticks[side] += (_cpu_seconds(server.proc.pid) or 0.0) - t0
                if side == "confman":
                    after = await _scrape(cport)
                    for name, value in after.items():
                        metrics[name] = metrics.get(name, 0.0) + value - before.get(name, 0.0)
            done += m
        for w in clients:
            w.stop()
    confman = result.add(
        latency(f"confman serve, {n} clients: commit -> every client received", samples["confman"])
    )
    result.add(
        latency(
            f"confman serve, {n} clients: commit -> the first client received",
            first["confman"][warmup:],
            kind="info",
        )
    )
    peer = result.add(
        latency(
            f"Starlette broadcaster, {n} clients: POST -> every client received",
            samples["broadcaster"],
            kind="baseline",
        )
    )
    for side, label in (("confman", "confman serve"), ("broadcaster", "Starlette broadcaster")):
        result.add(
            Measurement(
                f"{label}, {n} clients: server CPU per change",
                cpu[side] / total * 1e3,
                "ms CPU/change",
                samples=total,
                kind="info",
                detail={"proc_stat_ms_per_change": ticks[side] / total * 1e3},
            )
        )
    reads = metrics.get("confman_event_reads_total", 0.0) / total
    result.add(
        Measurement(
            f"confman serve, {n} clients: change-log reads per change (confman_event_reads_total)",
            reads,
            "reads/change",
            samples=total,
            kind="info",
            detail={name: value / total for name, value in metrics.items()},
        )
    )
    assert confman.p99 is not None and peer.p99 is not None
    name = f"{n} clients: confman p99 / broadcaster p99"
    if held:
        result.check(Check.at_most(name, confman.p99 / peer.p99, 2.0))
    else:
        result.check(Check(name, confman.p99 / peer.p99, "reported", None))
    result.check(
        Check(
            f"{n} clients: confman p50 / broadcaster p50",
            confman.value / peer.value,
            "reported",
            None,
        )
    )
    result.check(
        Check(
            f"{n} clients: server CPU per change, confman / broadcaster",
            cpu["confman"] / max(cpu["broadcaster"], 1e-9),
            "reported",
            None,
        )
    )
    return reads
