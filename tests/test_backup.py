"""Backup and restore of a whole database (issue 13), on real SQLite and PostgreSQL.

backup -> restore -> backup must give the same document apart from its time, change
log included; a hub on the restored database serves the same values and catches up
with new writes; bad files and wrong keys are refused with one line, nothing written.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from confman import ConfigHub
from confman.backup import (
    FORMAT,
    BadFile,
    DatabaseNotEmpty,
    KeysCannotDecrypt,
    backup,
    check_keys,
    read_backup,
    restore,
)
from confman.cli import cli as confman
from confman.managers import CacheConfigurationManager as Cache
from confman.managers import ModelProviderConfigurationManager as Providers
from confman.managers import RouterConfigurationManager as Router
from confman.secrets import generate_key

from .support import connect, own_database

MANAGERS: list[Any] = [Cache, Providers, Router]
PROVIDER = {"type": "openai", "api_key": "sk-one", "models": ["gpt-4o"]}
ALIAS = {"aliases": {"fast": {"deployments": [{"provider": "p1", "model": "gpt-4o"}]}}}
REDIS = "redis://:hunter2@cache:6379/0"


async def populate(url: str, env: dict[str, str]) -> None:
    """Every kind of row: environments, base and overlay documents, a secret, a change
    set, a tombstone, a hidden overlay, a fencing token."""
    async with connect(url, env=env, managers=MANAGERS) as hub:
        await hub.create_environment("staging", description="pre-production", actor="ops")
        await hub.create_environment("production")
        cache = hub.manager(Cache)
        await cache.update({"backend": "redis", "redis_url": REDIS}, actor="ops")
        await cache.update({"default_ttl_seconds": 60}, environment="staging")
        async with hub.change_set(actor="ops", reason="add p1 and route to it") as cs:
            cs.create(Providers, "p1", PROVIDER)
            cs.update(Router, ALIAS)
        providers = hub.manager(Providers)
        await providers.create("p2", {"type": "openai", "api_key": "sk-two", "models": ["m"]})
        await providers.delete("p2")  # a tombstone in the base
        await providers.create("p3", {"type": "openai", "api_key": "sk-3", "models": ["m"]})
        await providers.delete("p3", environment="production")  # a hidden overlay
        await hub.store.claim_fencing_token("cluster-a", 7, "instance-1")


def values(manager: Any) -> Any:
    return dict(manager.items()) if manager.keyed else manager.current


def without_time(text: str) -> str:
    return re.sub(r'"created_at": "[^"]*"', '"created_at": "-"', text, count=1)


async def take(url: str, env: dict[str, str]) -> str:
    async with connect(url, env=env) as hub:
        buffer = io.StringIO()
        await backup(hub.store, buffer, page=3)  # small pages: paging is exercised
        return buffer.getvalue()


@pytest.fixture
def second_database(
    database_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """Another migrated, empty database of the same kind as ``database_url``."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    directory = tmp_path / "second"
    directory.mkdir()
    with own_database(kind, request, directory) as url:
        yield url


async def restore_text(url: str, env: dict[str, str], text: str, **options: Any) -> None:
    async with connect(url, env=env) as hub:
        tables = read_backup(io.StringIO(text))
        check_keys(tables, hub.keyring, "backup")
        await restore(hub.store, tables, page=4, **options)


