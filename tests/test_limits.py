"""Document size and nesting limits, enforced by the library on every write and preview."""

from __future__ import annotations

from typing import Any

import pytest

from confman import ConfigHub, Limits, ValidationFailed
from confman.limits import DEFAULT_LIMITS, MAX_DEPTH_CEILING
from tests.models import FlagsManager, ItemsManager

from .support import connect
from .test_linear import WideManager


def nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """``{"x": {"x": ... leaf}}``: ``depth`` objects deep."""
    doc: dict[str, Any] = {"x": leaf}
    for _ in range(depth - 1):
        doc = {"x": doc}
    return doc


async def test_deep_documents_are_refused_with_their_path(hub: ConfigHub) -> None:
    wide = await hub.load(WideManager)
    version = wide.version()
    # 500 levels gave a RecursionError on main; 100,000 is far past any recursion limit.
    for depth in (500, 100_000):
        doc = {"free": nested(depth)}
        for replace in (False, True):
            with pytest.raises(ValidationFailed) as refused:
                wide.validate(doc, replace=replace)
            (error,) = refused.value.errors
            assert error.path == "free" + ".x" * (DEFAULT_LIMITS.max_depth - 1)
            assert "deeper than 32 levels" in error.message
            assert refused.value.source == "update"
        with pytest.raises(ValidationFailed, match="depth limit"):
            await wide.update({"free": nested(depth)})
    lists: list[Any] = [1]
    for _ in range(1000):
        lists = [lists]
    with pytest.raises(ValidationFailed, match="depth limit") as refused:
        await wide.update({"free": {"deep": lists}})
    assert refused.value.errors[0].path.startswith("free.deep.0.0.0")
    assert wide.version() == version  # nothing was written
    # Within the limit is fine: the top-level object is level 1.
    await wide.update({"free": nested(DEFAULT_LIMITS.max_depth - 1)})


async def test_large_documents_are_refused(hub: ConfigHub) -> None:
    items = await hub.load(ItemsManager)
    huge = "x" * (DEFAULT_LIMITS.max_document_bytes + 1)
    with pytest.raises(ValidationFailed) as refused:
        await items.create("big", {"title": huge})
    assert refused.value.key == "big" and refused.value.source == "create"
    (error,) = refused.value.errors
    assert error.path == "" and f"limit is {DEFAULT_LIMITS.max_document_bytes:,} bytes" in (
        error.message
    )
    assert huge not in str(refused.value)  # the value is never echoed
    assert "big" not in items
    # A patch small enough by itself that grows the stored document past the limit.
    wide = await hub.load(WideManager)
    half = "x" * (DEFAULT_LIMITS.max_document_bytes // 2)
    await wide.update({"free": {"a": half}})
    with pytest.raises(ValidationFailed, match="limit is"):
        wide.validate({"free": {"b": half}})
    with pytest.raises(ValidationFailed, match="limit is"):
        await wide.update({"free": {"b": half}})
    assert wide.current.free == {"a": half}


async def test_the_limits_are_a_hub_option(database_url: str, hub_env: dict[str, str]) -> None:
    limits = Limits(max_document_bytes=200, max_depth=3)
    async with connect(database_url, hub_env, managers=[FlagsManager], limits=limits) as hub:
        assert hub.limits == limits
        flags = hub.manager(FlagsManager)
        with pytest.raises(ValidationFailed, match="limit is 200 bytes"):
            await flags.update({"name": "n" * 200})
        with pytest.raises(ValidationFailed, match="deeper than 3 levels") as refused:
            flags.validate({"tags": [[["a"]]]})
        assert refused.value.errors[0].path == "tags.0.0"  # the 4th level
        await flags.update({"name": "short", "tags": ["a"]})
        assert flags.current.name == "short"


@pytest.mark.parametrize(
    "options",
    [
        {"max_depth": 0},
        {"max_depth": MAX_DEPTH_CEILING + 1},
        {"max_document_bytes": 0},
        {"max_document_bytes": True},
        {"max_depth": 2.5},
    ],
)
def test_limits_must_be_sane(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Limits\.max_"):
        Limits(**options)


def test_default_limits_take_a_megabyte_document() -> None:
    assert DEFAULT_LIMITS.check({"free": {f"k{i}": "v" * 40 for i in range(20_000)}}) is None
