"""Per-document computations are linear in the document's size, and still right.

No timing is asserted. The size tests use 40,000 fields: the quadratic versions of
`diff` and `explain` (today's main) compared every path with every other, 1.6 billion
string comparisons, several minutes each, far past the guard timeout; the linear ones take
well under a second. The property tests hold the linear walks to the straightforward
pairwise definitions they replace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from confman import ConfigurationManager, FieldSource, Layer
from confman.api.documents import diff
from confman.layers import Layering, unknown_fields
from confman.patch import leaf_items, merge_patch
from confman.sources import EnvironmentSource
from confman.testing import temporary_hub

SIZE = 40_000
GUARD = pytest.mark.timeout(120)  # a hang guard, far above what the linear walks need


class Inner(BaseModel):
    a: int = 1
    more: dict[str, Any] = Field(default_factory=dict)


class Wide(BaseModel):
    inner: Inner = Field(default_factory=Inner)
    free: dict[str, Any] = Field(default_factory=dict)
    n: int = 0


class WideManager(ConfigurationManager[Wide]):
    namespace = "wide"
    model = Wide
    keyed = False


def wide(count: int, value: int = 1) -> dict[str, Any]:
    return {"free": {f"k{i}": value for i in range(count)}}


# --------------------------------------------------------------------------- references


def reference_diff(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The pairwise definition: leaves compared by path; an empty object that gained or
    lost members is those members."""
    old, new = dict(leaf_items(before)), dict(leaf_items(after))
    paths = old.keys() | new.keys()
    found: list[tuple[Any, ...]] = []
    for path in sorted(paths):
        if path in old and path in new:
            if old[path] != new[path]:
                found.append((path, "changed", old[path], new[path]))
            continue
        value = old[path] if path in old else new[path]
        if value == {} and any(p.startswith(path + ".") for p in paths):
            continue
        if path in new:
            found.append((path, "added", None, new[path]))
        else:
            found.append((path, "removed", old[path], None))
    return found


def _covers(paths: list[str], path: str) -> bool:
    return any(p == path or path.startswith(p + ".") or p.startswith(path + ".") for p in paths)


def reference_explain(
    layering: Layering[Any], key: str, value: BaseModel, stored: dict[str, Any], version: int
) -> list[FieldSource]:
    """Every shown path held against every stored path and every override."""
    stored_paths = [p for p, _ in leaf_items(stored)]
    found = layering.overrides(key)
    result = []
    for path, leaf in leaf_items(value.model_dump(mode="json")):
        setters: list[tuple[Layer, str]] = []
        if _covers(stored_paths, path):
            setters.append((Layer.DATABASE, f"base v{version}"))
        setters.extend((o.layer, o.origin) for o in found if _covers([o.dotted], path))
        if not setters:
            result.append(FieldSource(path, Layer.DEFAULT, None, leaf))
            continue
        shadows = tuple(f"{layer} ({detail})" for layer, detail in setters[:-1])
        result.append(FieldSource(path, setters[-1][0], setters[-1][1], leaf, shadows))
    return result


# --------------------------------------------------------------------------- strategies

names = st.text("abc", min_size=1, max_size=2)  # few names: the documents overlap
leaves = st.none() | st.booleans() | st.integers(-3, 3) | st.lists(st.integers(0, 2), max_size=2)
json_objects = st.recursive(
    st.dictionaries(names, leaves, max_size=3),
    lambda inner: st.dictionaries(names, leaves | inner, max_size=3),
    max_leaves=12,
)
free_values = st.dictionaries(names, leaves | json_objects, max_size=4)
stored_docs = st.fixed_dictionaries(
    {},
    optional={
        "free": free_values,
        "n": st.integers(0, 3),
        "inner": st.fixed_dictionaries({}, optional={"a": st.integers(0, 3), "more": free_values}),
    },
)
override_paths = st.sampled_from(
    ["N", "INNER__A", "INNER__MORE", "FREE", "FREE__A", "FREE__AB", "FREE__A__B", "FREE__B__C"]
)
environments = st.dictionaries(
    override_paths.map(lambda p: f"CONFMAN_WIDE__{p}"),
    st.sampled_from(["1", "2", '{"a": 1}', '{"c": {"a": 2}}']),
    max_size=4,
)


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None)
@given(json_objects, json_objects)
def test_diff_gives_the_pairwise_answer(before: dict[str, Any], after: dict[str, Any]) -> None:
    got = [(d.path, d.change, d.before, d.after) for d in diff(before, after)]
    assert got == reference_diff(before, after)


