"""RouterConfigurationManager: graph rules, cross-manager rules, strategies, streams."""

from __future__ import annotations

import random
from typing import Any

import pytest

from confman import ConfigHub, ValidationFailed
from confman.bus import LocalBus
from confman.managers import (
    Deployment,
    ModelProviderConfigurationManager,
    RetryPolicy,
    RouterConfig,
    RouterConfigurationManager,
    Strategy,
)
from confman.managers.router import find_cycle
from confman.testing import record_changes

from .conftest import assert_nothing_written, connect_gateway

OPENAI: dict[str, Any] = {"type": "openai", "api_key": "sk-router-test-key", "models": []}


def dep(provider: str = "p1", model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, **extra}


def aliases(**specs: Any) -> dict[str, Any]:
    return {"aliases": specs}


@pytest.fixture
async def router(ghub: ConfigHub) -> RouterConfigurationManager:
    providers = ghub.manager(ModelProviderConfigurationManager)
    await providers.create("p1", OPENAI)
    await providers.create("p2", OPENAI)
    await providers.create("off", {**OPENAI, "enabled": False})
    await providers.create("narrow", {**OPENAI, "models": ["only-this"]})
    return ghub.manager(RouterConfigurationManager)


@pytest.mark.parametrize(
    ("patch", "path", "message"),
    [
        (aliases(a={"deployments": [dep(weight=0)]}), "aliases.a.deployments.0.weight",
         "greater than 0"),
        (aliases(a={"deployments": [dep(weight=-1)]}), "aliases.a.deployments.0.weight",
         "greater than 0"),
        (aliases(a={"deployments": []}), "aliases.a.deployments", "alias 'a' has no deployment"),
        (aliases(a={}), "aliases.a.deployments", "alias 'a' has no deployment"),
        (aliases(a={"deployments": [dep()], "fallbacks": ["nope"]}), "aliases.a.fallbacks",
         "unknown alias 'nope'"),
        (aliases(a={"deployments": [dep()], "fallbacks": ["a"]}), "aliases.a.fallbacks",
         "alias 'a' falls back to itself"),
        (aliases(a={"deployments": [dep()], "fallbacks": ["b"]},
                 b={"deployments": [dep()], "fallbacks": ["a"]}),
         "aliases.a.fallbacks", "fallback cycle: a -> b -> a"),
        (aliases(x={"deployments": [dep()], "fallbacks": ["b"]},
                 b={"deployments": [dep()], "fallbacks": ["c"]},
                 c={"deployments": [dep()], "fallbacks": ["d", "b"]},
                 d={"deployments": [dep()]}),
         "aliases.b.fallbacks", "fallback cycle: b -> c -> b"),
        (aliases(**{"has space": {"deployments": [dep()]}}), "aliases.has space.[key]", "pattern"),
        (aliases(a={"deployments": [dep(provider="ghost")]}), "aliases.a.deployments.0.provider",
         "no model provider 'ghost'"),
        (aliases(a={"deployments": [dep(), dep(provider="off")]}),
         "aliases.a.deployments.1.provider", "model provider 'off' is disabled"),
        (aliases(a={"deployments": [dep(provider="narrow", model="other")]}),
         "aliases.a.deployments.0.model", "model provider 'narrow' does not offer 'other'"),
        ({"strategy": "fastest"}, "strategy", "Input should be"),
        ({"request_timeout_seconds": 0}, "request_timeout_seconds", "greater than 0"),
        ({"retry": {"max_retries": -1}}, "retry.max_retries", "greater than or equal to 0"),
        ({"retry": {"backoff_initial_seconds": 10, "backoff_max_seconds": 1}},
         "retry.backoff_max_seconds", "below backoff_initial_seconds"),
        ({"retry": {"retry_on_status": [200]}}, "retry.retry_on_status.0", "greater than"),
    ],
)  # fmt: skip
async def test_each_constraint_refuses_and_writes_nothing(
    router: RouterConfigurationManager, patch: dict[str, Any], path: str, message: str
) -> None:
    seen = record_changes(router)
    with pytest.raises(ValidationFailed) as caught:
        await router.update(patch, actor="ops")
    assert path in caught.value.paths, caught.value
    assert message in str(caught.value)
    await assert_nothing_written(router, "default")
    assert router.current == RouterConfig()
    assert seen.changes == []


