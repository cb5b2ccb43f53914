"""H1: one large request against a real ``confman serve``, and what it does to the rest.

Issue 11 section 1: an editor limited to ``cache`` sends a dry-run PATCH of
``ttl_by_model`` with 8,000 keys (about 95 KB), and a 1 MB document is read back with
GET. Each is timed end to end over HTTP, while another thread asks ``/healthz`` over and
over: its latency during the request, as a ratio to idle ``/healthz`` latency measured in
the same run, says how long the request held the server's event loop (``/healthz``
touches nothing but the loop). The server is the ``confman serve`` command in its own
process, over a SQLite database of the run; tokens are made through the library.

Set ``CONFMAN_BENCH_H1_SOURCE`` to a directory holding another ``confman`` package (an
export of ``main``, say) to measure that code's server instead, and
``CONFMAN_BENCH_H1_REPEATS`` to time each request that many times (default 3, quick 1);
docs/benchmarks.md records both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .common import ROOT, Check, Context, FigureResult, Measurement, latency, percentile

ID = "H1"
TITLE = "a large dry run and a 1 MB GET against confman serve, /healthz meanwhile"

CACHE = "/api/v1/namespaces/cache/documents/default"
_START_TIMEOUT = 30.0
# The installed command, as an operator runs it (whichever package PYTHONPATH puts first).
_SCRIPT = shutil.which("confman", path=str(Path(sys.executable).parent))
_CONFMAN = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "confman.cli"]


def ttl_patch(keys: int) -> dict[str, Any]:
    """The reproduction's patch: ``keys`` per-model TTLs (8,000 keys: about 95 KB)."""
    return {"ttl_by_model": {f"model-{i:05d}": 60 + i % 1000 for i in range(keys)}}


def large_document(size: int) -> dict[str, Any]:
    """A cache policy whose JSON is at least ``size`` bytes, all of it per-model TTLs."""
    per_key = len(json.dumps({"provider/model-name-000000": 3600})) - 1
    count = size // per_key + 1
    return {"ttl_by_model": {f"provider/model-name-{i:06d}": 3600 + i for i in range(count)}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _tokens(ctx: Context, url: str) -> dict[str, str]:
    from confman import ConfigHub
    from confman.api.tokens import ApiTokenManager, Role

    async with ConfigHub.connect(url, managers=[ApiTokenManager], **ctx.hub_options()) as hub:
        tokens = hub.manager(ApiTokenManager)
        editor = await tokens.create_token("h1-cache-editor", Role.EDITOR, namespaces=["cache"])
        viewer = await tokens.create_token("h1-viewer", Role.VIEWER)
    return {"editor": editor.plaintext, "viewer": viewer.plaintext}


@contextlib.contextmanager
def _server(ctx: Context, url: str) -> Iterator[str]:
    """``confman serve`` over ``url``; its base URL. Stopped (by PID) on exit."""
    port = _free_port()
    source = os.environ.get("CONFMAN_BENCH_H1_SOURCE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFMAN_")}
    env.update(CONFMAN_ENCRYPTION_KEY=ctx.encryption_key, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = source or str(ROOT)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never write into another tree
    log = (ctx.workdir / f"h1-serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [*_CONFMAN, "serve", "--database-url", url, "--port", str(port), "--no-bootstrap-token"],
        cwd=ctx.workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"confman serve exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("confman serve did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)
        log.close()


async def _seed(ctx: Context, url: str, document: dict[str, Any]) -> int:
    from confman import ConfigHub
    from confman.managers.cache import CacheConfigurationManager

    managers = [CacheConfigurationManager]
    async with ConfigHub.connect(url, managers=managers, **ctx.hub_options()) as hub:
        change = await hub.manager(CacheConfigurationManager).update(document, actor="h1")
    return change.version


def _wait_for_version(base: str, token: str, version: int) -> None:
    """Until the server has applied ``version`` of the cache policy (a cheap listing)."""
    import httpx

    deadline = time.monotonic() + 120
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        while time.monotonic() < deadline:
            listing = client.get("/api/v1/namespaces", timeout=600).json()
            if any(n["namespace"] == "cache" and n["version"] == version for n in listing):
                return
            time.sleep(0.1)
    raise RuntimeError(f"the server did not apply cache v{version}")


def _healthz_samples(base: str, count: int) -> list[int]:
    import httpx

    took = []
    with httpx.Client(base_url=base, timeout=600) as client:
        client.get("/healthz")
        for _ in range(count):
            t0 = time.perf_counter_ns()
            client.get("/healthz")
            took.append(time.perf_counter_ns() - t0)
    return took


def _while_polling(base: str, request: Any) -> tuple[int, Any, list[int]]:
    """Run ``request()`` (on this thread) while another thread polls ``/healthz``.

    Returns the request's nanoseconds, its result, and every ``/healthz`` latency that
    overlapped it (a poll still waiting when the request ends counts until it answers).
    """
    import httpx

    done = threading.Event()
    polled: list[int] = []
    started = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base, timeout=600) as client:
            client.get("/healthz")
            started.set()
            while not done.is_set():
                t0 = time.perf_counter_ns()
                client.get("/healthz")
                polled.append(time.perf_counter_ns() - t0)
                time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    started.wait(30)
    t0 = time.perf_counter_ns()
    answer = request()
    took = time.perf_counter_ns() - t0
    done.set()
    poller.join(600)
    return took, answer, polled


