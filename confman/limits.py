"""How big and how deep a document may be, and how big a request body.

Every per-document computation in confman is linear in the document's size, so these
limits bound how long one document can hold the event loop, not whether the server
survives it. They are checked iteratively, before anything recursive (a merge patch, a
copy, pydantic) touches the document: a document nested past Python's recursion limit is
refused with a field path instead of failing with ``RecursionError``.

- `Limits`: the library's limits, given to ``ConfigHub.connect(limits=...)``; every
  manager write and `~confman.ConfigurationManager.validate` enforces them.
- ``max_body_bytes``: the HTTP request body limit of ``confman serve``
  (``create_app(max_body_bytes=...)``), answered with 413.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import FieldError

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_DOCUMENT_BYTES",
    "DEFAULT_MAX_SNAPSHOT_DOCUMENTS",
    "MAX_DEPTH_CEILING",
    "Limits",
]

DEFAULT_MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
"""2 MiB of compact JSON: far above any real configuration document, and what a linear
pass over it costs stays well under a second."""
DEFAULT_MAX_DEPTH = 32
"""Levels of nested objects and lists, the top-level object being level 1."""
MAX_DEPTH_CEILING = 200
"""The deepest ``max_depth`` may be: what Python's recursion limit leaves room for."""
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""A request body may carry a whole document with generous whitespace."""
DEFAULT_MAX_SNAPSHOT_DOCUMENTS = 10_000
"""A bulk read (``GET /api/v1/snapshot``) is built in memory, each document with its
provenance: past this many documents it is refused."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The size and nesting limits of documents.

    Args:
        max_document_bytes: largest document, as compact UTF-8 JSON of what would be
            stored (secrets in plain text, before encryption); also bounds a patch.
        max_depth: deepest nesting of objects and lists; the top-level object is 1.

    Raises:
        ValueError: a limit below 1.
    """

    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        for name in ("max_document_bytes", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if self.max_depth > MAX_DEPTH_CEILING:
            # pydantic, copying and JSON encoding recurse once or more per level.
            raise ValueError(
                f"Limits.max_depth must be at most {MAX_DEPTH_CEILING}, not {self.max_depth}"
            )

    def check(self, doc: Any) -> FieldError | None:
        """What is wrong with ``doc`` under these limits, or ``None``.

        The depth is checked first, without recursion; only a document within the depth
        limit is measured (by the C JSON encoder, which recurses).
        """
        too_deep = _too_deep(doc, self.max_depth)
        if too_deep is not None:
            return FieldError(
                too_deep, f"nests deeper than {self.max_depth} levels (the depth limit)"
            )
        size = _json_bytes(doc)
        if size > self.max_document_bytes:
            return FieldError(
                "",
                f"the document is {size:,} bytes of JSON; the limit is "
                f"{self.max_document_bytes:,} bytes",
            )
        return None


DEFAULT_LIMITS = Limits()


def _too_deep(doc: Any, max_depth: int) -> str | None:
    """The dotted path of the first container nested past ``max_depth``, or ``None``."""
    # Depth-first with an explicit stack of (container, its path, its depth).
    stack: list[tuple[Any, tuple[str, ...], int]] = [(doc, (), 1)]
    while stack:
        node, path, depth = stack.pop()
        if depth > max_depth:
            return ".".join(path)
        members = node.items() if isinstance(node, Mapping) else enumerate(node)
        for name, value in members:
            if type(value) not in _SCALARS and isinstance(value, Mapping | list | tuple):
                stack.append((value, (*path, str(name)), depth + 1))
    return None


_SCALARS = frozenset({str, int, float, bool, type(None)})  # skipped without an ABC check


def _json_bytes(doc: Any) -> int:
    """Compact JSON size of ``doc`` in UTF-8 bytes."""
    if _C_ENCODE is None:
        return len(_ENCODER.encode(doc).encode())
    return len("".join(_C_ENCODE(doc, 0)).encode())


def _default(value: Any) -> Any:
    # Values a python-mode dump may hold (datetimes, SecretStr...): their text stands in.
    return str(value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_default)
# What `_ENCODER.encode` builds on every call (the C encoder), built once: every write
# measures its patch and its document, and for a small one the building was half the
# cost. No circular-reference markers: `check` measures only what passed the depth
# check, which a cycle cannot; without them the encoder holds no state between calls.
_MAKE_ENCODER: Callable[..., Callable[[Any, int], list[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)  # not in typeshed; None where the C accelerator is missing
_C_ENCODE = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(
        None, _default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
)