async def test_a_valid_router_with_fallbacks(router: RouterConfigurationManager) -> None:
    seen = record_changes(router)
    await router.update(
        aliases(
            big={
                "deployments": [dep("p1", "gpt-4o"), dep("p2", "gpt-4o", weight=3)],
                "fallbacks": ["mid", "small"],
            },
            mid={"deployments": [dep("p2", "mid")], "fallbacks": ["small"]},
            small={"deployments": [dep("narrow", "only-this")]},
        ),
        actor="ops",
        reason="launch",
    )
    current = router.current
    assert current.fallback_chain("big") == ["big", "mid", "small"]
    assert current.fallback_chain("small") == ["small"]
    assert current.fallback_chain("unknown") == []
    await router.update({"strategy": "weighted"})
    assert seen.versions() == [1, 2]
    assert seen.changes[1].changed_fields == ("strategy",)
    history = await router.history()
    assert [h.version for h in history] == [2, 1]
    assert history[1].reason == "launch"
    await router.rollback(to_version=1)
    assert router.current.strategy is Strategy.SIMPLE


async def test_router_requires_providers_and_loads_them_first(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with connect_gateway(database_url, hub_env, managers=[RouterConfigurationManager]) as h:
        assert h.manager(ModelProviderConfigurationManager) is not None


async def test_router_write_sees_a_provider_created_on_another_instance(
    database_url: str, hub_env: dict[str, str]
) -> None:
    # Two instances that do not hear each other (separate buses): the router's write
    # catches up with the change log before checking its rule.
    async with (
        connect_gateway(database_url, hub_env, bus=LocalBus("a"), catch_up_interval=3600) as a,
        connect_gateway(database_url, hub_env, bus=LocalBus("b"), catch_up_interval=3600) as b,
    ):
        await b.manager(ModelProviderConfigurationManager).create("late", OPENAI)
        assert "late" not in a.manager(ModelProviderConfigurationManager)
        await a.manager(RouterConfigurationManager).update(
            aliases(x={"deployments": [dep("late")]})
        )
        # ... and the provider's delete check sees the router written elsewhere.
        with pytest.raises(ValidationFailed, match="router aliases use it: x"):
            await b.manager(ModelProviderConfigurationManager).delete("late")


def test_find_cycle() -> None:
    assert find_cycle({}) is None
    assert find_cycle({"a": ["b"], "b": []}) is None
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]
    assert find_cycle({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}) is None


def _router(strategy: Strategy, deployments: list[dict[str, Any]]) -> RouterConfig:
    return RouterConfig.model_validate(
        {"strategy": strategy, "aliases": {"m": {"deployments": deployments}}}
    )


def test_pick_by_strategy() -> None:
    deps = [
        dep("a", "x", weight=1, priority=2, input_cost_per_mtok=5, output_cost_per_mtok=15),
        dep("b", "x", weight=1000, priority=1, input_cost_per_mtok=0.1),
        dep("c", "x", weight=1, priority=3),
    ]

    def pick(strategy: Strategy, **kw: Any) -> str | None:
        chosen = _router(strategy, deps).pick("m", **kw)
        return chosen.provider if chosen else None

    assert pick(Strategy.SIMPLE) == "a"
    assert [pick(Strategy.ROUND_ROBIN, turn=t) for t in range(4)] == ["a", "b", "c", "a"]
    rng = random.Random(7)
    picks = [pick(Strategy.WEIGHTED, rng=rng) for _ in range(200)]
    assert picks.count("b") > 180
    assert pick(Strategy.LEAST_COST) == "b"
    assert pick(Strategy.LEAST_LATENCY, latency_ms={"a/x": 900, "b/x": 300, "c/x": 500}) == "b"
    assert pick(Strategy.LEAST_LATENCY, latency_ms={"a/x": 900, "b/x": 300}) == "c"  # unmeasured
    assert pick(Strategy.PRIORITY) == "b"
    assert pick(Strategy.PRIORITY, usable=lambda d: d.provider != "b") == "a"
    assert pick(Strategy.SIMPLE, usable=lambda d: False) is None
    assert _router(Strategy.SIMPLE, deps).pick("unknown") is None


def test_retry_delay_and_deployment_helpers() -> None:
    retry = RetryPolicy(backoff_initial_seconds=0.5, backoff_multiplier=2, backoff_max_seconds=3)
    assert [retry.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    d = Deployment(provider="p", model="m")
    assert d.target == "p/m" and d.cost == float("inf")