def _measure(
    result: FigureResult,
    name: str,
    runs: list[tuple[int, list[int]]],
    idle_p50_ms: float,
    detail: dict[str, Any],
) -> None:
    took = [t for t, _ in runs]
    polled = [p for _, samples in runs for p in samples] or [0]
    result.add(latency(name, took, detail=detail))
    during = latency(f"/healthz during: {name}", polled, kind="info")
    during.detail["max_ms"] = max(polled) / 1e6
    result.add(during)
    assert during.p99 is not None
    result.check(
        Check(f"/healthz p99 during {name} / idle p50", during.p99 / idle_p50_ms, "reported", None)
    )


async def run(ctx: Context, result: FigureResult) -> None:
    import httpx

    keys = ctx.scale(2_000, 8_000)
    size = ctx.scale(250_000, 1_000_000)
    repeats = int(os.environ.get("CONFMAN_BENCH_H1_REPEATS") or ctx.scale(1, 3))
    url = await ctx.new_sqlite()
    tokens = await _tokens(ctx, url)
    patch = json.dumps(ttl_patch(keys)).encode()
    document = json.dumps(large_document(size)).encode()
    result.facts.update(
        keys=keys,
        patch_bytes=len(patch),
        document_bytes=len(document),
        server_source=os.environ.get("CONFMAN_BENCH_H1_SOURCE") or "this tree",
    )

    def call(method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return httpx.request(method, base + path, headers=headers, timeout=900, **kw)

    with _server(ctx, url) as base:
        idle = await asyncio.to_thread(_healthz_samples, base, ctx.scale(100, 300))
        idle_ms = latency("/healthz idle", idle, kind="baseline")
        result.add(idle_ms)
        assert idle_ms.p50 is not None

        dry_runs: list[tuple[int, list[int]]] = []
        answered: list[bool] = []
        for _ in range(repeats):

            def dry_run() -> httpx.Response:
                return call("PATCH", CACHE + "?dry_run=true", tokens["editor"], content=patch)

            took, answer, polled = await asyncio.to_thread(_while_polling, base, dry_run)
            answered.append(answer.status_code == 200 and len(answer.json()["diff"]) == keys)
            dry_runs.append((took, polled))
        _measure(
            result,
            f"dry-run PATCH, {keys:,} keys ({len(patch) / 1000:.0f} KB), cache-limited editor",
            dry_runs,
            idle_ms.p50,
            {"bytes": len(patch)},
        )
        result.check(
            Check.fact("dry run answered 200, every key in its diff", all(answered), "200")
        )

        # Stored through the library (the write is not what H1 measures, and on the
        # quadratic code it took as long as a GET); the server takes it by catch-up.
        version = await _seed(ctx, url, large_document(size))
        await asyncio.to_thread(_wait_for_version, base, tokens["viewer"], version)
        gets: list[tuple[int, list[int]]] = []
        for _ in range(repeats):

            def read() -> httpx.Response:
                return call("GET", CACHE, tokens["viewer"])

            took, answer, polled = await asyncio.to_thread(_while_polling, base, read)
            if answer.status_code != 200:
                raise RuntimeError(f"GET of the large document: {answer.status_code}")
            gets.append((took, polled))
        _measure(
            result,
            f"GET of a {len(document) / 1e6:.1f} MB document",
            gets,
            idle_ms.p50,
            {"bytes": len(document), "response_bytes": len(answer.content)},
        )
    worst = max(p for _, samples in dry_runs + gets for p in samples) if dry_runs else 0
    result.add(Measurement("longest /healthz wait", worst / 1e6, "ms", kind="info"))
    result.facts["healthz_p99_idle_ms"] = percentile([i / 1e6 for i in idle], 99)
