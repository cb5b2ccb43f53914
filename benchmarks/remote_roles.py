"""Worker roles of the remote-mode figures (R1-R3): run by `benchmarks.worker`.

``remote-serve``
    ``confman serve`` (`confman.api.serve.serve`) over a hub on ``db`` (on the Redis bus
    when ``redis`` and ``cluster`` are given), as the ``serve`` role of
    `benchmarks.http_roles`; also answers ``CPU`` with ``CPU <seconds>``, this
    process's user + system CPU time (``time.process_time``, nanosecond resolution).
``broadcast``
    R2's peer: the minimal Starlette SSE broadcaster of `benchmarks.broadcaster`, under
    the uvicorn settings `confman serve` uses; answers ``CPU`` like ``remote-serve``.
``remote-listen``
    R1: a `RemoteHub` on ``url`` (``token``) whose cache manager prints
    ``CHG <version> <perf_counter_ns>`` for every `ConfigChange` it emits; ``READY``
    once streaming (profiled like ``remote-serve`` under ``CONFMAN_BENCH_PROFILE_DIR``).
``fanout``
    R2's clients: ``clients`` raw SSE readers per target (one connection each); every
    client counts the ``change`` events it receives; once every client of a target has
    its k-th, prints ``GOT <side> <k> <latest perf_counter_ns> <earliest>``. ``READY``
    once every client got its ``ready`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from .worker import hub_options, say, wait_for_line

CHANGE = b"event: change\n"
READY = b"event: ready\n"


async def _answer_cpu(lines: asyncio.Queue[str]) -> None:
    """Answer ``CPU`` until ``STOP``."""
    while (line := await lines.get()) != "STOP":
        if line == "CPU":
            say(f"CPU {time.process_time()!r}")


async def remote_serve(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    from confman import ConfigHub
    from confman.api.serve import serve as confman_serve
    from confman.api.tokens import ApiTokenManager
    from confman.managers.cache import CacheConfigurationManager

    profile_dir = os.environ.get("CONFMAN_BENCH_PROFILE_DIR")
    profiler = cProfile.Profile() if profile_dir else None
    async with ConfigHub.connect(
        config["db"],
        managers=[CacheConfigurationManager, ApiTokenManager],
        **hub_options(config),
    ) as hub:
        if profiler is not None:
            profiler.enable()
        task = asyncio.create_task(
            confman_serve(
                hub,
                host="127.0.0.1",
                port=config["port"],
                bootstrap=False,
                out=lambda line: say("READY") if "dashboard at" in line else None,
            )
        )
        await _answer_cpu(lines)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(str(profile_dir), f"{config['name']}.prof"))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def broadcast(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    import uvicorn

    from .broadcaster import broadcaster_app
    from .http_roles import uvicorn_config

    app = broadcaster_app(bytes.fromhex(config["frame"]), bytes.fromhex(config["ready"]))
    server = uvicorn.Server(uvicorn_config(app, config["port"]))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, no event
        await asyncio.sleep(0.05)
    say("READY")
    await _answer_cpu(lines)
    server.should_exit = True
    await task


async def remote_listen(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    from confman import ConfigHub
    from confman.managers.cache import CacheConfigurationManager

    clock = time.perf_counter_ns
    profile_dir = os.environ.get("CONFMAN_BENCH_PROFILE_DIR")
    profiler = cProfile.Profile() if profile_dir else None
    async with ConfigHub.connect(
        config["url"],
        token=config["token"],
        managers=[CacheConfigurationManager],
        env={},
        env_files=[],
        instance_id=config["name"],
    ) as hub:
        cache = hub.manager(CacheConfigurationManager)
        cache.changes.subscribe(lambda c: say(f"CHG {c.version} {clock()}"))
        await hub.wait_streaming(30)  # type: ignore[attr-defined]
        if profiler is not None:
            profiler.enable()
        say("READY")
        await wait_for_line(lines, "STOP")
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.path.join(str(profile_dir), f"{config['name']}.prof"))


async def sse_chunks(
    host: str, port: int, path: str, headers: dict[str, str]
) -> AsyncIterator[bytes]:
    """The chunks of one ``text/event-stream`` response, read off a raw connection.

    Both servers send each event as one chunk of a chunked response (one ASGI body
    message each), so a chunk is an event, as the server wrote it."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{fixed}\r\n"
        writer.write(head.encode("latin-1"))
        raw = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = raw[:-4].decode("latin-1").split("\r\n")
        if status_line.split(" ", 2)[1] != "200":
            raise RuntimeError(f"GET {path}: {status_line}")
        found = {
            n.strip().lower(): v.strip().lower()
            for n, _, v in (h.partition(":") for h in header_lines)
        }
        if found.get("transfer-encoding") != "chunked":
            raise RuntimeError(f"GET {path}: not a chunked response ({found})")
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                return
            yield (await reader.readexactly(size + 2))[:-2]
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class _Tally:
    """Per target: when each client received its k-th change; says so once all have."""

    def __init__(self, side: str, clients: int) -> None:
        self.side, self.clients = side, clients
        self.ready = 0
        self.all_ready = asyncio.Event()
        self._pending: dict[int, list[int]] = {}  # k -> [clients left, latest, earliest]

    def arrived(self, k: int, now: int) -> None:
        entry = self._pending.get(k)
        if entry is None:
            entry = self._pending[k] = [self.clients, now, now]
        entry[0] -= 1
        if now > entry[1]:
            entry[1] = now
        if entry[0] == 0:
            del self._pending[k]
            say(f"GOT {self.side} {k} {entry[1]} {entry[2]}")


async def fanout(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    clock = time.perf_counter_ns
    clients = int(config["clients"])
    tallies = [_Tally(t["side"], clients) for t in config["targets"]]

    async def client(target: dict[str, Any], tally: _Tally) -> None:
        seen = 0
        ready = False
        async for chunk in sse_chunks(
            "127.0.0.1", target["port"], target["path"], target["headers"]
        ):
            now = clock()
            if chunk.startswith(CHANGE):
                if ready:
                    seen += 1
                    tally.arrived(seen, now)
            elif not ready and chunk.startswith(READY):
                ready = True
                tally.ready += 1
                if tally.ready == clients:
                    tally.all_ready.set()
        raise RuntimeError(f"{target['side']}: the server ended a stream")

    tasks: list[asyncio.Task[None]] = []
    for target, tally in zip(config["targets"], tallies, strict=True):
        for start in range(0, clients, 50):  # in batches: no listen-backlog overflow
            batch = [
                asyncio.create_task(client(target, tally))
                for _ in range(start, min(clients, start + 50))
            ]
            tasks += batch
            await asyncio.sleep(0.05)
    waiting = asyncio.gather(*(t.all_ready.wait() for t in tallies))
    failed = asyncio.gather(*tasks)
    done, _ = await asyncio.wait({waiting, failed}, timeout=120, return_when="FIRST_COMPLETED")
    if failed in done:
        failed.result()
    if waiting not in done:
        raise SystemExit(f"not every client got ready: {[t.ready for t in tallies]}")
    say("READY")
    await wait_for_line(lines, "STOP")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
