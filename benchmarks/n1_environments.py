"""N1: environments. The read path costs the same in an environment as without one, and
start-up with three environments, each holding the B-suite's data set.

Reads: two hubs on one database, one on the base alone and one in ``production`` whose
cache policy is an overlay over the base; each round times ``current`` and ``get`` on
both back to back (as B1 does), so the ratio is taken within the round.

Start-up: the gateway data set (a cache policy, 1,000 model providers, a router, 10,000
virtual keys) in the base, and for each of three environments an overlay on the cache
policy, the router and every provider, plus 10,000 virtual keys of its own (credentials
do not inherit). A hub in ``production`` loads the base and production's overlays; it is
timed next to a base-only hub on a database holding the base data set alone.
"""

from __future__ import annotations

import time
from typing import Any

from .common import Check, Context, FigureResult, Measurement, calibrate, median, per_op_ns
from .gateway import managers, provider_name, seed_gateway, virtual_key_document
from .seed import Doc, seed

ID = "N1"
TITLE = "environments: reads, and start-up with three environments"

FIELD = "default_ttl_seconds"
ENVIRONMENTS = ("development", "staging", "production")


async def run(ctx: Context, result: FigureResult) -> None:
    await _reads(ctx, result)
    await _startup(ctx, result)


async def _reads(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub
    from confman.managers.cache import CacheConfigurationManager

    url = await ctx.new_sqlite()
    options = {"managers": [CacheConfigurationManager], **ctx.hub_options()}
    async with ConfigHub.connect(url, **options) as base:
        await base.create_environment("production")
        cache = base.manager(CacheConfigurationManager)
        await cache.update({FIELD: 300, "max_entries": 500}, environment=None)
        await cache.update({FIELD: 60}, environment="production")
        async with ConfigHub.connect(url, environment="production", **options) as prod:
            in_env = prod.manager(CacheConfigurationManager)
            assert (in_env.current.default_ttl_seconds, in_env.current.max_entries) == (60, 500)
            namespace: dict[str, Any] = {"base": cache, "env": in_env}
            stmts = {
                "current (base)": f"base.current.{FIELD}",
                "current (production)": f"env.current.{FIELD}",
                "get (base)": f"base.get('default').{FIELD}",
                "get (production)": f"env.get('default').{FIELD}",
            }
            seconds = 0.02 if ctx.quick else 0.2
            numbers = {name: calibrate(s, namespace, seconds) for name, s in stmts.items()}
            rounds = ctx.scale(5, 15)
            samples: dict[str, list[float]] = {name: [] for name in stmts}
            for i in range(rounds):
                # Every other round in the other order: no side always runs first.
                order = list(stmts.items())
                for name, stmt in order if i % 2 == 0 else reversed(order):
                    samples[name] += per_op_ns(stmt, namespace, number=numbers[name], repeat=1)
    for name, stmt in stmts.items():
        result.add(
            Measurement(
                f"{name}: {stmt}",
                median(samples[name]),
                "ns/read",
                samples=rounds,
                kind="baseline" if "(base)" in name else "confman",
            )
        )
    for read in ("current", "get"):
        env, plain = samples[f"{read} (production)"], samples[f"{read} (base)"]
        ratio = median([a / b for a, b in zip(env, plain, strict=True)])
        result.check(Check.at_most(f"{read}: in an environment / without", ratio, 1.1))


async def _seed_environment(
    ctx: Context, url: str, environment: str, providers: int, keys: int
) -> None:
    m = managers()
    key = ctx.encryption_key
    common = {"encryption_key": key, "environment": environment, "partial": True}
    await seed(url, "cache", m["cache"].model, [Doc("default", 1, {FIELD: 30})], **common)
    await seed(
        url, "router", m["router"].model, [Doc("default", 1, {"strategy": "simple"})], **common
    )
    await seed(
        url,
        "model_provider",
        m["model_provider"].model,
        [Doc(provider_name(i), 1, {"rpm_limit": 500}) for i in range(providers)],
        **common,
    )
    docs = [Doc(f"{environment}-{i:06d}", 1, virtual_key_document(i)) for i in range(keys)]
    await seed(
        url,
        "virtual_key",
        m["virtual_key"].model,
        docs,
        encryption_key=key,
        environment=environment,
        log=False,
    )


async def _startup(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub

    m = managers()
    providers = 1_000
    keys = ctx.scale(2_000, 10_000)
    repeats = ctx.scale(2, 5)
    loaded = [m["cache"], m["router"], m["model_provider"], m["virtual_key"]]
    timings: dict[str, list[float]] = {}
    for label, environments in (("base only", ()), ("3 environments", ENVIRONMENTS)):
        async with ctx.database("sqlite") as url:
            await seed_gateway(ctx, url, providers=providers, virtual_keys=keys)
            if environments:
                async with ConfigHub.connect(url, managers=[], **ctx.hub_options()) as hub:
                    for name in environments:
                        await hub.create_environment(name)
                for name in environments:
                    await _seed_environment(ctx, url, name, providers, keys)
            where = "production" if environments else None
            runs: list[float] = []
            for _ in range(repeats + 1):
                began = time.perf_counter()
                hub = await ConfigHub.connect(
                    url, managers=loaded, environment=where, **ctx.hub_options()
                )
                runs.append(time.perf_counter() - began)
                try:
                    providers_seen = hub.manager(m["model_provider"])
                    assert len(providers_seen.keys()) == providers
                    if environments:
                        assert providers_seen.get(provider_name(0)).rpm_limit == 500
                finally:
                    await hub.close()
            timings[label] = runs[1:]
        result.add(
            Measurement(
                f"sqlite, {label}: connect until ready",
                median(timings[label]) * 1000,
                "ms",
                samples=repeats,
                kind="baseline" if not environments else "confman",
            )
        )
    ratio = median(timings["3 environments"]) / median(timings["base only"])
    result.check(
        Check("start-up: production of 3 environments / base only", ratio, "reported", None)
    )
    result.facts["data set"] = (
        f"{providers:,} providers, a router, a cache policy and {keys:,} virtual keys in the "
        f"base; per environment an overlay on each of those singletons and providers and "
        f"{keys:,} virtual keys of its own"
    )
