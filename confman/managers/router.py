"""Routing policy of an LLM gateway (namespace ``router``, a singleton).

Clients ask for a model *alias* (``"gpt-4o"``, ``"chat-default"``); the router maps it to
*deployments* (a provider and the provider's model name), picks one by the *strategy*,
retries with backoff, and falls back to other aliases. Latency and spend figures the
strategies use are runtime state: the gateway passes them to `RouterConfig.pick`.

Rules: weights are positive, every alias has a deployment, fallbacks name existing aliases
and form no cycle (the error names it: ``a -> b -> a``), and every deployment names an
existing, enabled model provider that offers the deployed model (cross-manager).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..exceptions import FieldError, ValidationFailed
from ..manager import ConfigurationManager
from ._rules import Loc, refuse
from .model_provider import ModelProvider, ModelProviderConfigurationManager

if TYPE_CHECKING:
    from ..hub import ConfigHub

__all__ = [
    "Deployment",
    "ModelAlias",
    "RetryPolicy",
    "RouterConfig",
    "RouterConfigurationManager",
    "Strategy",
    "find_cycle",
]

# What the model provider rule's messages tell of, besides the router itself.
_PROVIDERS = frozenset({ModelProviderConfigurationManager.namespace})

AliasName = Annotated[str, StringConstraints(pattern=r"^\S{1,200}$")]


class Strategy(StrEnum):
    SIMPLE = "simple"  # the first deployment
    ROUND_ROBIN = "round_robin"  # each deployment in turn
    WEIGHTED = "weighted"  # at random, in proportion to weight
    LEAST_COST = "least_cost"  # the cheapest per token
    LEAST_LATENCY = "least_latency"  # the fastest lately (figures from the gateway)
    PRIORITY = "priority"  # the lowest priority number


class Deployment(BaseModel):
    """One place an alias can be served: a provider and that provider's model name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    weight: float = Field(default=1.0, gt=0)
    priority: int = Field(default=0, ge=0)
    input_cost_per_mtok: float | None = Field(default=None, ge=0)
    output_cost_per_mtok: float | None = Field(default=None, ge=0)

    @property
    def target(self) -> str:
        """``provider/model``, the key gateways use for runtime figures."""
        return f"{self.provider}/{self.model}"

    @property
    def cost(self) -> float:
        """Input plus output price per million tokens; unknown prices sort last."""
        if self.input_cost_per_mtok is None and self.output_cost_per_mtok is None:
            return float("inf")
        return (self.input_cost_per_mtok or 0.0) + (self.output_cost_per_mtok or 0.0)


class ModelAlias(BaseModel):
    """A model name clients use, its deployments and the aliases to fall back to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deployments: list[Deployment] = Field(default_factory=list)
    fallbacks: list[AliasName] = Field(default_factory=list)


class RetryPolicy(BaseModel):
    """Retries of one deployment before the next one (and then the fallbacks) is tried."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_retries: int = Field(default=2, ge=0, le=10)
    backoff_initial_seconds: float = Field(default=0.5, gt=0, le=60)
    backoff_multiplier: float = Field(default=2.0, ge=1, le=10)
    backoff_max_seconds: float = Field(default=8.0, gt=0, le=300)
    retry_on_status: list[Annotated[int, Field(ge=400, le=599)]] = Field(
        default_factory=lambda: [408, 429, 500, 502, 503, 504]
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), without jitter."""
        raw = self.backoff_initial_seconds * self.backoff_multiplier ** max(0, attempt - 1)
        return float(min(raw, self.backoff_max_seconds))


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """A cycle in ``graph`` as a path that returns to its start (``[a, b, a]``), or None.

    Deterministic: nodes and edges are visited in sorted / listed order.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