@settings(max_examples=300, deadline=None)
@given(stored_docs, environments)
def test_explain_gives_the_pairwise_answer(stored: dict[str, Any], env: dict[str, str]) -> None:
    layering = Layering(Wide, "wide", keyed=False, sources=[EnvironmentSource(env)])
    try:
        value = Wide.model_validate(layering.merged("default", stored))
    except ValueError:
        return  # an override this model refuses: explain is never asked
    got = layering.explain("default", value, [("base v3", stored)])
    assert got == reference_explain(layering, "default", value, stored, 3)


@settings(max_examples=200, deadline=None)
@given(stored_docs, json_objects)
def test_unknown_fields_are_the_leaves_no_field_names(
    stored: dict[str, Any], extra: dict[str, Any]
) -> None:
    doc = {**stored, "bogus": extra, "inner": {**stored.get("inner", {}), "zz": 1}}
    expected = [p for p, _ in leaf_items(doc) if p.startswith(("bogus", "inner.zz"))]
    assert unknown_fields(Wide, doc) == expected


def test_merge_patch_leaves_its_inputs_alone_at_depth() -> None:
    target = {"a": {"b": {"c": [1], "d": 1}}, "e": 1}
    patch = {"a": {"b": {"c": [2], "x": {"y": 1}}, "z": None}, "e": None}
    merged = merge_patch(target, patch)
    assert merged == {"a": {"b": {"c": [2], "d": 1, "x": {"y": 1}}}}
    merged["a"]["b"]["d"] = 99
    assert target == {"a": {"b": {"c": [1], "d": 1}}, "e": 1}
    assert patch["a"]["b"] == {"c": [2], "x": {"y": 1}}  # type: ignore[index]


# --------------------------------------------------------------------------- size


@GUARD
def test_diff_of_forty_thousand_fields() -> None:
    before = wide(SIZE)
    after = wide(SIZE, value=2)
    after["free"]["new"] = {}
    found = diff(before, after)
    assert len(found) == SIZE + 1
    assert found[0].path == "free.k0" and found[0].change == "changed"
    assert diff(before, before) == []
    # An object on one side, a scalar on the other: every leaf is listed.
    assert len(diff({"free": before["free"]}, {"free": 5})) == SIZE + 1


@GUARD
async def test_write_and_explain_forty_thousand_fields(tmp_path: Path) -> None:
    env = {"CONFMAN_WIDE__FREE__K7": "70", "CONFMAN_WIDE__INNER__A": "5"}
    async with temporary_hub(tmp_path, managers=[WideManager], env=env) as hub:
        manager = hub.manager(WideManager)
        change = await manager.update(wide(SIZE))
        assert change.stored_changed == ("free",) and change.pinned == ("free",)
        change = await manager.update(wide(SIZE, value=2))
        assert len(change.stored_changed) == SIZE and change.pinned == ("free.k7",)
        sources = {s.path: s for s in manager.explain()}
        assert len(sources) == SIZE + 3  # free.k*, inner.a, inner.more, n
        assert sources["free.k1"].layer is Layer.DATABASE
        assert sources["free.k7"].layer is Layer.ENVIRONMENT
        assert sources["free.k7"].shadows == ("database (base v2)",)
        assert sources["inner.a"].layer is Layer.ENVIRONMENT and not sources["inner.a"].shadows
        assert sources["n"].layer is Layer.DEFAULT
        preview = manager.validate({"free": {f"k{i}": 3 for i in range(SIZE)}})
        assert preview.free["k0"] == 3
