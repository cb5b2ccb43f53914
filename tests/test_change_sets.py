"""Change sets: all or nothing, judged as a whole, applied whole; promote."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from confman import ConfigHub, ValidationFailed
from confman.change import Action
from confman.exceptions import ChangeSetConflict, ChangeSetInvalid
from confman.managers import ModelProviderConfigurationManager as Providers
from confman.managers import RouterConfigurationManager as Router
from confman.testing import record_changes
from tests.models import CounterManager, FlagsManager, ItemsManager
from tests.support import connect

MANAGERS: list[Any] = [FlagsManager, ItemsManager, CounterManager, Router]
PROVIDER = {"type": "openai", "api_key": "sk-one", "models": ["gpt-4o"]}
ALIAS = {"aliases": {"fast": {"deployments": [{"provider": "p1", "model": "gpt-4o"}]}}}


@pytest.fixture
async def hub(database_url: str, hub_env: dict[str, str]) -> AsyncIterator[ConfigHub]:
    async with connect(database_url, env=hub_env, managers=MANAGERS) as h:
        yield h


async def test_a_set_valid_only_as_a_whole_commits_in_one_transaction(hub: ConfigHub) -> None:
    router, providers = hub.manager(Router), hub.manager(Providers)
    with pytest.raises(ValidationFailed, match="no model provider 'p1'"):
        await router.update(ALIAS)  # alone: routes to nothing
    async with hub.change_set(actor="ops", reason="add p1 and route to it") as cs:
        cs.update(router, ALIAS)  # before the provider: judged after the whole set
        cs.create(Providers, "p1", PROVIDER)
    assert [c.namespace for c in cs.changes] == ["router", "model_provider"]
    assert len({c.change_set for c in cs.changes}) == 1 and cs.changes[0].change_set == cs.id
    assert router.current.aliases["fast"].deployments[0].provider == "p1"
    assert "p1" in providers
    records = await hub.change_set_records(cs.id)
    assert [(r.namespace, r.actor, r.reason) for r in records] == [
        ("router", "ops", "add p1 and route to it"),
        ("model_provider", "ops", "add p1 and route to it"),
    ]
    assert {r.seq for r in records} == {c.seq for c in cs.changes}


async def test_one_invalid_member_writes_nothing_and_every_failure_is_listed(
    hub: ConfigHub,
) -> None:
    flags, items = hub.manager(FlagsManager), hub.manager(ItemsManager)
    seen = record_changes(flags)
    cs = hub.change_set()
    cs.update(flags, {"name": "fine"})
    cs.create(items, "bad", {"weight": 0})  # no title, and weight must be > 0
    cs.update(CounterManager, {"value": "many"})
    with pytest.raises(ChangeSetInvalid) as refused:
        await cs.commit()
    assert {(f.namespace, f.key) for f in refused.value.failures} == {
        ("items", "bad"),
        ("counter", "default"),
    }
    assert any(e.path.startswith("items/bad: ") for e in refused.value.errors)
    assert flags.current.name == "basic" and "bad" not in items
    assert seen.changes == []
    assert await hub.changes_since(0) == []


async def test_the_same_document_twice_in_one_set_is_refused(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    cs = hub.change_set()
    cs.update(flags, {"name": "a"})
    cs.update(flags, {"ratio": 0.1})
    with pytest.raises(Exception, match="appears twice"):
        await cs.commit()


async def test_conflicts_name_every_member_that_lost(hub: ConfigHub) -> None:
    flags, counter = hub.manager(FlagsManager), hub.manager(CounterManager)
    await flags.update({"name": "one"})
    await counter.update({"value": 1})
    cs = hub.change_set()
    cs.update(flags, {"name": "two"}, expected_version=0)
    cs.update(counter, {"value": 2}, expected_version=0)
    with pytest.raises(ChangeSetConflict) as lost:
        await cs.commit()
    assert {(c.namespace, c.current_version) for c in lost.value.conflicts} == {
        ("flags", 1),
        ("counter", 1),
    }
    assert (flags.current.name, counter.current.value) == ("one", 1)


async def test_racing_sets_on_one_document_one_wins_none_half_applied(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with (
        connect(database_url, env=hub_env, managers=MANAGERS) as a,
        connect(database_url, env=hub_env, managers=MANAGERS) as b,
    ):
        await a.manager(CounterManager).update({"value": 0})
        await b.catch_up()

        async def one(hub: ConfigHub, name: str) -> str:
            try:
                async with hub.change_set() as cs:
                    cs.update(FlagsManager, {"name": name})
                    cs.update(CounterManager, {"value": 10 if name == "a" else 20},
                              expected_version=1)  # fmt: skip
            except ChangeSetConflict:
                return "lost"
            return "won"

        results = await asyncio.gather(one(a, "a"), one(b, "b"))
        assert sorted(results) == ["lost", "won"]
        winner = "a" if results[0] == "won" else "b"
        for hub in (a, b):
            await hub.catch_up()
            assert hub.manager(FlagsManager).current.name == winner
            assert hub.manager(CounterManager).current.value == (10 if winner == "a" else 20)


async def test_racing_sets_updating_stored_documents_one_wins_the_loser_named(
    database_url: str, hub_env: dict[str, str]
) -> None:
    # Both sets pass their version checks in memory: the database refuses the loser.
    async with (
        connect(database_url, env=hub_env, managers=MANAGERS) as a,
        connect(database_url, env=hub_env, managers=MANAGERS) as b,
    ):
        await a.manager(FlagsManager).update({"name": "start"})
        await a.manager(CounterManager).update({"value": 0})
        await b.catch_up()

        async def one(hub: ConfigHub, value: int) -> ChangeSetConflict | None:
            try:
                async with hub.change_set() as cs:
                    cs.update(CounterManager, {"value": value})
                    cs.update(FlagsManager, {"name": f"n{value}"})
            except ChangeSetConflict as e:
                return e
            return None

        results = await asyncio.gather(one(a, 10), one(b, 20))
        (lost,) = [r for r in results if r is not None]
        assert {(c.namespace, c.expected_version, c.current_version) for c in lost.conflicts} == {
            ("counter", 1, 2),
            ("flags", 1, 2),
        }
        value = 10 if results[0] is None else 20
        for hub in (a, b):
            await hub.catch_up()
            assert hub.manager(CounterManager).current.value == value
            assert hub.manager(FlagsManager).current.name == f"n{value}"


async def test_other_instances_apply_a_set_whole_before_telling_subscribers(
    database_url: str, hub_env: dict[str, str]
) -> None:
    async with (
        connect(database_url, env=hub_env, managers=MANAGERS) as writer,
        connect(database_url, env=hub_env, managers=MANAGERS) as reader,
    ):
        flags, counter = reader.manager(FlagsManager), reader.manager(CounterManager)
        observed: list[tuple[str, int]] = []
        # A subscriber that reads the other manager from its callback sees the whole set.
        flags.changes.subscribe(lambda c: observed.append((c.new.name, counter.current.value)))
        counter.changes.subscribe(lambda c: observed.append((flags.current.name, c.new.value)))
        for i in range(1, 4):
            async with writer.change_set() as cs:
                cs.update(FlagsManager, {"name": f"n{i}"})
                cs.update(CounterManager, {"value": i})
        await reader.catch_up()
        assert observed == [(f"n{i}", i) for i in (1, 2, 3) for _ in (0, 1)]


async def test_preview_writes_nothing_and_rollback_undoes_a_set(hub: ConfigHub) -> None:
    flags, items = hub.manager(FlagsManager), hub.manager(ItemsManager)
    await flags.update({"name": "before"})
    cs = hub.change_set(actor="ops")
    cs.update(flags, {"name": "after"})
    cs.create(items, "new", {"title": "N"})
    preview = await cs.preview()
    first = preview[0]
    assert (first.old.name, first.new.name) == ("before", "after")
    assert flags.current.name == "before" and "new" not in items
    await cs.commit()
    assert flags.current.name == "after" and "new" in items
    undone = await hub.rollback_change_set(cs.id, actor="ops")
    assert {c.action for c in undone} == {Action.ROLLBACK, Action.DELETE}
    assert flags.current.name == "before" and "new" not in items
    assert undone[0].change_set != cs.id


async def test_preview_of_a_base_change_shows_each_environment_it_reaches(
    hub: ConfigHub,
) -> None:
    for name in ("staging", "production", "qa"):
        await hub.create_environment(name)
    flags, items = hub.manager(FlagsManager), hub.manager(ItemsManager)
    await flags.update({"name": "base", "ratio": 0.2}, environment=None)
    await flags.update({"name": "stage"}, environment="staging")  # overrides name
    await items.create("shared", {"title": "S"}, environment=None)
    await items.delete("shared", environment="qa")  # hidden in qa
    cs = hub.change_set(actor="ops")
    cs.update(flags, {"name": "renamed", "ratio": 0.3}, environment=None)
    cs.update(flags, {"ratio": 0.9}, environment="production")  # the set's own overlay
    cs.update(items, {"weight": 5}, key="shared", environment=None)
    preview = await cs.preview()
    base_flags, _production_flags, base_items = preview
    seen = {c.environment: c for c in base_flags.per_environment}
    assert sorted(seen) == ["production", "qa", "staging"]
    assert seen["staging"].changed_fields == ("ratio",)  # its name stays its own
    assert (seen["staging"].old.name, seen["staging"].new.name) == ("stage", "stage")
    assert seen["production"].changed_fields == ("name", "ratio")  # after the whole set
    assert seen["production"].new.ratio == 0.9 and seen["production"].new.name == "renamed"
    assert seen["qa"].changed_fields == ("name", "ratio")
    assert all(c.change_set == cs.id and c.seq == 0 for c in base_flags.per_environment)
    # Hidden in qa: the change reaches staging and production only.
    assert sorted(c.environment or "" for c in base_items.per_environment) == [
        "production", "staging",
    ]  # fmt: skip
    assert base_items.per_environment[0].changed_fields == ("weight",)
    assert preview[1].per_environment == ()  # an overlay concerns its own environment
    assert flags.current.name == "base"  # nothing written
    await cs.commit()
    assert all(c.per_environment == () for c in cs.changes)  # a preview's alone


async def test_promote_makes_the_target_equal_the_source_by_its_overlays(
    hub: ConfigHub, database_url: str, hub_env: dict[str, str]
) -> None:
    for name in ("staging", "production"):
        await hub.create_environment(name)
    flags, items = hub.manager(FlagsManager), hub.manager(ItemsManager)
    await flags.update({"name": "base", "ratio": 0.2}, environment=None)
    await items.create("shared", {"title": "S"}, environment=None)
    await items.create("gone", {"title": "G"}, environment=None)
    await flags.update({"name": "stage"}, environment="staging")
    await items.update({"weight": 7}, key="shared", environment="staging")
    await items.delete("gone", environment="staging")  # hidden in staging
    await items.create("extra", {"title": "E"}, environment="staging")
    await items.create("prod-only", {"title": "P"}, environment="production")
    await flags.update({"ratio": 0.9}, environment="production")

    dry = await hub.promote("staging", "production", dry_run=True)
    assert {(c.namespace, c.key) for c in dry} == {
        ("flags", "default"), ("items", "shared"), ("items", "gone"), ("items", "extra"),
        ("items", "prod-only"),
    }  # fmt: skip
    assert (await hub.compare("staging", "production")).differences  # nothing written yet
    done = await hub.promote("staging", "production", actor="ops")
    assert {c.action for c in done} == {Action.PROMOTE, Action.DELETE}
    assert len({c.change_set for c in done}) == 1
    assert (await hub.compare("staging", "production")).differences == ()
    assert flags.current.name == "base"  # the base never changes
    assert sorted(items.keys()) == ["gone", "shared"]
    async with connect(database_url, env=hub_env, managers=MANAGERS,
                       environment="production") as production:  # fmt: skip
        assert production.manager(FlagsManager).current.ratio == 0.2
        assert sorted(production.manager(ItemsManager).keys()) == ["extra", "shared"]
    assert await hub.promote("staging", "production") == []  # nothing left to do


async def test_a_set_over_postgresql_notify_reaches_the_other_instance_at_once(
    database_url: str, hub_env: dict[str, str], cluster: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("NOTIFY is PostgreSQL's")
    options: dict[str, Any] = {"bus": "postgres", "cluster": cluster, "catch_up_interval": 30}
    async with (
        connect(database_url, env=hub_env, managers=MANAGERS, **options) as a,
        connect(database_url, env=hub_env, managers=MANAGERS, **options) as b,
    ):
        seen = record_changes(b.manager(CounterManager))
        async with a.change_set() as cs:
            cs.update(FlagsManager, {"name": "together"})
            cs.update(CounterManager, {"value": 7})
        await seen.wait_for(version=1, timeout=10)  # well before any catch-up interval
        assert b.manager(FlagsManager).current.name == "together"
        assert seen.changes[-1].change_set == cs.id