class RouterConfig(BaseModel):
    """The gateway's routing policy.

    Attributes:
        strategy: how one deployment of an alias is chosen.
        aliases: alias name to its deployments and fallbacks.
        retry: retries with exponential backoff.
        request_timeout_seconds: a whole request, retries included.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy = Strategy.SIMPLE
    aliases: dict[AliasName, ModelAlias] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    request_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _graph(self) -> RouterConfig:
        problems: list[tuple[Loc, str]] = []
        for name, spec in self.aliases.items():
            if not spec.deployments:
                problems.append(
                    (("aliases", name, "deployments"), f"alias {name!r} has no deployment")
                )
            for target in spec.fallbacks:
                if target == name:
                    problems.append(
                        (("aliases", name, "fallbacks"), f"alias {name!r} falls back to itself")
                    )
                elif target not in self.aliases:
                    problems.append((("aliases", name, "fallbacks"), f"unknown alias {target!r}"))
        if not problems:
            cycle = find_cycle({n: list(s.fallbacks) for n, s in self.aliases.items()})
            if cycle is not None:
                problems.append(
                    (("aliases", cycle[0], "fallbacks"), f"fallback cycle: {' -> '.join(cycle)}")
                )
        if self.retry.backoff_max_seconds < self.retry.backoff_initial_seconds:
            problems.append((("retry", "backoff_max_seconds"), "is below backoff_initial_seconds"))
        if problems:
            raise refuse(type(self).__name__, problems)
        return self

    def fallback_chain(self, alias: str) -> list[str]:
        """``alias``, then its fallbacks depth first, each alias once."""
        seen: list[str] = []

        def walk(name: str) -> None:
            if name in seen or name not in self.aliases:
                return
            seen.append(name)
            for nxt in self.aliases[name].fallbacks:
                walk(nxt)

        walk(alias)
        return seen

    def pick(
        self,
        alias: str,
        *,
        usable: Callable[[Deployment], bool] = lambda _d: True,
        turn: int = 0,
        latency_ms: Mapping[str, float] | None = None,
        rng: random.Random | None = None,
    ) -> Deployment | None:
        """The deployment of ``alias`` the strategy chooses, or None if none is usable.

        Args:
            usable: filter applied first (e.g. "its provider is enabled").
            turn: the gateway's request counter for ``alias`` (``round_robin``).
            latency_ms: recent latency by `Deployment.target` (``least_latency``);
                unknown targets are tried first, so they get measured.
            rng: random source for ``weighted``.
        """
        spec = self.aliases.get(alias)
        candidates = [d for d in spec.deployments if usable(d)] if spec else []
        if not candidates:
            return None
        match self.strategy:
            case Strategy.SIMPLE:
                return candidates[0]
            case Strategy.ROUND_ROBIN:
                return candidates[turn % len(candidates)]
            case Strategy.WEIGHTED:
                chooser = rng or random.Random()
                return chooser.choices(candidates, weights=[d.weight for d in candidates])[0]
            case Strategy.LEAST_COST:
                return min(candidates, key=lambda d: d.cost)
            case Strategy.LEAST_LATENCY:
                seen = latency_ms or {}
                return min(candidates, key=lambda d: seen.get(d.target, 0.0))
            case Strategy.PRIORITY:
                return min(candidates, key=lambda d: d.priority)
        raise AssertionError(f"unknown strategy {self.strategy}")


class RouterConfigurationManager(ConfigurationManager[RouterConfig]):
    """The gateway's routing policy: ``hub.manager(RouterConfigurationManager).current``.

    Requires `ModelProviderConfigurationManager` (loaded first): every deployment must
    name an existing, enabled provider that offers the deployed model. Writes first catch
    up with the change log, so they are checked against the newest providers.
    """

    namespace = "router"
    model = RouterConfig
    keyed = False
    requires = (ModelProviderConfigurationManager,)

    def __init__(self, hub: ConfigHub) -> None:
        super().__init__(hub)
        # What `_prepare_rules` read for a write to an environment this hub does not hold.
        self._providers_in: dict[str, dict[str, ModelProvider]] = {}

    def validate_write(self, key: str, value: RouterConfig | None) -> None:
        if value is None:
            return  # back to defaults: no aliases, nothing to check
        elsewhere = self.rule_environment()
        find: Callable[[str], ModelProvider | None]
        if elsewhere is not None:  # judged by that environment's providers
            find = self._providers_in.get(elsewhere, {}).get
        else:
            find = self.hub.manager(ModelProviderConfigurationManager).find
        errors: list[FieldError] = []
        for name, spec in value.aliases.items():
            for i, d in enumerate(spec.deployments):
                path = f"aliases.{name}.deployments.{i}"
                provider = find(d.provider)
                if provider is None:
                    where, why = f"{path}.provider", f"no model provider {d.provider!r}"
                elif not provider.enabled:
                    where, why = f"{path}.provider", f"model provider {d.provider!r} is disabled"
                elif not provider.offers(d.model):
                    where = f"{path}.model"
                    why = f"model provider {d.provider!r} does not offer {d.model!r}"
                else:
                    continue
                # Whoever may not read the providers learns only that this one will not
                # do: the same words whether it is missing, disabled or lacks the model.
                neutral = FieldError(
                    f"{path}.provider",
                    f"model provider {d.provider!r} with model {d.model!r} is not available "
                    "to this router",
                )
                errors.append(FieldError(where, why, concerns=_PROVIDERS, withheld=neutral))
        if errors:
            raise ValidationFailed(self.namespace, key, errors, source="model provider rule")

    async def _write(self, key: str, build: Any, **options: Any) -> Any:
        await self.hub.catch_up()  # see the newest providers before checking against them
        return await super()._write(key, build, **options)

    async def _prepare_rules(self, environment: str) -> None:
        providers = self.hub.manager(ModelProviderConfigurationManager)
        self._providers_in = {environment: await providers.values_in(environment)}
