"""Response-cache policy of an LLM gateway (namespace ``cache``, a singleton).

The policy only: whether responses are cached, where, for how long, and which request
parameters make two requests "the same". Hit rates and cache contents are runtime state
and are not kept here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from ..manager import ConfigurationManager
from ._rules import Loc, refuse

__all__ = ["CacheBackend", "CacheConfig", "CacheConfigurationManager"]

ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Seconds = Annotated[int, Field(gt=0, le=31_536_000)]  # at most a year


class CacheBackend(StrEnum):
    MEMORY = "memory"
    REDIS = "redis"


class CacheConfig(BaseModel):
    """How the gateway caches model responses.

    Attributes:
        enabled: master switch; when off, no response is cached, whatever the model.
        backend: ``memory`` (per instance) or ``redis`` (shared by the fleet).
        redis_url: where the ``redis`` backend lives; required for it. A secret, because
            such URLs carry passwords.
        key_prefix: prefix of every cache key in a shared backend.
        default_ttl_seconds: how long a response stays cached unless the model has its own.
        max_entries: bound on cached responses (per instance for ``memory``).
        max_item_bytes: responses larger than this are not cached.
        ttl_by_model: per-model TTL overrides, keyed by the requested model (alias).
        excluded_models: models whose responses are never cached.
        key_parameters: request parameters that form the cache key; must include
            ``model`` so two models never share an entry.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    backend: CacheBackend = CacheBackend.MEMORY
    redis_url: SecretStr | None = None
    key_prefix: str = Field(default="confman:cache:", max_length=100)
    default_ttl_seconds: Seconds = 300
    max_entries: int = Field(default=10_000, gt=0)
    max_item_bytes: int = Field(default=1_048_576, gt=0)
    ttl_by_model: dict[ModelName, Seconds] = Field(default_factory=dict)
    excluded_models: list[ModelName] = Field(default_factory=list)
    key_parameters: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=lambda: ["model", "messages", "temperature", "max_tokens"], min_length=1
    )

    @model_validator(mode="after")
    def _consistent(self) -> CacheConfig:
        problems: list[tuple[Loc, str]] = []
        if self.backend is CacheBackend.REDIS and self.redis_url is None:
            problems.append((("redis_url",), "backend 'redis' needs a redis_url"))
        if self.redis_url is not None and not self.redis_url.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            # The value is a secret: say what is wrong without echoing it.
            problems.append((("redis_url",), "must start with redis://, rediss:// or unix://"))
        if "model" not in self.key_parameters:
            problems.append(
                (("key_parameters",), "must include 'model', or two models would share entries")
            )
        for model in sorted(set(self.excluded_models) & set(self.ttl_by_model)):
            problems.append(
                (("ttl_by_model", model), f"model {model!r} is also in excluded_models")
            )
        if problems:
            raise refuse(type(self).__name__, problems)
        return self

    def ttl_for(self, model: str) -> int | None:
        """Seconds to cache a response of ``model``; ``None``: do not cache it."""
        if not self.enabled or model in self.excluded_models:
            return None
        return self.ttl_by_model.get(model, self.default_ttl_seconds)


class CacheConfigurationManager(ConfigurationManager[CacheConfig]):
    """The gateway's response-cache policy: ``hub.manager(CacheConfigurationManager)``."""

    namespace = "cache"
    model = CacheConfig
    keyed = False
