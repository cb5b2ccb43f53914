"""Response-cache policy of an LLM gateway (namespace ``cache``, a singleton)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ..manager import ConfigurationManager

__all__ = ["CacheBackend", "CacheConfig", "CacheConfigurationManager"]


class CacheBackend(StrEnum):
    MEMORY = "memory"
    REDIS = "redis"


class CacheConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    backend: CacheBackend = CacheBackend.MEMORY
    default_ttl_seconds: int = Field(default=300, gt=0)
    max_entries: int = Field(default=10_000, gt=0)
    max_item_bytes: int = Field(default=1_048_576, gt=0)
    ttl_by_model: dict[str, int] = Field(default_factory=dict)
    excluded_models: list[str] = Field(default_factory=list)
    key_parameters: list[str] = Field(
        default_factory=lambda: ["model", "messages", "temperature", "max_tokens"]
    )


class CacheConfigurationManager(ConfigurationManager[CacheConfig]):
    namespace = "cache"
    model = CacheConfig
    keyed = False
