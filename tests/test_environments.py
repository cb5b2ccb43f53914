"""Environments: overlays over a shared base, seven layers, inheritance, tombstones,
per-environment namespaces, validation across environments, compare, the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from confman import ConcurrencyConflict, ConfigHub, ConfigurationManager, Layer, ValidationFailed
from confman.environments import EnvironmentNotEmpty, UnknownEnvironment
from confman.testing import record_changes
from tests.models import FlagsManager, ItemsManager
from tests.support import connect


class Key(BaseModel):
    owner: str
    secret: SecretStr | None = None


class KeysManager(ConfigurationManager[Key]):
    """Credentials: every environment holds its own, none inherits the base's."""

    namespace = "test_keys"
    model = Key
    keyed = True
    inherits = False


MANAGERS: list[type[ConfigurationManager[Any]]] = [FlagsManager, ItemsManager, KeysManager]


@pytest.fixture
async def base(database_url: str, hub_env: dict[str, str]) -> AsyncIterator[ConfigHub]:
    """A hub on the base, with staging and production created."""
    async with connect(database_url, env=hub_env, managers=MANAGERS) as hub:
        await hub.create_environment("staging", description="pre-production")
        await hub.create_environment("production", description="live")
        yield hub


def _hub(url: str, env: dict[str, str], environment: str | None, **options: Any) -> Any:
    return connect(url, env=env, managers=MANAGERS, environment=environment, **options)