async def test_backup_restore_backup_is_identical_and_a_hub_catches_up(
    database_url: str, second_database: str, hub_env: dict[str, str]
) -> None:
    await populate(database_url, hub_env)
    first = await take(database_url, hub_env)
    doc = json.loads(first)
    assert doc["format"] == FORMAT
    assert doc["counts"]["config_changes"] >= 8 and doc["counts"]["config_fencing"] == 1
    assert "hunter2" not in first and "sk-one" not in first  # ciphertext as stored
    namespaces = {row["namespace"] for row in doc["config_documents"]}
    assert {"_environments", "cache", "model_provider", "router"} <= namespaces

    await restore_text(second_database, hub_env, first)
    second = await take(second_database, hub_env)
    assert without_time(second) == without_time(first)  # change log and seqs included

    last_seq = max(row["seq"] for row in doc["config_changes"])
    async with (
        connect(database_url, env=hub_env, managers=MANAGERS, environment="staging") as old,
        connect(second_database, env=hub_env, managers=MANAGERS, environment="staging") as new,
    ):
        for cls in MANAGERS:
            assert values(new.manager(cls)) == values(old.manager(cls))
        assert new.manager(Cache).current.redis_url.get_secret_value() == REDIS
        assert sorted(new.known_environments) == ["production", "staging"]
        history = await new.manager(Cache).history(environment=None)
        assert [h.version for h in history] == [
            h.version for h in await old.manager(Cache).history(environment=None)
        ]
        # A writer on the restored database: its seq continues past the restored log,
        # and the hub started before it catches up.
        async with connect(second_database, env=hub_env, managers=MANAGERS) as writer:
            change = await writer.manager(Cache).update({"max_entries": 42})
        assert change.seq > last_seq
        await new.catch_up()
        assert new.manager(Cache).current.max_entries == 42
    async with connect(second_database, env=hub_env, managers=MANAGERS) as late:
        assert late.manager(Cache).current.max_entries == 42
        assert "p3" in late.manager(Providers)


async def test_restore_refuses_a_database_that_is_not_empty_unless_forced(
    database_url: str, second_database: str, hub_env: dict[str, str]
) -> None:
    await populate(database_url, hub_env)
    text = await take(database_url, hub_env)
    async with connect(second_database, env=hub_env, managers=[Cache]) as hub:
        await hub.manager(Cache).update({"max_entries": 5})
    with pytest.raises(DatabaseNotEmpty, match="restore goes into an empty database"):
        await restore_text(second_database, hub_env, text)
    async with connect(second_database, env=hub_env, managers=[Cache]) as hub:
        assert hub.manager(Cache).current.max_entries == 5  # nothing written
    await restore_text(second_database, hub_env, text, force=True)
    assert without_time(await take(second_database, hub_env)) == without_time(text)


async def test_restore_with_other_keys_says_so_and_writes_nothing(
    database_url: str, second_database: str, hub_env: dict[str, str]
) -> None:
    await populate(database_url, hub_env)
    text = await take(database_url, hub_env)
    other = {"CONFMAN_ENCRYPTION_KEY": generate_key()}
    with pytest.raises(KeysCannotDecrypt, match="CONFMAN_ENCRYPTION_KEY"):
        await restore_text(second_database, other, text)
    doc = json.loads(await take(second_database, hub_env))
    assert doc["counts"] == {"config_documents": 0, "config_changes": 0, "config_fencing": 0}
    # An old key kept after a new one still decrypts: rotation's procedure works here.
    both = {"CONFMAN_ENCRYPTION_KEY": f"{generate_key()},{hub_env['CONFMAN_ENCRYPTION_KEY']}"}
    await restore_text(second_database, both, text)


