"""Merge patches (RFC 7386), overlays and field-level diffs."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from confman.patch import changed_paths, leaf_items, merge_patch, overlay

json_leaf = st.one_of(st.booleans(), st.integers(), st.text(max_size=5))
json_doc = st.recursive(
    st.dictionaries(st.text("abc", min_size=1, max_size=2), json_leaf, max_size=3),
    lambda inner: st.dictionaries(
        st.text("abc", min_size=1, max_size=2), st.one_of(json_leaf, inner), max_size=3
    ),
    max_leaves=10,
)


def test_merge_patch_rfc7386_examples() -> None:
    # The examples of RFC 7386, appendix A, that apply to objects.
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": "b", "b": "c"}, {"a": None}) == {"b": "c"}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


def test_merge_patch_does_not_mutate_inputs() -> None:
    target: dict[str, Any] = {"a": {"b": [1]}}
    patch: dict[str, Any] = {"a": {"c": 2}}
    merge_patch(target, patch)["a"]["b"].append(9)
    assert target == {"a": {"b": [1]}}
    assert patch == {"a": {"c": 2}}


def test_overlay_keeps_null_as_a_value() -> None:
    assert overlay({"a": 1, "b": {"c": 1, "d": 2}}, {"a": None, "b": {"c": 3}}) == {
        "a": None,
        "b": {"c": 3, "d": 2},
    }


def test_changed_paths_names_the_smallest_changed_field() -> None:
    old = {"a": 1, "n": {"x": 1, "y": 2}, "gone": True}
    new = {"a": 1, "n": {"x": 5, "y": 2}, "new": [1]}
    assert changed_paths(old, new) == ["gone", "n.x", "new"]
    assert changed_paths(None, {"a": 1}) == ["a"]
    assert changed_paths(old, old) == []
    nan = float("nan")  # one object is unchanged at any depth; two NaNs differ
    assert changed_paths({"x": {"y": nan}, "z": nan}, {"x": {"y": nan}, "z": nan}) == []
    assert changed_paths({"x": {"y": nan}}, {"x": {"y": float("nan")}}) == ["x.y"]


def leaf_paths(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every path to a non-mapping member (an empty mapping counts as a leaf)."""
    found: dict[str, Any] = {}
    for name, value in doc.items():
        if isinstance(value, dict) and value:
            found.update(leaf_paths(value, f"{prefix}{name}."))
        else:
            found[f"{prefix}{name}"] = value
    return found


@given(json_doc, json_doc)
def test_changed_paths_are_the_smallest_paths_that_differ(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    changed = changed_paths(old, new)
    assert changed == sorted(set(changed))
    assert (changed == []) == (old == new)
    old_leaves, new_leaves = leaf_paths(old), leaf_paths(new)
    for path in old_leaves.keys() | new_leaves.keys():  # a leaf that differs is named,
        if old_leaves.get(path, _ABSENT) != new_leaves.get(path, _ABSENT):  # or its kin
            assert any(_kin(path, c) for c in changed), path
    for path in changed:  # and every named path differs, and is the smallest that does
        a, b = _at(old, path), _at(new, path)
        assert a != b, path
        assert not (isinstance(a, dict) and isinstance(b, dict)), path


_ABSENT: Any = object()


def _kin(a: str, b: str) -> bool:
    """One path is the other, or inside it."""
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


def _at(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _ABSENT
        doc = doc[part]
    return doc


@given(json_doc, json_doc)
def test_patch_then_diff_is_consistent(target: dict[str, Any], patch: dict[str, Any]) -> None:
    result = merge_patch(target, patch)
    # Every leaf of the patch is in the result, and nothing changed outside the patch.
    for path, value in leaf_items(patch):
        if value is not None and value != {}:
            node: Any = result
            for part in path.split("."):
                node = node[part]
            assert node == value
    touched = {p for p, _ in leaf_items(patch)}
    for path in changed_paths(target, result):
        assert any(
            path == t or path.startswith(t + ".") or t.startswith(path + ".") for t in touched
        )


@given(json_doc)
def test_patch_is_idempotent(doc: dict[str, Any]) -> None:
    once = merge_patch({"z": 1}, doc)
    assert merge_patch(once, doc) == once
