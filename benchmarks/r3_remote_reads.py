"""R3: remote reads. ``manager.current`` and ``get(key)`` on a remote hub cost what they
cost on a direct hub: both read memory, the remote hub's fed by the stream.

``confman serve`` in a process of its own over a SQLite database; in this process a
`RemoteHub` on it (``service`` token) and a direct hub on the same database, both with
the cache manager. Each round times the same reads on both back to back with ``timeit``
(as B1 and N1 do), every other round in the other order; the ratio is taken within the
round. Target (issue 14): <= 1.1x.
"""

from __future__ import annotations

from typing import Any

from .a1_http_reads import _port
from .common import Check, Context, FigureResult, Measurement, calibrate, median, per_op_ns, workers
from .r1_remote_propagation import FIELD, service_token

ID = "R3"
TITLE = "remote reads: current and get(key) on a remote hub vs a direct hub"


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub
    from confman.managers.cache import CacheConfigurationManager

    url = await ctx.new_sqlite()
    token = await service_token(url, ctx, "bench-r3")
    port = _port()
    server_cfg = {
        "role": "remote-serve", "name": "r3-server", "db": url, "port": port,
        "key": ctx.encryption_key,
    }  # fmt: skip
    result.facts["database"] = "sqlite"
    with workers([server_cfg]) as (server,):
        await server.aexpect("READY", 60)
        async with (
            ConfigHub.connect(
                url, managers=[CacheConfigurationManager], **ctx.hub_options()
            ) as direct_hub,
            ConfigHub.connect(
                f"http://127.0.0.1:{port}",
                token=token,
                managers=[CacheConfigurationManager],
                env={},
                env_files=[],
            ) as remote_hub,
        ):
            await remote_hub.wait_streaming(30)  # type: ignore[attr-defined]
            direct = direct_hub.manager(CacheConfigurationManager)
            remote = remote_hub.manager(CacheConfigurationManager)
            assert remote.current == direct.current, (remote.current, direct.current)
            namespace: dict[str, Any] = {"direct": direct, "remote": remote}
            stmts = {
                "current (direct)": f"direct.current.{FIELD}",
                "current (remote)": f"remote.current.{FIELD}",
                "get (direct)": f"direct.get('default').{FIELD}",
                "get (remote)": f"remote.get('default').{FIELD}",
            }
            seconds = 0.02 if ctx.quick else 0.2
            numbers = {name: calibrate(s, namespace, seconds) for name, s in stmts.items()}
            rounds = ctx.scale(5, 15)
            samples: dict[str, list[float]] = {name: [] for name in stmts}
            for i in range(rounds):
                order = list(stmts.items())
                for name, stmt in order if i % 2 == 0 else reversed(order):
                    samples[name] += per_op_ns(stmt, namespace, number=numbers[name], repeat=1)
        server.stop()
    for name, stmt in stmts.items():
        result.add(
            Measurement(
                f"{name}: {stmt}",
                median(samples[name]),
                "ns/read",
                samples=rounds,
                kind="baseline" if "(direct)" in name else "confman",
            )
        )
    for read in ("current", "get"):
        remote_ns, direct_ns = samples[f"{read} (remote)"], samples[f"{read} (direct)"]
        ratio = median([a / b for a, b in zip(remote_ns, direct_ns, strict=True)])
        result.check(Check.at_most(f"{read}: remote hub / direct hub", ratio, 1.1))
