"""A stored document that no longer validates never takes the service down."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, update

from confman import ConfigHub, Layer, ValidationFailed
from confman.store.tables import config_changes, config_documents
from confman.testing import record_changes
from tests.models import ALL, Flags, FlagsManager, ItemsManager
from tests.support import connect


async def _write_raw(
    hub: ConfigHub, namespace: str, key: str, data: dict[str, Any], version: int
) -> None:
    """What an older release, a manual SQL edit or a bad migration could leave behind."""
    now = datetime.now(UTC)
    row = {"namespace": namespace, "key": key, "data": data, "version": version}
    async with hub.engine.begin() as conn:
        if version == 1:
            await conn.execute(insert(config_documents).values(**row, updated_at=now))
        else:
            await conn.execute(
                update(config_documents)
                .where(config_documents.c.namespace == namespace, config_documents.c.key == key)
                .values(data=data, version=version, updated_at=now)
            )
        await conn.execute(
            insert(config_changes).values(
                **row, action="update", changed=[], origin="sql", committed_at=now
            )
        )


async def test_corrupt_document_at_start_up_serves_defaults_and_reports(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(database_url, managers=ALL) as hub:
        await _write_raw(hub, "flags", "default", {"ratio": "lots", "name": "x"}, 1)
        await _write_raw(hub, "items", "bad", {"weight": 2}, 1)
        await hub.manager(ItemsManager).create("good", {"title": "ok"})
    with caplog.at_level(logging.ERROR, logger="confman.manager"):
        async with connect(database_url, managers=ALL) as hub:
            flags = hub.manager(FlagsManager)
            items = hub.manager(ItemsManager)
            assert flags.current == Flags()
            assert items.keys() == ["good"]
            problems = {(p.namespace, p.key): p for p in hub.problems()}
            assert set(problems) == {("flags", "default"), ("items", "bad")}
            flag_problem = problems["flags", "default"]
            assert flag_problem.source == "database (flags/default v1)"
            assert [e.path for e in flag_problem.errors] == ["ratio"]
            assert problems["items", "bad"].errors[0].path == "title"
            assert "flags/default v1" in caplog.text

            # A valid write heals it: the patch applies to what is stored.
            with pytest.raises(ValidationFailed):
                await flags.update({"enabled": True})  # still carries the bad ratio
            healed = await flags.update({"ratio": 0.2}, expected_version=1)
            assert healed.version == 2
            assert flags.current.ratio == 0.2 and flags.current.name == "x"
            assert flags.problems() == []


async def test_corrupt_change_from_elsewhere_keeps_the_last_valid_value(database_url: str) -> None:
    async with connect(database_url, managers=ALL) as hub:
        flags = hub.manager(FlagsManager)
        await flags.update({"name": "good"})
        seen = record_changes(flags)
        await _write_raw(hub, "flags", "default", {"name": "bad", "ratio": 99}, 2)
        await hub.catch_up()
        assert flags.current.name == "good"  # the last valid value stays in service
        assert flags.version() == 2  # but the stored version is known...
        (problem,) = flags.problems()
        assert (problem.version, problem.errors[0].path) == (2, "ratio")
        assert seen.changes == []  # ...and nothing was emitted
        await flags.update(Flags(name="fixed"))
        assert flags.current.name == "fixed"
        assert seen.versions() == [3]
        assert flags.problems() == []


@pytest.mark.parametrize(
    "data",
    [[1, 2], "oops", {"title": "t", "password": {"$fernet": 5}}],
    ids=["list", "string", "malformed-token"],
)
async def test_rows_that_are_not_documents_are_problems_not_crashes(
    database_url: str, data: Any
) -> None:
    async with connect(database_url, managers=ALL) as hub:
        await _write_raw(hub, "items", "bad", data, 1)
        await hub.manager(ItemsManager).create("good", {"title": "ok"})
    async with connect(database_url, managers=ALL) as hub:
        items = hub.manager(ItemsManager)
        assert items.keys() == ["good"]
        (problem,) = items.problems()
        assert (problem.key, problem.version) == ("bad", 1)


async def test_an_unreadable_row_does_not_cost_other_changes_their_turn(
    database_url: str,
) -> None:
    async with connect(database_url, managers=ALL) as hub:
        await hub.catch_up()
        # In one catch-up batch: an unreadable row, then good changes after it.
        await _write_raw(hub, "items", "bad", [1, 2], 1)
        async with connect(database_url, managers=ALL) as writer:
            await writer.manager(FlagsManager).update({"name": "after"})
            await writer.manager(ItemsManager).create("fine", {"title": "f"})
        await hub.catch_up()
        assert hub.manager(FlagsManager).current.name == "after"
        assert hub.manager(ItemsManager).keys() == ["fine"]
        assert [p.key for p in hub.problems()] == ["bad"]


async def test_explain_names_the_source_of_the_value_in_service(database_url: str) -> None:
    async with connect(database_url, managers=ALL) as hub:
        await _write_raw(hub, "flags", "default", {"ratio": "x", "name": "kept?"}, 1)
    async with connect(database_url, managers=ALL) as hub:
        sources = {s.path: s for s in hub.manager(FlagsManager).explain()}
        # The refused document serves nothing: every field is a default.
        assert sources["name"].layer is Layer.DEFAULT
        assert sources["name"].value == "basic"
