"""The process environment: the highest layer."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..change import Layer
from .base import OverrideSource

__all__ = ["EnvironmentSource"]


class EnvironmentSource(OverrideSource):
    """Variables of the process environment.

    Args:
        env: the mapping to read; ``os.environ`` when ``None``. Tests pass their own
            mapping so they never depend on, or leak into, the real environment.
        prefix: see `OverrideSource`.
    """

    layer = Layer.ENVIRONMENT

    def __init__(self, env: Mapping[str, str] | None = None, *, prefix: str = "CONFMAN_") -> None:
        super().__init__(prefix=prefix)
        # A snapshot: overrides are read at start-up, like every twelve-factor setting.
        self._env = dict(os.environ if env is None else env)

    def variables(self) -> Mapping[str, str]:
        return self._env

    def describe(self, variable: str) -> str:
        return f"environment variable {variable}"