async def test_seven_layers_each_beat_the_one_below_and_explain_names_them(
    base: ConfigHub,
    database_url: str,
    hub_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flags = base.manager(FlagsManager)
    await flags.update(
        {"enabled": True, "name": "base", "ratio": 0.9, "tags": ["b"]}, environment=None
    )
    await flags.update({"name": "prod", "ratio": 0.8}, environment="production")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CONFMAN_FLAGS__RATIO=0.2\nCONFMAN_FLAGS__LIMITS__BURST=3\n")
    (tmp_path / ".env.production").write_text("CONFMAN_FLAGS__RATIO=0.3\n")
    (tmp_path / ".env.staging").write_text("CONFMAN_FLAGS__RATIO=0.01\n")  # not this one's
    (tmp_path / "local.env").write_text("CONFMAN_FLAGS__LIMITS__RPM=7\n")
    env = {**hub_env, "CONFMAN_FLAGS__LIMITS__BURST": "9", "CONFMAN_ENVIRONMENT": "production"}
    # The default env files: .env, .env.<environment>, local.env (from CONFMAN_ENVIRONMENT).
    async with ConfigHub.connect(database_url, env=env, managers=MANAGERS) as hub:
        assert hub.environment == "production"
        current = hub.manager(FlagsManager).current
        assert current.enabled is True  # base over the model default
        assert current.tags == ["b"]  # base, not overridden in production
        assert current.name == "prod"  # production's overlay over the base
        assert current.ratio == 0.3  # .env.production over .env over the overlay
        assert current.limits.rpm == 7  # local.env over the default
        assert current.limits.burst == 9  # the process environment over .env
        sources = {s.path: s for s in hub.manager(FlagsManager).explain()}
        assert sources["enabled"].layer is Layer.DATABASE
        assert sources["enabled"].detail == "base v1"
        assert sources["name"].detail == "production v1"
        assert sources["name"].shadows == ("database (base v1)",)
        assert sources["ratio"].layer is Layer.ENV_FILE
        assert sources["ratio"].detail.endswith(".env.production")
        assert sources["ratio"].shadows[:2] == ("database (base v1)", "database (production v1)")
        assert sources["limits.burst"].layer is Layer.ENVIRONMENT
        assert sources["token"].layer is Layer.DEFAULT


async def test_a_base_change_reaches_environments_that_do_not_override_the_field(
    base: ConfigHub, database_url: str, hub_env: dict[str, str]
) -> None:
    flags = base.manager(FlagsManager)
    await flags.update({"name": "prod"}, environment="production")
    async with (
        _hub(database_url, hub_env, "staging") as staging,
        _hub(database_url, hub_env, "production") as production,
    ):
        seen = {
            "staging": record_changes(staging.manager(FlagsManager)),
            "production": record_changes(production.manager(FlagsManager)),
        }
        await flags.update({"name": "base-2", "ratio": 0.1}, environment=None)
        for hub in (staging, production):
            await hub.catch_up()
        assert staging.manager(FlagsManager).current.name == "base-2"
        assert production.manager(FlagsManager).current.name == "prod"  # overridden
        assert production.manager(FlagsManager).current.ratio == 0.1  # inherited
        # Each emitted the base change once, as a base change.
        assert [(c.environment, c.version) for c in seen["staging"].changes] == [(None, 1)]
        assert [(c.environment, c.version) for c in seen["production"].changes] == [(None, 1)]
        # A staging overlay change concerns staging alone.
        await flags.update({"ratio": 0.7}, environment="staging")
        for hub in (staging, production):
            await hub.catch_up()
        assert staging.manager(FlagsManager).current.ratio == 0.7
        assert production.manager(FlagsManager).current.ratio == 0.1
        assert [c.environment for c in seen["staging"].changes] == [None, "staging"]
        assert [c.environment for c in seen["production"].changes] == [None]


async def test_own_environment_is_the_default_target_and_none_is_the_base(
    base: ConfigHub, database_url: str, hub_env: dict[str, str]
) -> None:
    async with _hub(database_url, hub_env, "staging") as staging:
        flags = staging.manager(FlagsManager)
        change = await flags.update({"name": "s"})  # its own overlay
        assert change.environment == "staging" and change.version == 1
        assert flags.version() == 1 and flags.version(environment=None) == 0
        await flags.update({"ratio": 0.25}, environment=None)  # the base
        assert flags.current.name == "s" and flags.current.ratio == 0.25
        assert (await base.manager(FlagsManager).resolve()).value.name == "basic"  # type: ignore[union-attr]
        history = await flags.history()
        assert [(r.environment, r.version) for r in history] == [("staging", 1)]


async def test_a_base_write_that_breaks_an_overlay_is_refused_naming_the_environment(
    base: ConfigHub,
) -> None:
    items = base.manager(ItemsManager)
    await items.create("a", {"title": "A"}, environment=None)
    await items.update({"weight": 5}, key="a", environment="production")  # partial overlay
    # Deleting the base item leaves production's partial overlay without a title.
    with pytest.raises(ValidationFailed) as refused:
        await items.delete("a", environment=None)
    assert refused.value.environment == "production"
    assert "title" in refused.value.paths
    assert "production" in str(refused.value)
    assert items.get("a").title == "A"  # nothing written
    # An overlay that would be invalid over the base is refused too.
    with pytest.raises(ValidationFailed):
        await items.update({"weight": 0}, key="a", environment="staging")


async def test_hidden_items_and_reset(
    base: ConfigHub, database_url: str, hub_env: dict[str, str]
) -> None:
    items = base.manager(ItemsManager)
    await items.create("a", {"title": "A", "weight": 2}, environment=None)
    await items.create("b", {"title": "B"}, environment=None)
    async with _hub(database_url, hub_env, "staging") as staging:
        mine = staging.manager(ItemsManager)
        await mine.delete("b")  # hides the base item in staging only
        await mine.create("c", {"title": "C"})  # an item only staging has
        await mine.update({"weight": 9}, key="a")
        assert sorted(mine.keys()) == ["a", "c"]
        assert mine.get("a").weight == 9 and mine.get("a").title == "A"
        [hidden] = mine.explain("b")
        assert hidden.detail == "staging v1, hidden"
        assert hidden.shadows == ("database (base v1)",)
        assert sorted(items.keys()) == ["a", "b"]  # the base is untouched
        resolved = await items.resolve("b", environment="staging")
        assert resolved.hidden and resolved.value is None
        # reset: fields inherit again; the whole overlay dropped shows a hidden item again.
        await mine.reset("a", ["weight"])
        assert mine.get("a").weight == 2
        await mine.reset("b")
        assert mine.get("b").title == "B"
        with pytest.raises(Exception, match="no overlay"):
            await mine.reset("b")
        # A base change to a hidden item does not bring it back.
        await mine.delete("b")
        await items.update({"weight": 3}, key="b", environment=None)
        await staging.catch_up()
        assert "b" not in mine


async def test_namespaces_that_do_not_inherit_never_cross_environments(
    base: ConfigHub, database_url: str, hub_env: dict[str, str]
) -> None:
    keys = base.manager(KeysManager)
    await keys.create("shared", {"owner": "base", "secret": "s0"})
    await keys.create("k1", {"owner": "staging", "secret": "s1"}, environment="staging")
    async with (
        _hub(database_url, hub_env, "production") as production,
        _hub(database_url, hub_env, "staging") as staging,
    ):
        assert production.manager(KeysManager).keys() == []
        assert staging.manager(KeysManager).keys() == ["k1"]
        await production.manager(KeysManager).create("k1", {"owner": "prod"})
        await staging.catch_up()
        assert staging.manager(KeysManager).get("k1").owner == "staging"
        assert production.manager(KeysManager).get("k1").owner == "prod"
    assert keys.keys() == ["shared"]


async def test_compare_two_environments(base: ConfigHub) -> None:
    flags, items = base.manager(FlagsManager), base.manager(ItemsManager)
    await flags.update({"name": "base", "token": "same-secret"}, environment=None)
    await flags.update({"name": "prod", "token": "prod-secret"}, environment="production")
    await items.create("a", {"title": "A", "password": "pw"}, environment=None)
    await items.create("only-staging", {"title": "S"}, environment="staging")
    await items.update({"weight": 4}, key="a", environment="production")
    result = await base.compare("staging", "production")
    rows = {(f.namespace, f.key, f.path): f for f in result.fields}
    name = rows["flags", "default", "name"]
    assert (name.left, name.right) == ("base", "prod")
    assert (name.left_source, name.right_source) == (
        "database (base v1)",
        "database (production v1)",
    )
    token = rows["flags", "default", "token"]
    assert token.secret and token.left != token.right
    assert all("secret" not in str(v) for v in (token.left, token.right))
    assert str(token.left).startswith("fingerprint:")
    assert rows["items", "a", "weight"].right == 4
    assert ("items", "a", "password") not in rows  # equal secrets: no difference
    missing = rows["items", "only-staging", ""]
    assert missing.left_present and not missing.right_present
    assert ("flags", "default", "ratio") not in rows  # same on both sides
    everything = await base.compare("staging", "production", namespaces=["items"], everything=True)
    paths = {(f.key, f.path) for f in everything.fields}
    assert ("a", "password") in paths and ("a", "title") in paths
    password = next(f for f in everything.fields if f.path == "password")
    assert password.same and password.left == password.right != "pw"
    # Against the base, and an unknown name.
    against_base = await base.compare(None, "production", namespaces=["flags"])
    assert {f.path for f in against_base.fields} == {"name", "token"}
    with pytest.raises(UnknownEnvironment, match="known: production, staging"):
        await base.compare("staging", "prodution")


async def test_the_registry_lists_creates_and_deletes_environments(
    base: ConfigHub, database_url: str, hub_env: dict[str, str]
) -> None:
    assert [(e.name, e.description) for e in await base.environments()] == [
        ("production", "live"),
        ("staging", "pre-production"),
    ]
    with pytest.raises(ConcurrencyConflict):
        await base.create_environment("staging")
    for bad in ("Staging", "base", "-x", "a" * 64, "a/b"):
        with pytest.raises(ValidationFailed):
            await base.create_environment(bad)
    with pytest.raises(UnknownEnvironment, match=r"prodution.*known: production, staging"):
        async with _hub(database_url, hub_env, "prodution"):
            pass
    with pytest.raises(UnknownEnvironment):
        await base.manager(FlagsManager).update({"name": "x"}, environment="stagin")
    flags = base.manager(FlagsManager)
    await flags.update({"name": "s"}, environment="staging")
    await base.manager(ItemsManager).create("i", {"title": "I"}, environment="staging")
    with pytest.raises(EnvironmentNotEmpty):
        await base.delete_environment("staging")
    assert await base.delete_environment("staging", force=True, actor="ops") == 2
    assert [e.name for e in await base.environments()] == ["production"]
    audit = await base.changes_since(0, environments=["staging"])
    assert [(r.namespace, r.action.value, r.actor) for r in audit[-2:]] == [
        ("flags", "delete", "ops"),
        ("items", "delete", "ops"),
    ] or sorted((r.namespace, r.action.value) for r in audit[-2:]) == [
        ("flags", "delete"),
        ("items", "delete"),
    ]
    # Created again, it starts empty, and versions keep counting up.
    await base.create_environment("staging")
    change = await flags.update({"name": "again"}, environment="staging")
    assert change.version == 3


async def test_the_snapshot_keeps_overlays_and_serves_them_while_the_database_is_away(
    base: ConfigHub, database_url: str, hub_env: dict[str, str], tmp_path: Path
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the snapshot does not depend on the database")
    await base.manager(FlagsManager).update({"name": "b", "ratio": 0.4}, environment=None)
    await base.manager(ItemsManager).create("a", {"title": "A"}, environment=None)
    snapshot = tmp_path / "staging.snapshot.json"
    async with _hub(database_url, hub_env, "staging", snapshot_path=snapshot) as staging:
        await staging.manager(FlagsManager).update({"name": "s"})
        await staging.manager(ItemsManager).delete("a")  # hidden in staging
        await staging.write_snapshot()
    gone = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'nothing.db'}"
    async with _hub(gone, hub_env, "staging", snapshot_path=snapshot) as degraded:
        assert degraded.degraded
        flags = degraded.manager(FlagsManager)
        assert (flags.current.name, flags.current.ratio) == ("s", 0.4)
        assert "a" not in degraded.manager(ItemsManager)


async def test_rules_across_managers_judge_a_write_by_its_own_environment(
    database_url: str, hub_env: dict[str, str]
) -> None:
    """A server on the base writing for staging checks the router against staging's
    providers, not its own (the base's)."""
    from confman.managers import (
        ModelProviderConfigurationManager as Providers,
    )
    from confman.managers import (
        RouterConfigurationManager as Router,
    )

    provider = {"type": "openai", "api_key": "sk-stage", "models": ["gpt-4o"]}
    alias = {"aliases": {"fast": {"deployments": [{"provider": "stage-only", "model": "gpt-4o"}]}}}
    async with connect(database_url, env=hub_env, managers=[Router]) as hub:
        await hub.create_environment("staging")
        await hub.create_environment("production")
        await hub.manager(Providers).create("stage-only", provider, environment="staging")
        change = await hub.manager(Router).update(alias, environment="staging")
        assert change.environment == "staging"
        with pytest.raises(ValidationFailed, match="no model provider 'stage-only'"):
            await hub.manager(Router).update(alias, environment="production")
        with pytest.raises(ValidationFailed, match="router aliases use it"):
            await hub.manager(Providers).delete("stage-only", environment="staging")
        assert "stage-only" not in hub.manager(Providers)  # the base never had it


async def test_retention_keeps_versions_per_environment(base: ConfigHub) -> None:
    from confman.retention import prune_change_log

    flags = base.manager(FlagsManager)
    for i in range(4):
        await flags.update({"ratio": i / 10}, environment=None)
    await flags.update({"name": "s"}, environment="staging")
    # Staging's one version is its newest: kept; the base keeps its newest two.
    assert await prune_change_log(base.store, keep_versions=2, older_than=None) == 2
    assert [r.version for r in await flags.history(environment=None)] == [4, 3]
    assert [r.version for r in await flags.history(environment="staging")] == [1]


async def test_compare_is_bounded_and_leaves_credentials_out_unless_named(
    base: ConfigHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import confman.compare

    await base.manager(KeysManager).create("k", {"owner": "o"}, environment="staging")
    result = await base.compare("staging", "production")
    assert all(f.namespace != "test_keys" for f in result.fields)
    named = await base.compare("staging", "production", namespaces=["test_keys"])
    assert [(f.key, f.left_present, f.right_present) for f in named.fields] == [("k", True, False)]
    await base.manager(ItemsManager).create("a", {"title": "A"}, environment=None)
    await base.manager(ItemsManager).create("b", {"title": "B"}, environment=None)
    monkeypatch.setattr(confman.compare, "MAX_COMPARED", 1)
    with pytest.raises(ValidationFailed, match="compare compares at most 1"):
        await base.compare("staging", "production", namespaces=["items"])
