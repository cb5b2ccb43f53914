"""Alembic owns the schema: the models and the migrations agree, and both directions work."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from confman import ConfigHub, SchemaOutOfDate
from confman.store import create_engine, head_revision
from confman.store.schema import SCHEMA_HEAD, current_revisions, downgrade, upgrade_async
from confman.store.tables import metadata
from tests.support import drop_pg_database, new_pg_database, pg_url, require_service

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = await new_pg_database()
    try:
        yield pg_url(name)
    finally:
        await drop_pg_database(name)


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_upgrade_downgrade_upgrade_round_trips(empty_url: str) -> None:
    await upgrade_async(empty_url)
    assert {"config_documents", "config_changes"} <= await _tables(empty_url)
    await _downgrade(empty_url)
    assert await _tables(empty_url) <= {"alembic_version"}
    await upgrade_async(empty_url)
    engine = create_engine(empty_url)
    try:
        assert await current_revisions(engine) == (head_revision(),)
    finally:
        await engine.dispose()


async def _downgrade(url: str) -> None:
    import asyncio

    await asyncio.to_thread(downgrade, url, "base")


def test_schema_head_constant_is_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_HEAD


async def test_hub_refuses_a_database_that_is_not_at_head(empty_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="confman db upgrade") as caught:
        async with ConfigHub.connect(empty_url, env={}, env_files=(), managers=[]):
            pass
    assert caught.value.current == ()
    assert caught.value.head == head_revision()


def test_plain_alembic_upgrade_head_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    env = {**os.environ, "CONFMAN_DATABASE_URL": url}
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run(
        [str(alembic), "upgrade", "head"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Running upgrade  -> 0001" in result.stderr


async def test_upgrading_a_populated_database_keeps_everything_as_base_data(
    empty_url: str,
) -> None:
    """Documents, versions and history written at the previous head (0002) survive the
    environments migration as the base, and a hub reads and extends them as before."""
    import asyncio
    import json
    from datetime import UTC, datetime

    from sqlalchemy import text

    from tests.models import FlagsManager, ItemsManager

    await asyncio.to_thread(upgrade_async_blocking, empty_url, "0002")
    engine = create_engine(empty_url)
    now = datetime.now(UTC)
    rows = [  # (namespace, key, version, data)
        ("flags", "default", 1, {"name": "one"}),
        ("flags", "default", 2, {"name": "two", "ratio": 0.25}),
        ("items", "a", 1, {"title": "A"}),
    ]
    try:
        async with engine.begin() as conn:
            for namespace, key, version, data in rows:
                await conn.execute(
                    text(
                        "INSERT INTO config_changes (namespace, key, version, action, actor, "
                        "reason, before, after, changed, data, origin, committed_at) VALUES "
                        "(:ns, :key, :v, 'update', 'old', NULL, NULL, :d, :ch, :d, 'old', :at)"
                    ),
                    {"ns": namespace, "key": key, "v": version, "d": json.dumps(data),
                     "ch": json.dumps(sorted(data)), "at": now},
                )  # fmt: skip
            for namespace, key, version, data in (rows[1], rows[2]):
                await conn.execute(
                    text(
                        "INSERT INTO config_documents (namespace, key, data, version, "
                        "updated_at, updated_by) VALUES (:ns, :key, :d, :v, :at, 'old')"
                    ),
                    {"ns": namespace, "key": key, "d": json.dumps(data), "v": version, "at": now},
                )
    finally:
        await engine.dispose()
    await upgrade_async(empty_url)
    managers = [FlagsManager, ItemsManager]
    async with ConfigHub.connect(empty_url, env={}, env_files=(), managers=managers) as hub:
        flags, items = hub.manager(FlagsManager), hub.manager(ItemsManager)
        assert (flags.current.name, flags.current.ratio, flags.version()) == ("two", 0.25, 2)
        assert items.get("a").title == "A"
        history = await flags.history()
        assert [(r.version, r.environment, r.actor) for r in history] == [
            (2, None, "old"),
            (1, None, "old"),
        ]
        assert (await flags.update({"name": "three"})).version == 3
        await hub.create_environment("staging")
        await flags.update({"name": "s"}, environment="staging")  # a second row of the key
        await flags.rollback(to_version=1)
        assert flags.current.name == "one"
    # Back to 0002: the base survives (the overlay has no place there), then up again.
    await asyncio.to_thread(downgrade, empty_url, "0002")
    await upgrade_async(empty_url)
    async with ConfigHub.connect(empty_url, env={}, env_files=(), managers=managers) as hub:
        assert hub.manager(FlagsManager).current.name == "one"
        assert hub.manager(FlagsManager).version() == 4


def upgrade_async_blocking(url: str, revision: str) -> None:
    from confman.store.schema import upgrade

    upgrade(url, revision)
