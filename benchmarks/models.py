"""Managers the benchmarks use besides confman's own: a keyed counter and a keyed item."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from confman import ConfigurationManager


class Counter(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: int = 0


class CountersManager(ConfigurationManager[Counter]):
    """Counters keyed by name: the lost-update check of B3."""

    namespace = "bench_counters"
    model = Counter
    keyed = True


class Item(BaseModel):
    """A document of typical size: a few scalars, a list, a nested dict and a secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    weight: int = Field(default=1, gt=0)
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    limits: dict[str, int] = Field(default_factory=dict)
    token: SecretStr | None = None


class ItemsManager(ConfigurationManager[Item]):
    """A collection keyed by item id: catch-up (B6) and start-up."""

    namespace = "bench_items"
    model = Item
    keyed = True


def item_document(i: int, version: int = 1) -> dict[str, object]:
    """The plain (secrets revealed) document of item ``i`` at ``version``."""
    return {
        "name": f"item-{i}",
        "weight": version,
        "enabled": i % 7 != 0,
        "tags": ["bench", f"group-{i % 16}"],
        "limits": {"rpm": 600 + i % 100, "tpm": 100_000},
        "token": f"sk-bench-{i:08d}-{version}",
    }
