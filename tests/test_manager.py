"""ConfigurationManager writes and reads on real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from confman import (
    Action,
    ConcurrencyConflict,
    ConfigHub,
    ConfigurationManager,
    NotFound,
    ValidationFailed,
)
from confman.store import Write
from confman.testing import record_changes
from tests.models import ALL, Flags, FlagsManager, Item, ItemsManager, Limits
from tests.support import connect


@pytest.fixture
async def hub(database_url: str, hub_env: dict[str, str]) -> AsyncIterator[ConfigHub]:
    async with connect(database_url, hub_env, managers=ALL) as h:
        yield h


async def test_three_line_manager_definition_works(hub: ConfigHub) -> None:
    class Tiny(Flags):
        pass

    class TinyManager(ConfigurationManager[Tiny]):
        namespace = "tiny"
        model = Tiny
        keyed = False

    tiny = await hub.load(TinyManager)
    assert hub.manager(TinyManager) is tiny
    assert tiny.current == Tiny()
    await tiny.update({"name": "t"})
    assert tiny.current.name == "t"


async def test_defaults_before_any_write(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    assert flags.current == Flags()
    assert flags.get() is flags.current
    assert flags.version() == 0
    assert await flags.history() == []


async def test_patch_is_deep_merged(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"limits": {"rpm": 100}, "tags": ["a"]})
    change = await flags.update({"limits": {"burst": 5}})
    assert flags.current.limits == Limits(rpm=100, burst=5)
    assert flags.current.tags == ["a"]
    assert change.changed_fields == ("limits.burst",)
    assert change.old is not None and change.old.limits.burst == 10
    # null removes a member: the field falls back to its default.
    await flags.update({"limits": {"rpm": None}})
    assert flags.current.limits == Limits(rpm=60, burst=5)


async def test_update_with_a_whole_value_replaces_the_document(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"name": "x", "ratio": 0.9})
    await flags.update(Flags(enabled=True))
    assert flags.current == Flags(enabled=True)
    (newest, *_) = await flags.history()
    assert newest.after == {"enabled": True}


async def test_update_with_replace_takes_a_mapping_as_the_whole_document(
    hub: ConfigHub,
) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"name": "x", "ratio": 0.9, "limits": {"rpm": 5}})
    change = await flags.update({"enabled": True, "limits": {"burst": 3}}, replace=True)
    assert flags.current == Flags(enabled=True, limits=Limits(burst=3))
    assert flags.validate({"name": "y"}, replace=True) == Flags(name="y")
    assert change.stored_changed == ("enabled", "limits.burst", "limits.rpm", "name", "ratio")


async def test_a_nul_character_is_refused_on_every_database(hub: ConfigHub) -> None:
    # PostgreSQL cannot store one and SQLite can: refused alike, naming the field.
    flags = hub.manager(FlagsManager)
    for patch, path in [({"name": "a\x00b"}, "name"), ({"tags": ["ok", "\x00"]}, "tags.1")]:
        with pytest.raises(ValidationFailed) as refused:
            await flags.update(patch)
        assert refused.value.paths == (path,)
        assert "\x00" not in str(refused.value)
    with pytest.raises(ValidationFailed) as refused:
        await flags.update({"name": "fine"}, reason="why\x00")
    assert refused.value.paths == ("reason",)
    assert flags.version() == 0


@pytest.mark.parametrize(
    "key", ["", " ", "\t\n", "\u200b", "\ufeff\u2060", "\x01", "\u00a0\u3000", "\u3164"]
)
async def test_a_blank_or_invisible_key_is_refused(hub: ConfigHub, key: str) -> None:
    items = hub.manager(ItemsManager)
    with pytest.raises(ValidationFailed) as refused:
        await items.create(key, {"title": "t"})
    assert refused.value.paths == ("key",)
    assert key == "" or "visible character" in str(refused.value)
    assert items.keys() == [] and await hub.store.load("items", key) is None
    # Visible characters around invisible ones make a key.
    assert (await items.create(f"a{key}b", {"title": "t"})).version == 1


async def test_an_invisible_key_stored_earlier_can_still_be_deleted(hub: ConfigHub) -> None:
    # Stored the way an older confman would have: straight through the store.
    data = {"title": "t"}
    write = Write(
        "items", "\u200b", data, 0, Action.CREATE, None, None, None, data, ("title",), "x"
    )
    await hub.store.write(write)
    await hub.catch_up()
    items = hub.manager(ItemsManager)
    assert items.get("\u200b").title == "t"
    with pytest.raises(ValidationFailed, match="visible character"):
        await items.update({"title": "u"}, key="\u200b")
    assert (await items.delete("\u200b", expected_version=1)).new is None
    assert items.keys() == []


async def test_update_with_a_function_sees_the_stored_value(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"limits": {"rpm": 5}})
    change = await flags.update(
        lambda f: f.model_copy(update={"limits": f.limits.model_copy(update={"rpm": 6})})
    )
    assert change.new is not None and change.new.limits.rpm == 6
    with pytest.raises(TypeError, match="must return a Flags"):
        await flags.update(lambda f: {"x": 1})


async def test_invalid_patch_is_refused_and_nothing_is_written(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"ratio": 0.4})
    with pytest.raises(ValidationFailed) as caught:
        await flags.update({"ratio": 3, "limits": {"rpm": 0}})
    assert set(caught.value.paths) == {"ratio", "limits.rpm"}
    assert caught.value.source == "update"
    assert "less than or equal to 1" in str(caught.value)
    with pytest.raises(ValidationFailed, match="no such field") as unknown:
        await flags.update({"limits": {"rpn": 1}})
    assert unknown.value.paths == ("limits.rpn",)
    assert flags.current.ratio == 0.4
    assert flags.version() == 1
    assert len(await flags.history()) == 1
    assert flags.stats.validation_failures == 2


async def test_validate_previews_without_writing(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    preview = flags.validate({"ratio": 0.1})
    assert preview.ratio == 0.1
    assert flags.current.ratio == 0.5
    assert await flags.history() == []
    with pytest.raises(ValidationFailed):
        flags.validate({"ratio": -1})


async def test_expected_version_is_checked(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"name": "a"}, expected_version=0)
    await flags.update({"name": "b"}, expected_version=1)
    with pytest.raises(ConcurrencyConflict) as caught:
        await flags.update({"name": "c"}, expected_version=1)
    assert (caught.value.expected_version, caught.value.current_version) == (1, 2)
    assert flags.current.name == "b"
    assert [r.version for r in await flags.history()] == [2, 1]


async def test_history_records_every_change_with_its_audit_fields(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"name": "a"}, actor="alice", reason="first")
    await flags.update({"name": "b", "enabled": True}, actor="bob", reason="second")
    newest, oldest = await flags.history()
    assert (oldest.action, oldest.actor, oldest.reason) == (Action.CREATE, "alice", "first")
    assert (newest.action, newest.actor, newest.reason) == (Action.UPDATE, "bob", "second")
    assert newest.before == {"name": "a"}
    assert newest.after == {"name": "b", "enabled": True}
    assert newest.changed == ("enabled", "name")
    assert newest.origin == hub.instance_id
    assert newest.seq > oldest.seq
    assert len(await flags.history(limit=1)) == 1


async def test_rollback_writes_a_new_version_with_old_content(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"name": "one"})
    await flags.update({"name": "two", "ratio": 0.2})
    change = await flags.rollback(to_version=1, actor="ops")
    assert change.version == 3
    assert change.action is Action.ROLLBACK
    assert flags.current.name == "one"
    assert flags.current.ratio == 0.5
    assert set(change.changed_fields) == {"name", "ratio"}
    (newest, *_) = await flags.history()
    assert (newest.action, newest.reason, newest.after) == (
        Action.ROLLBACK,
        "rollback to v1",
        {"name": "one"},
    )
    with pytest.raises(NotFound):
        await flags.rollback(to_version=42)


async def test_deleted_singleton_falls_back_to_defaults(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    seen = record_changes(flags)
    await flags.update({"name": "x"})
    change = await flags.delete(actor="ops")
    assert change.action is Action.DELETE
    assert flags.current == Flags()
    assert change.new == Flags()
    # Versions keep counting after a delete.
    again = await flags.update({"name": "y"})
    assert again.version == 3
    assert again.action is Action.CREATE
    assert seen.versions() == [1, 2, 3]


async def test_collection_create_get_delete(hub: ConfigHub) -> None:
    items = hub.manager(ItemsManager)
    seen = record_changes(items)
    await items.create("a", {"title": "A"})
    await items.create("b", Item(title="B", weight=2))
    assert items.keys() == ["a", "b"]
    assert dict(items.items()) == {"a": Item(title="A"), "b": Item(title="B", weight=2)}
    assert "a" in items
    with pytest.raises(ConcurrencyConflict, match="already exists"):
        await items.create("a", {"title": "again"})
    with pytest.raises(NotFound):
        await items.update({"title": "x"}, key="zzz")
    with pytest.raises(ValidationFailed) as caught:
        await items.create("c", {"weight": 0})
    assert set(caught.value.paths) == {"title", "weight"}

    removed = await items.delete("a")
    assert removed.new is None
    assert removed.old == Item(title="A")
    assert "a" not in items
    assert items.find("a") is None
    with pytest.raises(NotFound):
        items.get("a")
    with pytest.raises(NotFound):
        await items.delete("a")
    # The tombstone's data is SQL NULL: it does not count as a live document.
    assert (await hub.store.namespaces())["items"] == 1
    # A deleted item can come back; its versions continue.
    back = await items.create("a", {"title": "A2"})
    assert back.version == 3
    assert [(c.key, c.version, c.action) for c in seen.changes] == [
        ("a", 1, Action.CREATE),
        ("b", 1, Action.CREATE),
        ("a", 2, Action.DELETE),
        ("a", 3, Action.CREATE),
    ]


async def test_secrets_are_masked_in_history_and_encrypted_at_rest(
    hub: ConfigHub, database_url: str
) -> None:
    secret = "hunter2-but-longer-and-unique"
    flags = hub.manager(FlagsManager)
    await flags.update({"token": secret})
    assert flags.current.token is not None
    assert flags.current.token.get_secret_value() == secret
    assert secret not in repr(flags.current)
    (record,) = await flags.history()
    assert record.after is not None
    assert record.after["token"].startswith("**********#")
    from sqlalchemy import text

    async with hub.engine.connect() as conn:
        rows: list[Any] = [
            *(await conn.execute(text("SELECT * FROM config_documents"))),
            *(await conn.execute(text("SELECT * FROM config_changes"))),
        ]
    assert rows
    assert secret not in repr(rows)


async def test_reload_from_database_gives_the_same_values(
    hub: ConfigHub, database_url: str, hub_env: dict[str, str]
) -> None:
    flags = hub.manager(FlagsManager)
    items = hub.manager(ItemsManager)
    await flags.update({"name": "kept", "token": "s3cr3t-token"})
    await items.create("i", {"title": "t", "password": "pw-123456"})
    async with connect(database_url, hub_env, managers=ALL) as other:
        assert other.manager(FlagsManager).current == flags.current
        assert other.manager(FlagsManager).version() == 1
        assert dict(other.manager(ItemsManager).items()) == dict(items.items())


async def test_manager_not_loaded_is_a_clear_error(hub: ConfigHub) -> None:
    class Other(ConfigurationManager[Flags]):
        namespace = "other"
        model = Flags

    with pytest.raises(NotFound, match=r"Other is not loaded.*managers="):
        hub.manager(Other)
    with pytest.raises(NotFound, match="known: counter, flags, items"):
        hub.by_namespace("nope")


async def test_singleton_and_collection_misuse_is_refused(hub: ConfigHub) -> None:
    with pytest.raises(TypeError):
        _ = hub.manager(ItemsManager).current
    with pytest.raises(TypeError):
        await hub.manager(FlagsManager).create("x", {})


def test_manager_definitions_are_checked_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="lower-case letters"):

        class BadName(ConfigurationManager[Flags]):
            namespace = "Bad-Name"
            model = Flags

    with pytest.raises(TypeError, match=r"declared ConfigurationManager\[Flags\]"):

        class WrongModel(ConfigurationManager[Flags]):
            namespace = "wrong"
            model = Item


async def test_over_long_key_or_actor_is_refused_before_the_database(hub: ConfigHub) -> None:
    items = hub.manager(ItemsManager)
    with pytest.raises(ValidationFailed, match="key: is longer than 255") as caught:
        await items.create("k" * 300, {"title": "t"})
    assert caught.value.paths == ("key",)
    with pytest.raises(ValidationFailed, match="actor: is longer than 255"):
        await hub.manager(FlagsManager).update({"name": "x"}, actor="a" * 300)
    assert await hub.manager(FlagsManager).history() == []


async def test_a_masked_secret_pasted_back_is_refused(hub: ConfigHub) -> None:
    flags = hub.manager(FlagsManager)
    await flags.update({"token": "real-secret-value"})
    (record,) = await flags.history()
    assert record.after is not None
    shown = record.after["token"]
    with pytest.raises(ValidationFailed, match="token: is a masked secret"):
        await flags.update({"token": shown, "name": "other"})
    assert flags.current.token is not None
    assert flags.current.token.get_secret_value() == "real-secret-value"
