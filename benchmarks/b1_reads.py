"""B1: reading a value, against a held pydantic model, dynaconf and pydantic-settings.

Every round times each read back to back with ``timeit`` (the same loop overhead for
all), so a burst of load from elsewhere hits every candidate of that round alike; the
ratios are medians of the per-round ratios.
"""

from __future__ import annotations

from typing import Any, Literal

from .common import Check, Context, FigureResult, Measurement, calibrate, median, per_op_ns

ID = "B1"
TITLE = "read a value from memory"

FIELD = "default_ttl_seconds"


def _peers() -> dict[str, Any]:
    from dynaconf import Dynaconf  # type: ignore[import-untyped]
    from pydantic_settings import BaseSettings, SettingsConfigDict

    class CacheSettings(BaseSettings):
        """What a service using pydantic-settings reads (the same field and default)."""

        model_config = SettingsConfigDict(env_prefix="CONFMAN_BENCH_PS_")

        enabled: bool = True
        default_ttl_seconds: int = 300
        max_entries: int = 10_000
        key_prefix: str = "confman:cache:"

    settings = Dynaconf(envvar_prefix="CONFMAN_BENCH_DYNACONF", environments=False)
    settings.set("DEFAULT_TTL_SECONDS", 300)
    assert settings.DEFAULT_TTL_SECONDS == 300
    assert CacheSettings().default_ttl_seconds == 300
    return {"dynaconf_settings": settings, "Settings": CacheSettings}


async def run(ctx: Context, result: FigureResult) -> None:
    from confman import ConfigHub
    from confman.managers.cache import CacheConfigurationManager

    url = await ctx.new_sqlite()
    async with ConfigHub.connect(
        url, managers=[CacheConfigurationManager], **ctx.hub_options()
    ) as hub:
        cache = hub.manager(CacheConfigurationManager)
        await cache.update({FIELD: 300}, actor="bench")  # a stored document, version 1
        namespace: dict[str, Any] = {"cache": cache, "held": cache.current, **_peers()}
        stmts = {
            "held model": f"held.{FIELD}",
            "current": f"cache.current.{FIELD}",
            "get(key)": f"cache.get('default').{FIELD}",
            "dynaconf": "dynaconf_settings.DEFAULT_TTL_SECONDS",
            "pydantic-settings": f"Settings().{FIELD}",
            "empty loop": "pass",
        }
        assert eval(stmts["current"], namespace) == eval(stmts["held model"], namespace)

        seconds = 0.02 if ctx.quick else 0.2
        numbers = {name: calibrate(s, namespace, seconds) for name, s in stmts.items()}
        rounds = ctx.scale(5, 15)
        samples: dict[str, list[float]] = {name: [] for name in stmts}
        for _ in range(rounds):
            for name, stmt in stmts.items():
                samples[name] += per_op_ns(stmt, namespace, number=numbers[name], repeat=1)

    def ratios(a: str, b: str) -> float:
        return median([x / y for x, y in zip(samples[a], samples[b], strict=True)])

    baselines = {"held model", "dynaconf", "pydantic-settings"}
    for name, stmt in stmts.items():
        kind: Literal["confman", "baseline", "info"] = (
            "baseline" if name in baselines else "info" if name == "empty loop" else "confman"
        )
        result.add(
            Measurement(
                f"{name}: {stmt}",
                median(samples[name]),
                "ns/read",
                samples=rounds,
                kind=kind,
                detail={"loops_per_round": numbers[name], "rounds_ns": samples[name]},
            )
        )
    for name in ("current", "get(key)"):
        result.check(Check.at_most(f"{name} / held model", ratios(name, "held model"), 3.0))
        result.check(Check.at_least(f"dynaconf / {name}", ratios("dynaconf", name), 10.0))
        result.check(
            Check(
                f"pydantic-settings / {name}",
                ratios("pydantic-settings", name),
                "reported",
                None,
            )
        )
    result.facts["timeit_loop_overhead_ns"] = median(samples["empty loop"])
    result.facts["note"] = (
        "per-read figures include timeit's loop overhead (see 'empty loop'), as the "
        "issue's baselines do"
    )
