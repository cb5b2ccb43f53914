"""B3: 8 concurrent writers (4 asyncio tasks in each of 2 processes), distinct keys and one key.

Every task increments a counter with ``update(fn, retries=...)``: on a conflict the
manager reloads the newest value and re-applies ``fn``. Both processes start on a
signal; throughput is all commits over the slower process's time. Afterwards a fresh hub
reads the counters: each must equal the number of increments aimed at it (no lost update).
"""

from __future__ import annotations

import json
from typing import Any

from .common import Check, Context, FigureResult, Measurement, workers
from .models import CountersManager

ID = "B3"
TITLE = "concurrent writers: 8 tasks over 2 processes"

PROCESSES = 2
TASKS = 4


async def once(ctx: Context, backend: str, shape: str, increments: int) -> dict[str, Any]:
    from confman import ConfigHub

    keys = [f"k{i}" for i in range(PROCESSES * TASKS)] if shape == "distinct" else ["shared"]
    async with ctx.database(backend) as url:
        async with ConfigHub.connect(url, managers=[CountersManager], **ctx.hub_options()) as hub:
            counters = hub.manager(CountersManager)
            for key in keys:
                await counters.create(key, {"value": 0}, actor="bench")
        configs = []
        for p in range(PROCESSES):
            mine = keys[p * TASKS : (p + 1) * TASKS] if shape == "distinct" else keys * TASKS
            configs.append(
                {
                    "role": "writers",
                    "name": f"b3-{backend}-{shape}-{p}",
                    "db": url,
                    "key": ctx.encryption_key,
                    "keys": mine,
                    "increments": increments,
                }
            )
        with workers(configs) as procs:
            for w in procs:
                await w.aexpect("READY")
            for w in procs:
                w.send("GO")
            done = [json.loads((await w.aexpect("DONE", 300)).split(" ", 1)[1]) for w in procs]
            for w in procs:
                w.stop()
        async with ConfigHub.connect(url, managers=[CountersManager], **ctx.hub_options()) as hub:
            counters = hub.manager(CountersManager)
            expected = increments * (1 if shape == "distinct" else PROCESSES * TASKS)
            values = {k: counters.get(k).value for k in keys}
    commits = sum(d["commits"] for d in done)
    seconds = max(d["seconds"] for d in done)
    return {
        "commits": commits,
        "seconds": seconds,
        "conflicts": sum(d["conflicts"] for d in done),
        "failed": sum(d["failed"] for d in done),
        "lost": sum(expected - v for v in values.values()),
        "expected_per_key": expected,
        "values": values,
    }


async def run(ctx: Context, result: FigureResult) -> None:
    increments = ctx.scale(15, 150)
    backends = ["sqlite"] + (["postgresql"] if ctx.postgres_reachable() else [])
    if ctx.quick:  # one database is enough to prove the figure works
        backends = backends[-1:]
    single = ctx.results.get("B2")
    for backend in backends:
        for shape in ("distinct", "one"):
            r = await once(ctx, backend, shape, increments)
            label = "8 distinct keys" if shape == "distinct" else "one key"
            throughput = r["commits"] / r["seconds"]
            m = result.add(
                Measurement(
                    f"{backend}: {label}",
                    throughput,
                    "commits/s",
                    samples=r["commits"],
                    detail=r,
                )
            )
            m.detail["conflicts_per_commit"] = r["conflicts"] / max(1, r["commits"])
            result.facts[f"{backend}/{label}"] = (
                f"{r['commits']} commits, {r['conflicts']} conflicts (each retried), "
                f"{r['failed']} gave up, {r['lost']} lost updates"
            )
            result.check(
                Check.fact(
                    f"{backend}, {label}: no lost update ({r['commits']} commits, "
                    f"{r['conflicts']} conflicts retried, {r['lost']} lost)",
                    r["lost"] == 0 and r["failed"] == 0,
                    "0 lost",
                )
            )
            baseline = None
            if single is not None:
                baseline = next(
                    (
                        x.value
                        for x in single.measurements
                        if x.name == f"{backend}: confman update()"
                    ),
                    None,
                )
            if baseline:
                result.check(
                    Check(
                        f"{backend}, {label}: throughput / B2 single writer",
                        throughput / baseline,
                        "reported",
                        None,
                    )
                )
