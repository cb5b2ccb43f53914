"""Plain-JSON document helpers: merge patches, leaf paths and field-level diffs.

Documents are JSON objects. A patch follows JSON Merge Patch (RFC 7386): objects merge
recursively, ``null`` removes a member (so the field falls back to its default), and
any other value, lists included, replaces what was there.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["changed_paths", "leaf_items", "merge_patch", "nul_paths", "overlay"]

Document = dict[str, Any]


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> Document:
    """Return ``target`` with ``patch`` applied (RFC 7386); neither input is changed."""
    # One deep copy of the target, then the patch applied in place: copying again at
    # every level the patch descends would cost the document's size once per level.
    result: Document = copy.deepcopy(dict(target))
    _apply(result, patch)
    return result


def _apply(target: Document, patch: Mapping[str, Any]) -> None:
    for name, value in patch.items():
        if value is None:
            target.pop(name, None)
        elif isinstance(value, Mapping):
            base = target.get(name)
            if not isinstance(base, dict):
                base = target[name] = dict(base) if isinstance(base, Mapping) else {}
            _apply(base, value)
        else:
            target[name] = copy.deepcopy(value)


def overlay(base: Mapping[str, Any], top: Mapping[str, Any]) -> Document:
    """Deep-merge ``top`` over ``base`` where ``None`` is a value, not a removal.

    Layers are overlaid this way: an override that sets a field to null means null.
    """
    result: Document = dict(base)
    for name, value in top.items():
        below = result.get(name)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            result[name] = overlay(below, value)
        else:
            result[name] = value
    return result


def leaf_items(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted path, value)`` for every non-object value; empty objects are leaves.

    In document order, without recursion (a stack of member iterators), so any depth
    is walked in time linear in the document's size.
    """
    stack: list[tuple[str, Iterator[tuple[str, Any]]]] = [(prefix, iter(doc.items()))]
    while stack:
        base, members = stack[-1]
        for name, value in members:
            path = f"{base}{name}"
            if isinstance(value, Mapping) and value:
                stack.append((path + ".", iter(value.items())))
                break
            yield path, value
        else:
            stack.pop()


def changed_paths(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Dotted paths whose value differs between two documents, sorted.

    A member present on one side only counts as changed at its own path; nested objects
    are compared member by member so the paths name the smallest changed field.
    """
    changed: list[str] = []
    _diff(old or {}, new or {}, "", changed)
    return sorted(changed)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str, out: list[str]) -> None:
    # Every change and every catch-up row pays for this diff: equal members (most of
    # them) are settled by one comparison, before any path is built or any (slow, ABC)
    # isinstance check runs. Equal mappings hold no changed path either. `is` first, as
    # containers compare their members: one NaN object is equal to itself at any depth.
    for name in old.keys() | new.keys():
        a, b = old.get(name, _MISSING), new.get(name, _MISSING)
        if a is _MISSING or b is _MISSING:
            out.append(f"{prefix}{name}")
        elif a is b or a == b:
            continue
        elif isinstance(a, Mapping) and isinstance(b, Mapping):
            _diff(a, b, f"{prefix}{name}.", out)
        else:
            out.append(f"{prefix}{name}")


_MISSING: Any = object()


def nul_paths(value: Any, prefix: str = "") -> list[str]:
    """Paths of strings (values or member names) holding a NUL character.

    PostgreSQL cannot store one in text or JSON and SQLite can, so confman refuses them
    everywhere: a document must mean the same on every database.
    """
    found: list[str] = []
    if isinstance(value, str):
        if "\x00" in value:
            found.append(prefix.rstrip("."))
    elif isinstance(value, Mapping):
        for name, member in value.items():
            if "\x00" in str(name):
                found.append(f"{prefix}{name}".replace("\x00", "\\0"))
            else:
                found.extend(nul_paths(member, f"{prefix}{name}."))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found.extend(nul_paths(item, f"{prefix}{index}."))
    return found
