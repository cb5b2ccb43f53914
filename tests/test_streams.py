"""Rx streams: ordering per key, observe/select, subscriber isolation, schedulers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from confman import ConfigChange, ConfigHub, LocalBus
from confman.testing import record_changes, temporary_hub
from tests.models import ALL, Flags, FlagsManager, Item, ItemsManager
from tests.support import connect


@pytest.fixture
async def hub(tmp_path: Path) -> Any:
    async with temporary_hub(tmp_path, managers=ALL) as h:
        yield h


async def test_changes_carry_everything_about_the_commit(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    seen = record_changes(flags)
    returned = await flags.update({"name": "n"}, actor="a", reason="r")
    (change,) = seen.changes
    assert change is returned
    assert (change.namespace, change.key, change.version, change.action) == (
        "flags", "default", 1, "create",
    )  # fmt: skip
    assert (change.actor, change.reason, change.origin) == ("a", "r", hub.instance_id)
    assert change.old == Flags() and change.new == Flags(name="n")
    assert change.changed_fields == ("name",)
    assert change.seq >= 1
    assert change.at.tzinfo is not None


async def test_concurrent_local_writes_emit_every_version_in_order(hub: ConfigHub) -> None:
    items = hub.manager(ItemsManager)
    for key in "abc":
        await items.create(key, {"title": key})
    seen = record_changes(items)

    async def bump(key: str) -> None:
        await items.update(lambda i: i.model_copy(update={"weight": i.weight + 1}), key=key,
                           retries=100)  # fmt: skip

    await asyncio.gather(*(bump(k) for k in "abc" for _ in range(10)))
    for key in "abc":
        # The origin instance emits every version, strictly increasing, none twice.
        assert seen.versions(key) == list(range(2, 12))
        assert items.get(key).weight == 11


@pytest.mark.parametrize("path", ["notices", "catch-up only"])
async def test_remote_changes_keep_per_key_order(tmp_path: Path, path: str) -> None:
    async with temporary_hub(tmp_path, managers=ALL, catch_up_interval=0.05) as writer:
        url = writer.engine.url.render_as_string(hide_password=False)
        # A bus on its own channel hears nothing: only the change log carries changes.
        bus = LocalBus(f"isolated-{tmp_path}") if path == "catch-up only" else None
        async with connect(url, managers=ALL, catch_up_interval=0.05, bus=bus) as reader:
            seen = record_changes(reader.manager(FlagsManager))
            flags = writer.manager(FlagsManager)
            for i in range(30):
                await flags.update({"limits": {"burst": i}})
            await seen.wait_for(version=30)
            versions = seen.versions()
            assert versions == sorted(set(versions))  # increasing, none twice
            assert reader.manager(FlagsManager).current == flags.current


async def test_observe_emits_current_then_distinct_values(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    values: list[Flags] = []
    rpm: list[int] = []
    flags.observe().subscribe(values.append)
    flags.select(lambda f: f.limits.rpm).subscribe(rpm.append)
    await flags.update({"name": "a"})
    await flags.update({"name": "a"})  # a new version, same content: not distinct
    await flags.update({"limits": {"rpm": 5}})
    assert [v.name for v in values] == ["basic", "a", "a"]
    assert [v.limits.rpm for v in values] == [60, 60, 5]
    assert rpm == [60, 5]


async def test_observe_a_collection_item(hub: ConfigHub) -> None:
    items = hub.manager(ItemsManager)
    titles: list[str] = []
    items.select(lambda i: i.title, key="x").subscribe(titles.append)
    await items.create("x", {"title": "one"})
    await items.create("y", {"title": "other"})
    await items.update({"title": "two"}, key="x")
    await items.delete("x")
    await items.create("x", {"title": "three"})
    assert titles == ["one", "two", "three"]


async def test_a_failing_subscriber_hurts_nobody(
    hub: ConfigHub, caplog: pytest.LogCaptureFixture
) -> None:
    flags = hub.manager(FlagsManager)
    before: list[int] = []
    after: list[int] = []
    failures = 0

    def explode(change: ConfigChange[Flags]) -> None:
        nonlocal failures
        failures += 1
        raise RuntimeError("subscriber bug")

    flags.changes.subscribe(lambda c: before.append(c.version))
    flags.changes.subscribe(explode)
    inverse: list[float] = []
    flags.select(lambda f: 1 / (f.limits.burst - 3)).subscribe(inverse.append)
    flags.changes.subscribe(lambda c: after.append(c.version))
    with caplog.at_level(logging.ERROR, logger="confman"):
        await flags.update({"name": "a"})
        await flags.update({"limits": {"burst": 3}})  # the select raises ZeroDivisionError
        await flags.update({"limits": {"burst": 5}})
    assert before == after == [1, 2, 3]
    assert failures == 3  # still subscribed after raising
    assert inverse == [1 / 7, 1 / 2]  # the failing value skipped, the next one delivered
    assert flags.current.limits.burst == 5
    assert flags.stats.subscriber_errors == 4
    assert "subscriber raised" in caplog.text


async def test_a_subscriber_failing_on_the_first_value_stays_subscribed(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    seen: list[str] = []

    def fussy(value: Flags) -> None:
        seen.append(value.name)
        if value.name == "basic":
            raise RuntimeError("does not like defaults")

    flags.observe().subscribe(fussy)  # the initial value raises inside subscribe()
    await flags.update({"name": "custom"})
    assert seen == ["basic", "custom"]
    assert flags.stats.subscriber_errors == 1


async def test_subscriber_can_ask_for_its_own_scheduler(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    scheduler = TestScheduler()
    delivered: list[tuple[float, int]] = []
    flags.changes.pipe(ops.observe_on(scheduler)).subscribe(
        lambda c: delivered.append((scheduler.clock, c.version))
    )
    await flags.update({"name": "a"})
    await flags.update({"name": "b"})
    assert delivered == []  # nothing runs until that scheduler runs
    scheduler.advance_by(ReactiveTest.created)
    assert [v for _, v in delivered] == [1, 2]


async def test_streams_complete_when_the_hub_closes(tmp_path: Path) -> None:
    async with temporary_hub(tmp_path, managers=[ItemsManager]) as hub:
        seen = record_changes(hub.manager(ItemsManager))
        await hub.manager(ItemsManager).create("k", Item(title="t"))
    assert seen.completed
    assert seen.versions() == [1]