def test_read_backup_refuses_bad_files() -> None:
    good = json.dumps(
        {
            "format": FORMAT,
            "created_at": "2026-01-01T00:00:00+00:00",
            "schema": [],
            "config_documents": [],
            "config_changes": [],
            "config_fencing": [],
            "counts": {"config_documents": 0, "config_changes": 0, "config_fencing": 0},
        }
    )
    assert read_backup(io.StringIO(good)) == {
        "config_documents": [],
        "config_changes": [],
        "config_fencing": [],
    }
    bad = {
        "truncated": (good[: len(good) // 2], "not a complete JSON document"),
        "version": (good.replace("confman-backup/1", "confman-backup/9"), "is not one this"),
        "format": ('{"format": "other"}', "not a confman backup"),
        "count": (good.replace('"config_fencing": 0}', '"config_fencing": 1}'), "count says"),
    }
    for name, (text, message) in bad.items():
        with pytest.raises(BadFile, match=message):
            read_backup(io.StringIO(text), name)
    row = '{"cluster": "c", "token": 1, "holder": "h", "updated_at": "2026-01-01", "x": 1}'
    text = good.replace('"config_fencing": []', f'"config_fencing": [{row}]').replace(
        '"config_fencing": 0}', '"config_fencing": 1}'
    )
    with pytest.raises(BadFile, match=r"config_fencing\[0\]: unknown field\(s\) x"):
        read_backup(io.StringIO(text), "unknown")


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path) -> Path:
    """A directory with a migrated ./confman.db and an encryption key, no other CONFMAN_*."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith("CONFMAN_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CONFMAN_ENCRYPTION_KEY", generate_key())
    shutil.copy(sqlite_template, tmp_path / "confman.db")
    return tmp_path


def test_cli_backup_and_restore(workdir: Path, sqlite_template: Path) -> None:
    from .support import run

    env = {"CONFMAN_ENCRYPTION_KEY": os.environ["CONFMAN_ENCRYPTION_KEY"]}
    run(populate(f"sqlite+aiosqlite:///{workdir / 'confman.db'}", env))
    runner = CliRunner()
    made = runner.invoke(confman, ["backup"], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    assert made.stderr == ""  # quiet when stderr is not a terminal
    (workdir / "backup.json").write_text(made.stdout)
    shutil.copy(sqlite_template, workdir / "restored.db")
    target = ["--database-url", "sqlite:///restored.db"]
    done = runner.invoke(confman, ["restore", "backup.json", *target], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("restored ")
    again = runner.invoke(confman, ["backup", *target], catch_exceptions=False)
    assert without_time(again.stdout) == without_time(made.stdout)

    refused = runner.invoke(confman, ["restore", "backup.json", *target])
    assert refused.exit_code == 1
    assert refused.stderr.count("\n") == 1 and "--force replaces everything" in refused.stderr
    forced = runner.invoke(confman, ["restore", "backup.json", "--force", *target])
    assert forced.exit_code == 0, forced.output

    shutil.copy(sqlite_template, workdir / "empty.db")
    empty = ["--database-url", "sqlite:///empty.db"]
    wrong = runner.invoke(
        confman, ["restore", "backup.json", *empty], env={"CONFMAN_ENCRYPTION_KEY": generate_key()}
    )
    assert wrong.exit_code == 7
    assert wrong.stderr.count("\n") == 1 and "cannot be decrypted" in wrong.stderr
    text = made.stdout
    bad_files = {
        "truncated.json": text[: len(text) // 2],
        "version.json": text.replace(FORMAT, "confman-backup/2", 1),
        "unknown.json": text.replace('"holder": ', '"holder2": 1, "holder": ', 1),
    }
    for name, content in bad_files.items():
        (workdir / name).write_text(content)
        result = runner.invoke(confman, ["restore", name, *empty])
        assert result.exit_code == 6, (name, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"confman: error: {name}: "), lines
        assert lines[0].endswith("nothing was written")
    after = runner.invoke(confman, ["backup", *empty], catch_exceptions=False)
    assert json.loads(after.stdout)["counts"]["config_documents"] == 0


async def test_backup_of_an_empty_database_restores(
    database_url: str, second_database: str, hub_env: dict[str, str]
) -> None:
    text = await take(database_url, hub_env)
    await restore_text(second_database, hub_env, text)
    assert without_time(await take(second_database, hub_env)) == without_time(text)
    async with connect(second_database, env=hub_env, managers=[Cache]) as hub:
        assert isinstance(hub, ConfigHub)
        change = await hub.manager(Cache).update({"max_entries": 3})
        assert change.seq >= 1


def test_progress_is_drawn_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.console import Console

    from confman.cli.progress import progress

    with progress("backing up") as update:
        update("config_changes", 1, 2)
    assert capsys.readouterr().err == ""  # piped: nothing at all
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    with progress("backing up") as update:
        update("config_changes", 1, 2)
    assert "backing up: config_changes" in capsys.readouterr().err
