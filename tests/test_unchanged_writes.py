"""Writes that would store what is stored commit, publish, log and emit nothing.

On real SQLite and PostgreSQL. A `LocalBus` listener on the hub's own channel stands in
for the other instances: it hears every notice the hub publishes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from confman import Action, ConcurrencyConflict, ConfigChange, ConfigHub
from confman.bus import ChangeNotice, LocalBus
from confman.testing import ChangeRecorder, record_changes
from tests.models import ALL, Flags, FlagsManager, ItemsManager
from tests.support import connect


@dataclass
class Watched:
    hub: ConfigHub
    notices: list[ChangeNotice]

    async def heard(self) -> list[ChangeNotice]:
        """The notices published so far (LocalBus delivers on a later loop turn)."""
        await asyncio.sleep(0.05)
        return self.notices


@pytest.fixture
async def watched(database_url: str, hub_env: dict[str, str]) -> AsyncIterator[Watched]:
    channel = f"unchanged-{uuid.uuid4().hex}"
    listener = LocalBus(channel)
    notices: list[ChangeNotice] = []
    await listener.start(notices.append)
    try:
        async with connect(
            database_url, hub_env, managers=ALL, bus=LocalBus(channel), catch_up_interval=3600
        ) as hub:
            yield Watched(hub, notices)
    finally:
        await listener.close()


def assert_unchanged(change: ConfigChange[object], version: int, action: Action) -> None:
    assert change.unchanged
    assert not change.effective
    assert (change.version, change.seq, change.action) == (version, 0, action)
    assert change.changed_fields == () and change.stored_changed == ()
    assert change.old == change.new is not None


async def test_a_patch_that_changes_nothing_commits_and_emits_nothing(watched: Watched) -> None:
    flags = watched.hub.manager(FlagsManager)
    first = await flags.update({"name": "x", "limits": {"rpm": 7}}, actor="ops")
    assert not first.unchanged and first.effective
    assert len(await watched.heard()) == 1  # the listener hears real writes
    seen: ChangeRecorder[Flags] = record_changes(flags)
    for patch in [{"name": "x"}, {}, {"limits": {"rpm": 7}}]:
        change = await flags.update(patch, actor="ops", reason="again")
        assert_unchanged(change, 1, Action.UPDATE)
        assert (change.actor, change.reason) == ("ops", "again")
        assert change.new == flags.current
    same = await flags.update(flags.current.model_copy(), expected_version=1)
    assert_unchanged(same, 1, Action.UPDATE)
    whole = {"name": "x", "limits": {"rpm": 7}}
    assert_unchanged(await flags.update(whole, replace=True), 1, Action.UPDATE)
    assert seen.changes == []
    assert len(await watched.heard()) == 1
    assert len(await flags.history()) == 1
    stored = await watched.hub.store.load("flags", "default")
    assert stored is not None and stored.version == 1
    assert flags.version() == 1
    assert (flags.stats.writes, flags.stats.unchanged_writes) == (1, 5)
    # A change after the no-ops is committed as usual, at the next version.
    assert (await flags.update({"name": "y"})).version == 2


async def test_a_stale_version_is_still_a_conflict(watched: Watched) -> None:
    flags = watched.hub.manager(FlagsManager)
    await flags.update({"name": "x"})
    await flags.update({"name": "y"})
    with pytest.raises(ConcurrencyConflict):
        await flags.update({"name": "y"}, expected_version=1)


async def test_unchanged_is_checked_against_the_database(
    watched: Watched, database_url: str, hub_env: dict[str, str]
) -> None:
    # This instance has not heard of v2 yet: "unchanged at v1" would be false.
    flags = watched.hub.manager(FlagsManager)
    await flags.update({"name": "x"})
    async with connect(
        database_url, hub_env, managers=ALL, bus=LocalBus(uuid.uuid4().hex), catch_up_interval=3600
    ) as other:
        await other.manager(FlagsManager).update({"name": "y"})
    assert flags.current.name == "x" and flags.version() == 1
    with pytest.raises(ConcurrencyConflict) as conflict:
        await flags.update({"name": "x"})
    assert conflict.value.current_version == 2
    assert flags.current.name == "y"  # the conflict brought this instance up to date
    again = await flags.update({"name": "x"})
    assert not again.unchanged and again.version == 3


async def test_a_collection_item_and_its_secret(watched: Watched) -> None:
    items = watched.hub.manager(ItemsManager)
    await items.create("a", {"title": "t", "password": "s3cret"})
    seen = record_changes(items)
    same = await items.update({"title": "t", "password": "s3cret"}, key="a")
    assert_unchanged(same, 1, Action.UPDATE)
    assert seen.changes == []
    changed = await items.update({"password": "other"}, key="a")
    assert not changed.unchanged and changed.version == 2
    assert changed.stored_changed == ("password",)


async def test_a_rollback_to_what_is_stored_writes_nothing(watched: Watched) -> None:
    flags = watched.hub.manager(FlagsManager)
    await flags.update({"name": "x"})
    await flags.update({"name": "y"})
    await flags.update({"name": "x"})
    seen = record_changes(flags)
    heard = len(await watched.heard())
    change = await flags.rollback(to_version=1, actor="ops")
    assert_unchanged(change, 3, Action.ROLLBACK)
    assert change.reason == "rollback to v1"
    assert seen.changes == [] and len(await watched.heard()) == heard
    assert len(await flags.history()) == 3
    assert (await flags.rollback(to_version=2)).version == 4


async def test_validate_rollback_previews_without_writing(watched: Watched) -> None:
    flags = watched.hub.manager(FlagsManager)
    items = watched.hub.manager(ItemsManager)
    await flags.update({"name": "x"})
    await flags.update({"name": "y"})
    preview = await flags.validate_rollback(to_version=1)
    assert preview == Flags(name="x")
    await items.create("a", {"title": "t"})
    await items.delete("a", expected_version=1)
    assert await items.validate_rollback("a", to_version=2) is None
    assert flags.version() == 2 and flags.current.name == "y"
    assert len(await flags.history()) == 2
