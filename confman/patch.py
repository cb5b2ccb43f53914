"""Plain-JSON document helpers: merge patches, leaf paths and field-level diffs.

Documents are JSON objects. A patch follows JSON Merge Patch (RFC 7386): objects merge
recursively, ``null`` removes a member (so the field falls back to its default), and
any other value, lists included, replaces what was there.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "changed_paths",
    "diff_patch",
    "leaf_items",
    "merge_patch",
    "nul_paths",
    "overlay",
    "remove_paths",
    "restrict",
]

Document = dict[str, Any]


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> Document:
    """Return ``target`` with ``patch`` applied (RFC 7386); neither input is changed."""
    # One deep copy of the target, then the patch applied in place: copying again at
    # every level the patch descends would cost the document's size once per level.
    result: Document = _copy(dict(target))
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
            target[name] = _copy(value)


def diff_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> Document:
    """The merge patch that turns ``old`` into ``new``: ``merge_patch(old, result) ==
    new`` for documents without nulls. One walk of both (depth is bounded by `Limits`
    before any document gets here)."""
    patch: Document = {}
    for name, value in new.items():
        before = old.get(name, _MISSING)
        if before is value or before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping) and value:
            patch[name] = diff_patch(before, value)
        else:
            patch[name] = _copy(value)
    for name in old.keys() - new.keys():
        patch[name] = None
    return patch


def restrict(full: Mapping[str, Any], shape: Mapping[str, Any]) -> Document:
    """The members of ``full`` at the paths ``shape`` has (``shape``'s own value where
    ``full`` lacks one): an overlay's fields, taken from the validated whole."""
    result: Document = {}
    for name, value in shape.items():
        have = full.get(name, _MISSING)
        if isinstance(value, Mapping) and value and isinstance(have, Mapping):
            result[name] = restrict(have, value)
        else:
            result[name] = value if have is _MISSING else have
    return result


def remove_paths(doc: Mapping[str, Any], paths: Iterator[str] | list[str]) -> Document:
    """``doc`` without the members at the dotted ``paths`` (and objects left empty)."""
    result: Document = _copy(dict(doc))
    for path in paths:
        parts = path.split(".")
        trail: list[tuple[Document, str]] = []
        at: Any = result
        for part in parts[:-1]:
            below = at.get(part) if isinstance(at, dict) else None
            if not isinstance(below, dict):
                break
            trail.append((at, part))
            at = below
        else:
            if isinstance(at, dict):
                at.pop(parts[-1], None)
                for parent, part in reversed(trail):  # drop objects the removal emptied
                    if parent[part]:
                        break
                    del parent[part]
    return result


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
_ATOMS = frozenset({str, int, float, bool, type(None)})


def _copy(value: Any) -> Any:
    """``copy.deepcopy`` at a fraction of its cost for what documents are made of:
    a document is a tree (no memo needed), and its leaves are immutable. Anything else
    is deep-copied as before."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is dict:
        return {name: _copy(member) for name, member in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    return copy.deepcopy(value)


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
