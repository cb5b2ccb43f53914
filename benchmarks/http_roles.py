"""Worker roles of the HTTP figures (A1): run by `benchmarks.worker`.

``serve``
    ``kind = "confman"``: `confman.api.serve.serve` (what ``confman serve`` runs) over a
    hub on ``db``; ``kind = "bare"``: a bare FastAPI route returning ``body`` as JSON,
    under the same uvicorn settings. Prints ``READY`` once listening on ``port``.
``patch``
    A2's writer: sequential PATCHes with ``If-Match`` on one keep-alive connection
    (`RawHttp`), a batch per ``GO <start> <n>``; prints ``DONE <json>``.
``load``
    ``clients`` keep-alive httpx clients (one connection each) GETting ``url`` in a loop
    for ``seconds`` after ``GO``; prints ``DONE <json>`` (requests, seconds, p50/p99 ms,
    errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from .worker import say, wait_for_line


def uvicorn_config(app: Any, port: int) -> Any:
    """The settings `confman.api.serve.serve` uses (at verbosity 0)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        server_header=False,
    )


async def serve(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    if config["kind"] == "confman":
        from confman import ConfigHub
        from confman.api.serve import serve as confman_serve
        from confman.api.tokens import ApiTokenManager
        from confman.managers.cache import CacheConfigurationManager

        from .worker import hub_options

        async with ConfigHub.connect(
            config["db"],
            managers=[CacheConfigurationManager, ApiTokenManager],
            **hub_options(config),
        ) as hub:
            task = asyncio.create_task(
                confman_serve(
                    hub,
                    host="127.0.0.1",
                    port=config["port"],
                    bootstrap=False,
                    out=lambda line: say("READY") if "dashboard at" in line else None,
                )
            )
            await wait_for_line(lines, "STOP")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return

    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    body = config["body"]

    @app.get(config["path"])
    async def document() -> JSONResponse:
        return JSONResponse(body)

    server = uvicorn.Server(uvicorn_config(app, config["port"]))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, no event
        await asyncio.sleep(0.05)
    say("READY")
    await wait_for_line(lines, "STOP")
    server.should_exit = True
    await task


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client on one connection, for load generators.

    httpx costs about 1.2 ms of CPU per request on the benchmark machine (more than the
    server's whole answer), so a sequential writer driven by it measures httpx. This
    writes a prepared request and reads the answer by ``Content-Length``: tens of
    microseconds. Enough for confman's own answers (no chunked bodies, no redirects).
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttp:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and body of one request."""
        assert self._reader is not None and self._writer is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if body:
            extra += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._fixed}{extra}\r\n"
        self._writer.write(head.encode("latin-1") + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = raw[:-4].decode("latin-1").split("\r\n")
        found = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            found[name.strip().lower()] = value.strip()
        length = int(found.get("content-length", "0"))
        content = await self._reader.readexactly(length) if length else b""
        return int(status_line.split(" ", 2)[1]), found, content


async def patch(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    """A2's writer: on ``GO <start> <n>``, ``n`` sequential PATCHes of ``field`` on
    ``path`` (values from ``start``), each with ``If-Match`` the ETag of the previous
    answer; prints ``DONE <json>`` (per-write nanoseconds, seconds, this process's CPU
    seconds, to show the generator is not what is measured)."""
    async with RawHttp("127.0.0.1", config["port"], config["headers"]) as http:
        status, headers, _ = await http.request("GET", config["path"])
        if status != 200:
            raise SystemExit(f"GET {config['path']}: {status}")
        etag = headers["etag"]
        say("READY")
        while (line := await lines.get()) != "STOP":
            if not line.startswith("GO "):
                continue
            start, n = map(int, line.split()[1:])
            took: list[int] = []
            cpu0, began = time.process_time(), time.perf_counter_ns()
            for i in range(start, start + n):
                body = json.dumps({config["field"]: 2 + i % 1000}).encode()
                t0 = time.perf_counter_ns()
                status, headers, content = await http.request(
                    "PATCH", config["path"], body, {"If-Match": etag}
                )
                took.append(time.perf_counter_ns() - t0)
                if status != 200:
                    raise SystemExit(f"PATCH: {status} {content[:300]!r}")
                etag = headers["etag"]
            seconds = (time.perf_counter_ns() - began) / 1e9
            cpu = time.process_time() - cpu0
            say("DONE " + json.dumps({"took": took, "seconds": seconds, "cpu": cpu}))


async def load(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    import httpx

    say("READY")
    if await wait_for_line(lines, "GO") == "STOP":
        return
    took: list[int] = []
    errors = 0
    stop_at = time.perf_counter() + config["seconds"]

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(
            headers=config.get("headers", {}),
            timeout=10,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        ) as http:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter_ns()
                response = await http.get(config["url"])
                took.append(time.perf_counter_ns() - t0)
                if response.status_code != 200:
                    errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(config["clients"])))
    seconds = time.perf_counter() - began
    ordered = sorted(took)

    def pct(p: float) -> float:
        return ordered[max(0, int(len(ordered) * p / 100 + 0.999999) - 1)] / 1e6

    result = {"requests": len(took), "seconds": seconds, "errors": errors}
    result.update(p50_ms=pct(50), p99_ms=pct(99))
    say("DONE " + json.dumps(result))
    await wait_for_line(lines, "STOP")


async def sse(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    """``streams`` SSE clients on ``url``; ``READY`` once each got its ``ready`` event;
    on ``COUNT`` prints ``COUNTS <json list>``: change events received per stream."""
    import httpx

    counts = [0] * config["streams"]
    ready = [asyncio.Event() for _ in counts]
    timeout = httpx.Timeout(10, read=None)  # a quiet stream is not a failure
    limits = httpx.Limits(max_connections=len(counts), max_keepalive_connections=0)

    async def stream(http: httpx.AsyncClient, i: int) -> None:
        async with http.stream("GET", config["url"], timeout=timeout) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line == "event: ready":
                    ready[i].set()
                elif line.startswith("event: ") and ready[i].is_set():
                    counts[i] += 1

    async with httpx.AsyncClient(headers=config.get("headers", {}), limits=limits) as http:
        tasks = [asyncio.create_task(stream(http, i)) for i in range(len(counts))]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 60)
        say("READY")
        while (line := await lines.get()) != "STOP":
            if line == "COUNT":
                say("COUNTS " + json.dumps(counts))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
