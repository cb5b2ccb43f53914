"""Run the benchmark suite: ``.venv/bin/python -m benchmarks [--quick] [--json PATH]``.

Prints a table of absolute figures, baselines and ratios against the issue's targets,
and writes the same (plus machine facts) as JSON. ``--quick`` is the reduced mode the
test suite smoke-runs (well under a minute); the default is the full run documented in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import platform
import sqlite3
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks.common import (
    ROOT,
    Context,
    FigureResult,
    NotAvailable,
    Skipped,
    loadavg,
    new_context,
)

FIGURES = [
    "b1_reads",
    "b2_writes",
    "b3_concurrent",
    "b4_propagation",
    "r1_remote_propagation",
    "b5_fanout",
    "b6_catchup",
    "b7_virtual_key",
    "b8_fleet",
    "e1_writes",
    "e2_propagation",
    "e3_catchup",
    "s1_startup_scale",
    "s2_catchup_scale",
    "s3_listing_scale",
    "a1_http_reads",
    "a2_http_writes",
    "a3_http_streams",
    "startup",
    "h1_hardening",
    "n1_environments",
    "c1_change_sets",
    "r2_remote_fanout",
    "r3_remote_reads",
]
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"
LIBRARIES = [
    "confman",
    "pydantic",
    "pydantic-core",
    "sqlalchemy",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "redis",
    "reactivex",
    "cachetools",
    "cryptography",
    "dynaconf",
    "pydantic-settings",
]


# --------------------------------------------------------------------------- machine facts


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _memory_mib() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


async def _postgres_version(ctx: Context) -> str | None:
    if not ctx.postgres_reachable():
        return None
    import asyncpg  # type: ignore[import-untyped]

    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(ctx.postgres_admin_url, timeout=5)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    return None


async def _redis_version(ctx: Context) -> str | None:
    if not ctx.redis_reachable():
        return None
    from redis.asyncio import Redis

    with contextlib.suppress(Exception):
        client = Redis.from_url(ctx.redis_url, socket_connect_timeout=2)
        try:
            info = await client.info("server")
            return str(info.get("redis_version"))
        finally:
            await client.aclose()
    return None


async def machine_facts(ctx: Context) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_mib": _memory_mib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "libraries": versions,
        "sqlite": sqlite3.sqlite_version,
        "postgresql_server": await _postgres_version(ctx),
        "redis_server": await _redis_version(ctx),
        "postgresql_url": ctx.postgres_admin_url.rsplit("@", 1)[-1],
        "redis_url": ctx.redis_url.rsplit("@", 1)[-1],
        "clock": "time.perf_counter_ns (CLOCK_MONOTONIC)",
    }


# --------------------------------------------------------------------------- running


async def run_figure(name: str, ctx: Context) -> FigureResult:
    try:
        module: ModuleType | None = importlib.import_module(f"benchmarks.{name}")
    except ImportError as e:
        module = None
        error: BaseException | None = e
    assert module is not None or error is not None
    result = FigureResult(id=getattr(module, "ID", name), title=getattr(module, "TITLE", name))
    result.load_before = loadavg()
    began = time.perf_counter()
    try:
        if module is None:
            raise NotAvailable(f"missing module: {error}")
        await module.run(ctx, result)
    except NotAvailable as e:
        result.status, result.reason = "not available", f"not available yet ({e})"
    except ModuleNotFoundError as e:
        result.status = "not available"
        result.reason = f"not available yet (missing module {e.name}: {e})"
    except Skipped as e:
        result.status, result.reason = "skipped", str(e)
    except Exception as e:
        result.status = "error"
        result.reason = f"{type(e).__name__}: {e}"
        result.facts["traceback"] = traceback.format_exc()
    result.seconds = time.perf_counter() - began
    result.load_after = loadavg()
    return result


def _select(only: str | None) -> list[str]:
    if not only:
        return FIGURES
    wanted = {w.strip().lower() for w in only.split(",") if w.strip()}
    chosen = [f for f in FIGURES if f.split("_")[0] in wanted or f in wanted]
    if not chosen:
        raise SystemExit(f"--only {only!r} names no figure; figures: {', '.join(FIGURES)}")
    return chosen


async def run_suite(quick: bool, only: str | None = None) -> dict[str, Any]:
    ctx = new_context(quick)
    started = datetime.now(UTC)
    began = time.perf_counter()
    figures: list[FigureResult] = []
    try:
        machine = await machine_facts(ctx)
        machine["load_at_start"] = loadavg()
        for name in _select(only):
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            result = await run_figure(name, ctx)
            print(
                f"   {result.status} in {result.seconds:.1f}s"
                + (f": {result.reason}" if result.reason else ""),
                file=sys.stderr,
                flush=True,
            )
            if result.status == "error":
                print(result.facts["traceback"], file=sys.stderr, flush=True)
            figures.append(result)
            ctx.results[result.id] = result
        machine["load_at_end"] = loadavg()
    finally:
        await ctx.cleanup()
    checks = [c for f in figures for c in f.checks if c.met is not None]
    return {
        "schema": 1,
        "mode": "quick" if quick else "full",
        "started_at": started.isoformat(),
        "seconds": round(time.perf_counter() - began, 2),
        "machine": machine,
        "summary": {
            "targets_met": sum(1 for c in checks if c.met),
            "targets_missed": [
                f"{f.id}: {c.name}" for f in figures for c in f.checks if c.met is False
            ],
            "not_available": {f.id: f.reason for f in figures if f.status == "not available"},
            "skipped": {f.id: f.reason for f in figures if f.status == "skipped"},
            "errors": {f.id: f.reason for f in figures if f.status == "error"},
        },
        "figures": [f.to_json() for f in figures],
    }


# --------------------------------------------------------------------------- table


def _num(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table (so docs/benchmarks.md can take it as it is)."""
    lines = [
        "| fig | measurement | kind | value | unit | p50 | p99 |",
        "| --- | --- | --- | ---: | --- | ---: | ---: |",
    ]
    checks = [
        "| fig | ratio | value | target | verdict |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for fig in report["figures"]:
        label = f"{fig['id']}"
        if fig["status"] != "ok":
            lines.append(
                f"| {label} | {fig['title']}: **{fig['status']}** — {fig['reason']} | | | | | |"
            )
        for m in fig["measurements"]:
            lines.append(
                f"| {label} | {m['name']} | {m['kind']} | {_num(m['value'])} | {m['unit']} "
                f"| {_num(m['p50'])} | {_num(m['p99'])} |"
            )
        for c in fig["checks"]:
            verdict = {True: "met", False: "**MISSED**", None: "reported"}[c["met"]]
            ratio = "" if c["ratio"] is None else f"{c['ratio']:.2f}x"
            checks.append(f"| {label} | {c['name']} | {ratio} | {c['target']} | {verdict} |")
    machine = report["machine"]
    head = (
        f"confman benchmarks ({report['mode']}), {report['started_at'][:19]}Z, "
        f"{report['seconds']:.0f} s; {machine['cores']} cores ({machine['cpu']}), "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql_server']}, "
        f"Redis {machine['redis_server']}, SQLite {machine['sqlite']}; load "
        f"{_num(machine.get('load_at_start'))} -> {_num(machine.get('load_at_end'))}"
    )
    return "\n".join([head, "", *lines, "", *checks])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced mode (< 1 minute)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write (default {DEFAULT_JSON})"
    )
    parser.add_argument("--only", help="comma-separated figures, e.g. B1,B5 or startup")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    report = asyncio.run(run_suite(args.quick, args.only))
    print(table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 1 if report["summary"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
