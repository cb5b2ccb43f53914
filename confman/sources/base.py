"""The abstract override source."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..change import Layer

__all__ = ["Override", "OverrideSource", "parse_value"]


@dataclass(frozen=True, slots=True)
class Override:
    """One overridden field of one document.

    ``key`` is ``None`` for a singleton namespace. ``origin`` names the variable, and for
    a file also the file, so an error can point at exactly what to fix.
    """

    layer: Layer
    origin: str
    variable: str
    key: str | None
    path: tuple[str, ...]
    value: Any
    raw: str | None = None  # the text as written, for fields that take text

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def as_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {self.path[-1]: self.value}
        for part in reversed(self.path[:-1]):
            doc = {part: doc}
        return doc


def parse_value(raw: str) -> Any:
    """JSON where the text parses as JSON, the text itself otherwise."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class OverrideSource(ABC):
    """A set of ``CONFMAN_*`` variables that override stored documents.

    Variables are named ``<prefix><NAMESPACE>__<FIELD>[__<SUBFIELD>...]``, and for keyed
    (collection) namespaces ``<prefix><NAMESPACE>__<KEY>__<FIELD>...``. Names are matched
    case-insensitively and fields are lower-cased.

    Args:
        prefix: the variable-name prefix; ``"CONFMAN_"`` unless you run two
            independent confman deployments in one environment.
    """

    layer: ClassVar[Layer]

    def __init__(self, *, prefix: str = "CONFMAN_") -> None:
        self.prefix = prefix.upper()

    @abstractmethod
    def variables(self) -> Mapping[str, str]:
        """All variables this source holds, name to raw text."""

    @abstractmethod
    def describe(self, variable: str) -> str:
        """How an error should name ``variable`` (e.g. with its file)."""

    def overrides(self, namespace: str, *, keyed: bool) -> list[Override]:
        head = f"{self.prefix}{namespace.upper()}__"
        found: list[Override] = []
        for name, raw in self.variables().items():
            if not name.upper().startswith(head):
                continue
            parts = [p.lower() for p in name[len(head) :].split("__")]
            key = parts.pop(0) if keyed and parts else None
            if not parts or not all(parts):
                continue
            found.append(
                Override(
                    self.layer, self.describe(name), name, key, tuple(parts), parse_value(raw), raw
                )
            )
        return found
