"""The harness every figure shares: results, timing, statistics, services and processes.

Timing uses ``time.perf_counter_ns`` (CLOCK_MONOTONIC on Linux, so timestamps taken in
different processes on one machine are comparable) and ``timeit`` for nanosecond reads.
Every figure warms up first, repeats its measurement, and reports medians; latencies
are reported as p50 and p99 (nearest rank).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent

POSTGRES_ADMIN_URL = os.environ.get(
    "CONFMAN_BENCH_POSTGRES_URL",
    os.environ.get("CONFMAN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)
REDIS_URL = os.environ.get(
    "CONFMAN_BENCH_REDIS_URL", os.environ.get("CONFMAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
)

MQTT_URL = os.environ.get(
    "CONFMAN_BENCH_MQTT_URL", os.environ.get("CONFMAN_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
)

Status = Literal["ok", "not available", "skipped", "error"]


# --------------------------------------------------------------------------- results


@dataclass
class Measurement:
    """One measured quantity. ``value`` is the headline (a median, a p50, a rate)."""

    name: str
    value: float
    unit: str
    p50: float | None = None
    p99: float | None = None
    samples: int | None = None
    kind: Literal["confman", "baseline", "info"] = "confman"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """A ratio held against a target from the issue (``met`` is ``None``: reported only)."""

    name: str
    ratio: float | None
    target: str
    met: bool | None

    @classmethod
    def at_most(cls, name: str, ratio: float, bound: float) -> Check:
        return cls(name, ratio, f"<= {bound:g}x", ratio <= bound)

    @classmethod
    def at_least(cls, name: str, ratio: float, bound: float) -> Check:
        return cls(name, ratio, f">= {bound:g}x", ratio >= bound)

    @classmethod
    def fact(cls, name: str, ok: bool, target: str) -> Check:
        return cls(name, None, target, ok)


@dataclass
class FigureResult:
    id: str
    title: str
    status: Status = "ok"
    reason: str | None = None
    measurements: list[Measurement] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    load_before: float | None = None
    load_after: float | None = None

    def add(self, m: Measurement) -> Measurement:
        self.measurements.append(m)
        return m

    def check(self, c: Check) -> Check:
        self.checks.append(c)
        return c

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class NotAvailable(Exception):
    """A figure cannot run yet: the module it measures is missing."""


class Skipped(Exception):
    """A figure cannot run here: a service it needs is not reachable."""


# --------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty sequence."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def latency(name: str, samples_ns: Sequence[float], **kw: Any) -> Measurement:
    """A latency measurement in milliseconds from nanosecond samples (p50 headline)."""
    ms = [s / 1e6 for s in samples_ns]
    p50 = percentile(ms, 50)
    return Measurement(name, p50, "ms", p50=p50, p99=percentile(ms, 99), samples=len(ms), **kw)


def per_op_ns(
    stmt: str,
    namespace: dict[str, Any],
    *,
    number: int,
    repeat: int,
    setup: str = "pass",
) -> list[float]:
    """``timeit``: per-operation nanoseconds of each repeat, after one warm-up repeat."""
    timer = timeit.Timer(stmt, setup=setup, globals=namespace)
    timer.timeit(max(1, number // 10))  # warm-up (caches, specialisation)
    return [t / number * 1e9 for t in timer.repeat(repeat=repeat, number=number)]


def calibrate(stmt: str, namespace: dict[str, Any], target_seconds: float) -> int:
    """How many loops of ``stmt`` take about ``target_seconds``."""
    timer = timeit.Timer(stmt, globals=namespace)
    number = 1
    while True:
        took = timer.timeit(number)
        if took >= target_seconds / 10 or number >= 10**8:
            return max(1, int(number * target_seconds / max(took, 1e-9)))
        number *= 10


async def rate(
    op: Callable[[int], Awaitable[Any]], n: int, *, start: int = 0
) -> tuple[float, list[int]]:
    """Run ``await op(i)`` ``n`` times in sequence; return ops/s and per-op nanoseconds."""
    took: list[int] = []
    begin = time.perf_counter_ns()
    for i in range(start, start + n):
        t0 = time.perf_counter_ns()
        await op(i)
        took.append(time.perf_counter_ns() - t0)
    elapsed = time.perf_counter_ns() - begin
    return n / (elapsed / 1e9), took


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What every figure gets: the mode, where the services are, a scratch directory."""

    quick: bool
    workdir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    postgres_admin_url: str = POSTGRES_ADMIN_URL
    redis_url: str = REDIS_URL
    mqtt_url: str = MQTT_URL
    encryption_key: str = ""
    results: dict[str, FigureResult] = field(default_factory=dict)
    _pg_template: str | None = None
    _pg_databases: list[str] = field(default_factory=list)
    _clusters: list[str] = field(default_factory=list)
    _sqlite_count: int = 0
    _etcd: Any = None  # benchmarks.etcd.EtcdServer, started by the first figure needing it
    _etcd_failure: str | None = None

    def scale(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    # ---------------------------------------------------------------- services

    def postgres_reachable(self) -> bool:
        return _reachable_url(self.postgres_admin_url, 5432)

    def redis_reachable(self) -> bool:
        return _reachable_url(self.redis_url, 6379)

    def require_postgres(self) -> None:
        if not self.postgres_reachable():
            raise Skipped(f"PostgreSQL is not reachable at {_host_port(self.postgres_admin_url)}")

    def mqtt_reachable(self) -> bool:
        return _reachable_url(self.mqtt_url, 1883)

    def require_redis(self) -> None:
        if not self.redis_reachable():
            raise Skipped(f"Redis is not reachable at {_host_port(self.redis_url)}")

    async def etcd(self) -> Any:
        """This run's etcd server (`benchmarks.etcd.EtcdServer`), started on first use;
        `Skipped` with the reason when it cannot start (and for every later figure)."""
        from .etcd import EtcdServer

        if self._etcd_failure is not None:
            raise Skipped(self._etcd_failure)
        if self._etcd is None:
            try:
                self._etcd = await EtcdServer.start()
            except Skipped as e:
                self._etcd_failure = str(e)
                raise
        return self._etcd

    def pg_url(self, database: str) -> str:
        base = self.postgres_admin_url.rsplit("/", 1)[0]
        return f"{base}/{database}"

    async def _pg_admin(self, sql: str) -> None:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(self.postgres_admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def new_postgres(self) -> str:
        """A fresh PostgreSQL database at the migrations' head; returns its URL.

        Databases are cloned from one migrated template per run and dropped by `cleanup`.
        """
        from confman.store import upgrade_async

        self.require_postgres()
        if self._pg_template is None:
            name = f"confman_bench_{self.run_id}_tmpl"
            await self._pg_admin(f'CREATE DATABASE "{name}"')
            self._pg_databases.append(name)
            await upgrade_async(self.pg_url(name))
            self._pg_template = name
        name = f"confman_bench_{self.run_id}_{uuid.uuid4().hex[:6]}"
        await self._pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._pg_template}"')
        self._pg_databases.append(name)
        return self.pg_url(name)

    async def drop_postgres(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        await self._pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.suppress(ValueError):
            self._pg_databases.remove(name)

    async def new_sqlite(self) -> str:
        """A fresh SQLite file (WAL) at the migrations' head; returns its URL."""
        from confman.store import upgrade_async

        self._sqlite_count += 1
        path = self.workdir / f"bench{self._sqlite_count}.db"
        url = f"sqlite+aiosqlite:///{path}"
        await upgrade_async(url)
        return url

    @contextlib.asynccontextmanager
    async def database(self, backend: str) -> AsyncIterator[str]:
        """``backend`` is ``sqlite`` or ``postgresql``; the database is removed after."""
        if backend == "sqlite":
            yield await self.new_sqlite()
            return
        url = await self.new_postgres()
        try:
            yield url
        finally:
            await self.drop_postgres(url)

    def cluster(self, figure: str) -> str:
        """A Redis prefix nobody else uses. Nothing is flushed: `cleanup` deletes the
        keys under this prefix only (the hubs' cluster state, e.g. ``<prefix>:fence``)."""
        name = f"confman-bench-{self.run_id}-{figure.lower()}-{uuid.uuid4().hex[:6]}"
        self._clusters.append(name)
        return name

    def hub_options(self) -> dict[str, Any]:
        """`ConfigHub.connect` options that keep a benchmark hub isolated from the machine."""
        return {
            "env": {},
            "env_files": (),
            "encryption_keys": [self.encryption_key],
        }

    async def cleanup(self) -> None:
        if self._etcd is not None:
            self._etcd.stop()
            self._etcd = None
        for name in list(self._pg_databases):
            with contextlib.suppress(Exception):
                await self._pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._pg_databases.clear()
        with contextlib.suppress(Exception):
            await self._drop_cluster_keys()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def _drop_cluster_keys(self) -> None:
        if not self._clusters or not self.redis_reachable():
            return
        from redis.asyncio import Redis

        client: Redis = Redis.from_url(self.redis_url, socket_connect_timeout=2)
        try:
            for prefix in self._clusters:
                keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
                if keys:
                    await client.delete(*keys)
        finally:
            await client.aclose()
        self._clusters.clear()


def _host_port(url: str, default_port: int = 0) -> tuple[str, int]:
    rest = url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host:
        return rest, default_port
    return host, int(port)


def _reachable_url(url: str, default_port: int) -> bool:
    host, port = _host_port(url, default_port)
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def new_context(quick: bool) -> Context:
    from confman.secrets import generate_key

    workdir = Path(tempfile.mkdtemp(prefix="confman-bench-"))
    return Context(quick=quick, workdir=workdir, encryption_key=generate_key())


# --------------------------------------------------------------------------- processes


def _pythonpath() -> str:
    """The repository first (``benchmarks`` and ``confman``), then what was set already."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


class Worker:
    """A benchmark process (``python -m benchmarks.worker '<json>'``), line-driven.

    It prints events on stdout, one per line; we read them on a thread. `stop` asks it
    to finish (``STOP`` on stdin) and kills it if it does not; nothing outlives a figure.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.name = str(config.get("name", "worker"))
        self.lines: queue.Queue[str] = queue.Queue()
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": _pythonpath()},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def stderr(self) -> str:
        with contextlib.suppress(ValueError, OSError):
            self._stderr.flush()
            self._stderr.seek(0)
            return self._stderr.read()[-3000:]
        return ""

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """The next stdout line starting with ``prefix`` (blocking)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no {prefix!r} in {timeout}s\n{self.stderr()}")
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise RuntimeError(
                        f"{self.name} exited ({self.proc.returncode})\n{self.stderr()}"
                    ) from None
                continue
            if line.startswith(prefix):
                return line

    async def aexpect(self, prefix: str, timeout: float = 60.0) -> str:
        return await asyncio.to_thread(self.expect, prefix, timeout)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def stop(self, timeout: float = 30.0) -> None:
        self.send("STOP")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(OSError):
            self._stderr.close()


@contextlib.contextmanager
def workers(configs: Sequence[dict[str, Any]]) -> Iterator[list[Worker]]:
    """Start one `Worker` per config; every one is stopped (or killed) on exit."""
    started: list[Worker] = []
    try:
        for config in configs:
            started.append(Worker(config))
        yield started
    finally:
        for w in started:
            w.kill()
