"""One ``.env``-style file: ``.env`` and ``local.env`` are two of these."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from ..change import Layer
from .base import OverrideSource

__all__ = ["DotEnvSource"]


class DotEnvSource(OverrideSource):
    """Variables from one env file, parsed by python-dotenv.

    Args:
        path: the file; a missing file is simply empty, so the defaults ``.env`` and
            ``local.env`` cost nothing where they do not exist.
        prefix: see `OverrideSource`.
    """

    layer = Layer.ENV_FILE

    def __init__(self, path: str | Path, *, prefix: str = "CONFMAN_") -> None:
        super().__init__(prefix=prefix)
        self.path = Path(path)
        values = dotenv_values(self.path) if self.path.is_file() else {}
        self._values = {k: v for k, v in values.items() if v is not None}

    def variables(self) -> Mapping[str, str]:
        return self._values

    def describe(self, variable: str) -> str:
        return f"{variable} in {self.path}"
