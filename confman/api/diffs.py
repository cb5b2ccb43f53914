"""Field-level differences of two documents, as history, dry runs and events show them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from confman.patch import leaf_items

from . import models

__all__ = ["diff"]


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[models.Diff]:
    """Leaf-level differences of two (masked) documents, by dotted path.

    Both documents are walked together, once (no recursion), so the cost is linear in
    their size, plus sorting what differs: equal members are settled by one comparison.
    An object on one side and a value on the other is the object's leaves removed (or
    added) and the value added (or removed); an empty object that gains or loses members
    is those members.
    """
    found: list[tuple[str, Literal["added", "removed", "changed"], Any, Any]] = []
    stack: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = [
        ("", before or {}, after or {})
    ]
    while stack:
        prefix, old, new = stack.pop()
        for name in old.keys() | new.keys():
            a, b = old.get(name, _ABSENT), new.get(name, _ABSENT)
            if a is b or (a is not _ABSENT and b is not _ABSENT and a == b):
                continue
            path = f"{prefix}{name}"
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                stack.append((path + ".", a, b))
            elif _is_leaf(a) and _is_leaf(b) and a is not _ABSENT and b is not _ABSENT:
                found.append((path, "changed", a, b))
            else:
                if a is not _ABSENT:
                    found.extend((p, "removed", v, None) for p, v in _leaves(path, a))
                if b is not _ABSENT:
                    found.extend((p, "added", None, v) for p, v in _leaves(path, b))
    found.sort(key=lambda d: d[0])
    return [models.Diff(path=p, change=c, before=a, after=b) for p, c, a, b in found]


_ABSENT: Any = object()


def _is_leaf(value: Any) -> bool:
    """A value `leaf_items` yields itself: anything but a non-empty object."""
    return not (isinstance(value, Mapping) and value)


def _leaves(path: str, value: Any) -> list[tuple[str, Any]]:
    return list(leaf_items(value, path + ".")) if not _is_leaf(value) else [(path, value)]
