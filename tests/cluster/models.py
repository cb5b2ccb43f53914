"""Managers used by the multi-process tests (importable by worker processes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

from confman import ConfigurationManager


class Counter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    value: int = 0
    note: str = ""
    token: SecretStr | None = None


class CountersManager(ConfigurationManager[Counter]):
    namespace = "counters"
    model = Counter
    keyed = True


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    low: int = 0
    high: int = 100

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


class LimitsManager(ConfigurationManager[Limits]):
    namespace = "limits"
    model = Limits
    keyed = False


MANAGERS: list[type[ConfigurationManager[object]]] = [CountersManager, LimitsManager]  # type: ignore[list-item]
