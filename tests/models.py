"""Small managers used across the core tests: one singleton, one collection."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from confman import ConfigurationManager


class Limits(BaseModel):
    rpm: int = Field(default=60, gt=0)
    burst: int = 10


class Flags(BaseModel):
    enabled: bool = False
    ratio: float = Field(default=0.5, ge=0, le=1)
    name: str = "basic"
    limits: Limits = Field(default_factory=Limits)
    tags: list[str] = Field(default_factory=list)
    token: SecretStr | None = None


class FlagsManager(ConfigurationManager[Flags]):
    namespace = "flags"
    model = Flags
    keyed = False


class Item(BaseModel):
    title: str
    weight: int = Field(default=1, gt=0)
    password: SecretStr | None = None


class ItemsManager(ConfigurationManager[Item]):
    namespace = "items"
    model = Item
    keyed = True


class Counter(BaseModel):
    value: int = 0


class CounterManager(ConfigurationManager[Counter]):
    namespace = "counter"
    model = Counter
    keyed = False


ALL = [FlagsManager, ItemsManager, CounterManager]
