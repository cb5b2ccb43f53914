"""Export and import (issue 13), on real SQLite and PostgreSQL, and through the CLI.

Export -> import into a fresh database gives the same effective values in every
environment; an import is one version-checked change set; bad files get one line, a
documented exit code, and nothing is written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from confman.backup import BadFile, KeysCannotDecrypt
from confman.change import Action
from confman.cli import cli as confman
from confman.exceptions import ChangeSetConflict
from confman.managers import CacheConfigurationManager as Cache
from confman.secrets import generate_key
from confman.transfer import (
    FORMAT,
    OMITTED,
    dump_export,
    export,
    parse_export,
    plan_import,
)

from . import test_backup as shared
from .support import connect, run
from .test_backup import MANAGERS, REDIS, populate, values

# The fixtures test_backup defines: pytest collects fixtures from the module's attributes.
second_database = shared.second_database
workdir = shared.workdir

ENVIRONMENTS = [None, "staging", "production"]


async def exported(url: str, env: dict[str, str], **options: Any) -> str:
    async with connect(url, env=env) as hub:
        return dump_export(await export(hub, **options))


async def imported(url: str, env: dict[str, str], text: str, **options: Any) -> list[Any]:
    async with connect(url, env=env, managers=MANAGERS) as hub:
        plan = await plan_import(hub, parse_export(text, "file"), "file", **options)
        await plan.preview()
        _id, changes = await plan.commit(actor="ops")
        return changes


async def effective(url: str, env: dict[str, str]) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for name in ENVIRONMENTS:
        async with connect(url, env=env, managers=MANAGERS, environment=name) as hub:
            seen[name] = {cls.namespace: values(hub.manager(cls)) for cls in MANAGERS}
    return seen


async def test_export_import_into_a_fresh_database_gives_the_same_effective_values(
    database_url: str, second_database: str, hub_env: dict[str, str]
) -> None:
    await populate(database_url, hub_env)
    text = await exported(database_url, hub_env, with_secrets=True)
    doc = yaml.safe_load(text)
    assert doc["format"] == FORMAT and doc["complete"] is True
    assert [e["name"] for e in doc["environments"]] == ["production", "staging"]
    where = {(d["environment"], d["namespace"], d["key"]) for d in doc["documents"]}
    assert ("staging", "cache", "default") in where and ("base", "cache", "default") in where
    assert ("production", "model_provider", "p3") in where  # the hidden overlay
    assert ("base", "model_provider", "p2") not in where  # a tombstone holds nothing
    assert "hunter2" not in text and "$fernet" in text

    changes = await imported(second_database, hub_env, text, force=True)
    assert {c.action for c in changes} == {Action.IMPORT}
    assert len({c.change_set for c in changes}) == 1
    assert await effective(second_database, hub_env) == await effective(database_url, hub_env)
    # Importing the same file again changes nothing.
    again = await imported(second_database, hub_env, text, force=True)
    assert all(c.unchanged for c in again)


async def test_an_import_is_version_checked_unless_forced(
    database_url: str, hub_env: dict[str, str]
) -> None:
    await populate(database_url, hub_env)
    text = await exported(database_url, hub_env)
    edited = text.replace("default_ttl_seconds: 60", "default_ttl_seconds: 90")
    async with connect(database_url, env=hub_env, managers=[Cache]) as hub:
        await hub.manager(Cache).update({"max_entries": 7}, environment="staging")
    with pytest.raises(ChangeSetConflict):
        await imported(database_url, hub_env, edited)
    async with connect(database_url, env=hub_env, managers=[Cache], environment="staging") as hub:
        assert hub.manager(Cache).current.default_ttl_seconds == 60  # nothing written
    await imported(database_url, hub_env, edited, force=True)
    async with connect(database_url, env=hub_env, managers=[Cache], environment="staging") as hub:
        current = hub.manager(Cache).current
        assert current.default_ttl_seconds == 90
        assert current.max_entries == 10_000  # the file's overlay, as written there
        assert current.redis_url.get_secret_value() == REDIS  # omitted: the stored one kept


async def test_omitted_secrets_keep_the_stored_one_or_are_refused_where_none_is(
    database_url: str, second_database: str, hub_env: dict[str, str]
) -> None:
    await populate(database_url, hub_env)
    text = await exported(database_url, hub_env, namespaces=["cache"], environment=None)
    doc = yaml.safe_load(text)
    base = next(d for d in doc["documents"] if d["environment"] == "base")
    assert base["data"]["redis_url"] == dict(OMITTED)
    with pytest.raises(BadFile, match=r"cache/default: field redis_url: the secret was omitted"):
        await imported(second_database, hub_env, text, force=True)
    with pytest.raises(KeysCannotDecrypt, match="field redis_url"):
        await imported(
            second_database,
            {"CONFMAN_ENCRYPTION_KEY": generate_key()},
            await exported(database_url, hub_env, with_secrets=True),
            force=True,
        )


async def test_export_of_one_environment_holds_the_base_and_its_overlays(
    database_url: str, hub_env: dict[str, str]
) -> None:
    await populate(database_url, hub_env)
    doc = yaml.safe_load(await exported(database_url, hub_env, environment="production",
                                        everything=False))  # fmt: skip
    assert {d["environment"] for d in doc["documents"]} == {"base", "production"}
    assert [e["name"] for e in doc["environments"]] == ["production"]
    base = yaml.safe_load(await exported(database_url, hub_env, everything=False))
    assert {d["environment"] for d in base["documents"]} == {"base"}


# --------------------------------------------------------------------------- the CLI


def cli(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(confman, list(args), catch_exceptions=False, env=env)
    assert result.exit_code == code, (args, result.output)
    assert "Traceback" not in result.output
    if code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("confman: error: "), result.stderr
    return result


@pytest.fixture
def populated(workdir: Path) -> Path:
    env = {"CONFMAN_ENCRYPTION_KEY": os.environ["CONFMAN_ENCRYPTION_KEY"]}
    run(populate(f"sqlite+aiosqlite:///{workdir / 'confman.db'}", env))
    return workdir


def test_cli_export_and_import(populated: Path) -> None:
    text = cli("export").stdout
    assert yaml.safe_load(text)["format"] == FORMAT
    as_json = json.loads(cli("export", "cache", "-e", "staging", "--format", "json").stdout)
    assert {(d["environment"], d["namespace"]) for d in as_json["documents"]} == {
        ("base", "cache"),
        ("staging", "cache"),
    }
    assert "$fernet" in cli("export", "--with-secrets").stdout
    cli("export", "nosuch", code=2)

    (populated / "e.yaml").write_text(
        text.replace("default_ttl_seconds: 60", "default_ttl_seconds: 61")
    )
    dry = cli("import", "e.yaml", "--dry-run")
    assert dry.stdout.splitlines() == [
        "~ cache/default in staging: default_ttl_seconds",
        "dry run: 1 document(s) would change; nothing was written",
    ]
    assert dry.stderr == ""  # no progress when stderr is not a terminal
    assert "default_ttl_seconds: 60" in cli("export", "cache", "-e", "staging").stdout
    done = cli("import", "e.yaml", "--reason", "tune")
    assert done.stdout.splitlines()[-1].startswith("imported 1 document(s) from e.yaml as change")
    history = cli("history", "cache", "-e", "staging").stdout.splitlines()
    assert history[1].split()[2] == "import" and "tune" in history[1].split()
    cli("import", "e.yaml", code=3)  # the versions in the file are stale now
    cli("import", "e.yaml", "--force")


def test_cli_import_refuses_bad_files_with_one_line_and_writes_nothing(
    populated: Path, sqlite_template: Path
) -> None:
    text = cli("export").stdout
    secret_text = cli("export", "--with-secrets").stdout
    before = cli("export").stdout.split("\n", 2)[2]  # without format and time
    bad = {
        "truncated.yaml": (text[: len(text) * 2 // 3], 6, "truncated"),
        "cut.yaml": (text[:40] + "\n  - {oops", 6, "not valid YAML"),
        "version.yaml": (text.replace(FORMAT, "confman-export/2"), 6, "is not one this reads"),
        "field.yaml": (
            text.replace("default_ttl_seconds: 60", "default_ttl_secondz: 60"),
            6,
            "cache/default in staging: unknown field(s) default_ttl_secondz",
        ),
        "namespace.yaml": (
            text.replace("namespace: cache", "namespace: cachez", 1),
            6,
            "unknown namespace 'cachez'",
        ),
        "plaintext.yaml": (
            text.replace("redis_url:\n      $secret: omitted", "redis_url: redis://x:6379/0"),
            6,
            "field redis_url: a plaintext secret",
        ),
        "invalid.yaml": (
            text.replace("default_ttl_seconds: 60", "default_ttl_seconds: -1"),
            4,
            "cache/default in staging: default_ttl_seconds",
        ),
        "member.yaml": (
            text.replace("complete: true", "completed: true\ncomplete: true"),
            6,
            "unknown member(s) completed",
        ),
    }
    assert "redis_url: redis://x:6379/0" in bad["plaintext.yaml"][0]
    for name, (content, code, message) in bad.items():
        (populated / name).write_text(content)
        result = cli("import", name, "--force", code=code)
        assert f"confman: error: {name}: " in result.stderr and message in result.stderr, (
            name,
            result.stderr,
        )
        assert result.stderr.strip().endswith("nothing was written")
    (populated / "secrets.yaml").write_text(secret_text)
    shutil.copy(sqlite_template, populated / "other.db")
    wrong = cli(
        "import", "secrets.yaml", "--force", "--database-url", "sqlite:///other.db",
        code=7, env={"CONFMAN_ENCRYPTION_KEY": generate_key()},
    )  # fmt: skip
    assert "cannot be decrypted with the configured encryption keys" in wrong.stderr
    assert cli("export").stdout.split("\n", 2)[2] == before
    assert "documents: []" in cli("export", "--database-url", "sqlite:///other.db").stdout


def test_cli_import_creates_missing_environments(workdir: Path, sqlite_template: Path) -> None:
    env = {"CONFMAN_ENCRYPTION_KEY": os.environ["CONFMAN_ENCRYPTION_KEY"]}
    run(populate(f"sqlite+aiosqlite:///{workdir / 'confman.db'}", env))
    (workdir / "all.yaml").write_text(cli("export", "--with-secrets").stdout)
    shutil.copy(sqlite_template, workdir / "fresh.db")
    fresh = ["--database-url", "sqlite:///fresh.db"]
    cli("import", "all.yaml", "--dry-run", *fresh, code=3)  # the fresh database holds none
    dry = cli("import", "all.yaml", "--dry-run", "--force", *fresh).stdout
    assert "+ environment staging (created first" in dry
    assert cli("env", "list", *fresh).stdout.count("\n") == 1  # still none
    cli("import", "all.yaml", *fresh, code=3)  # versions: the fresh database holds none
    cli("import", "all.yaml", "--force", *fresh)
    assert (
        cli("get", "cache", "-e", "staging", *fresh).stdout
        == cli("get", "cache", "-e", "staging").stdout
    )
