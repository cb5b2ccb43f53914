"""The CLI's environments (issue 12): ``-e`` on reads and writes, ``env``, ``diff``,
``reset``, on real SQLite (and PostgreSQL for the round trip).

In-process with Click's `CliRunner` (what a shell sees: one-line errors, exit codes);
``watch`` and one smoke test run real processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from confman.cli import cli as confman

from .test_cli import APP_MODULE, SECRET, Cli, clean_env, finish, wait_until_watching

Invoke = Callable[..., Result]


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path) -> Invoke:
    """``confman ARGS`` in-process in a directory with a migrated ./confman.db and the
    test app's managers (flags, provider), without the machine's CONFMAN_* variables."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith("CONFMAN_")]:
        monkeypatch.delenv(name)
    shutil.copy(sqlite_template, tmp_path / "confman.db")
    (tmp_path / "cli_env_app.py").write_text(APP_MODULE)
    monkeypatch.setenv("CONFMAN_APP", "cli_env_app:MANAGERS")
    runner = CliRunner()

    def run(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
        result = runner.invoke(confman, list(args), catch_exceptions=False, env=env)
        assert result.exit_code == code, (args, result.output)
        assert "Traceback" not in result.output
        if code:
            lines = result.stderr.strip().splitlines()
            assert lines[-1].startswith("confman: error: "), result.stderr
        return result

    return run


@pytest.fixture
def proc(tmp_path: Path, sqlite_template: Path) -> Cli:
    """``confman`` as a real process, in a directory with a migrated ./confman.db."""
    work = tmp_path / "proc"
    work.mkdir()
    shutil.copy(sqlite_template, work / "confman.db")
    return Cli(work, clean_env())


def rows(text: str) -> dict[str, list[str]]:
    """A table's rows by their first cell (split on runs of spaces)."""
    return {line.split()[0]: re.split(r"\s{2,}", line) for line in text.splitlines()[1:]}


def make_environments(invoke: Invoke) -> None:
    invoke("env", "create", "staging", "--description", "pre-production")
    invoke("env", "create", "production")


# --------------------------------------------------------------------------- env


def test_env_list_create_delete(invoke: Invoke) -> None:
    assert invoke("env", "list").stdout.split() == ["NAME", "DOCUMENTS", "DESCRIPTION", "BY",
                                                     "SINCE"]  # fmt: skip
    r = invoke("env", "create", "staging", "--description", "pre-production", "--actor", "ops")
    assert r.stdout.strip() == "created environment staging: it inherits every base document"
    invoke("env", "create", "production")
    listed = rows(invoke("env", "list").stdout)
    assert listed["staging"][1:4] == ["0", "pre-production", "ops"]
    assert listed["production"][1] == "0"
    # An existing name is a conflict; a malformed or reserved one a usage error.
    r = invoke("env", "create", "staging", code=3)
    assert "environment 'staging' already exists; nothing was written" in r.stderr
    for bad in ("Prod", "base", "1st", "a_b"):
        r = invoke("env", "create", bad, code=2)
        assert f"cannot create environment {bad!r}" in r.stderr
    # Not empty: refused without --force, nothing removed.
    invoke("set", "flags", "beta=true", "-e", "staging")
    invoke("set", "provider", "p1", "url=https://s", "-e", "staging")
    r = invoke("env", "delete", "staging", code=1)
    assert r.stderr.strip() == (
        "confman: error: environment 'staging' still holds 2 document(s); nothing was removed "
        "(--force removes them too, each removal audited)"
    )
    assert rows(invoke("env", "list").stdout)["staging"][1] == "2"
    assert json.loads(invoke("get", "flags", "-e", "staging").stdout)["beta"] is True
    r = invoke("env", "delete", "staging", "--force", "--reason", "retired")
    assert r.stdout.strip() == "deleted environment staging and the 2 document(s) it held"
    assert "staging" not in invoke("env", "list").stdout
    history = invoke("history", "flags").stdout  # the base's history: untouched
    assert "has no recorded changes" in history
    invoke("env", "delete", "production")  # empty: no --force needed
    r = invoke("env", "delete", "staging", code=2)
    assert "unknown environment 'staging' (known: base; create one with" in r.stderr
    invoke("env", "delete", "base", code=2)
    invoke("env", code=2)


# --------------------------------------------------------------------------- reads and writes


def test_reads_and_writes_in_an_environment(invoke: Invoke) -> None:
    make_environments(invoke)
    invoke("set", "flags", "label=shared", "limits.rpm=100")
    r = invoke("set", "flags", "limits.rpm=500", "-e", "staging", "--actor", "ann")
    assert r.stdout.splitlines() == [
        "updated flags/default in staging: now version 1",  # the item existed: in the base
        "changed: limits.rpm",
    ]
    staging = json.loads(invoke("get", "flags", "-e", "staging").stdout)
    assert staging["label"] == "shared" and staging["limits"]["rpm"] == 500  # base + overlay
    assert json.loads(invoke("get", "flags").stdout)["limits"]["rpm"] == 100  # base alone
    assert json.loads(invoke("get", "flags", "-e", "production").stdout)["limits"]["rpm"] == 100
    # CONFMAN_ENVIRONMENT is the default; `-e base` names the base whatever it says.
    in_staging = {"CONFMAN_ENVIRONMENT": "staging"}
    assert json.loads(invoke("get", "flags", env=in_staging).stdout)["limits"]["rpm"] == 500
    got = invoke("get", "flags", "-e", "base", env=in_staging).stdout
    assert json.loads(got)["limits"]["rpm"] == 100
    # A base change reaches staging where it does not override.
    invoke("set", "flags", "label=new", "--expect-version", "1")
    assert json.loads(invoke("get", "flags", "-e", "staging").stdout)["label"] == "new"
    # Versions count per environment: --expect-version is the overlay's.
    r = invoke("set", "flags", "beta=true", "-e", "staging", "--expect-version", "2", code=3)
    assert "expected version 2, but the stored version is 1" in r.stderr
    invoke("set", "flags", "beta=true", "-e", "staging", "--expect-version", "1")
    history = invoke("history", "flags", "-e", "staging").stdout.splitlines()
    assert [line.split()[1:3] for line in history[1:]] == [["2", "update"], ["1", "update"]]
    assert "ann" in history[2]
    base_history = invoke("history", "flags").stdout.splitlines()
    assert [line.split()[1] for line in base_history[1:]] == ["2", "1"]
    assert "no recorded changes in production" in invoke("history", "flags", "-e",
                                                         "production").stdout  # fmt: skip
    r = invoke("rollback", "flags", "--to-version", "1", "-e", "staging")
    assert r.stdout.splitlines()[0] == "rolled back flags/default in staging: now version 3"
    assert json.loads(invoke("get", "flags", "-e", "staging").stdout)["beta"] is False
    assert json.loads(invoke("get", "flags").stdout)["label"] == "new"  # the base: untouched
    # In an environment, list counts what is in effect there and its own documents.
    listed = rows(invoke("list", "-e", "staging").stdout)
    assert listed["flags"][1:] == ["singleton", "1", "3", "1"]
    assert listed["provider"][1:] == ["collection", "0", "-", "0"]
    assert rows(invoke("list", "-e", "production").stdout)["flags"][3] == "0 (inherits base v2)"
    assert "OVERLAYS" not in invoke("list").stdout
    # Deleting a singleton's overlay: it inherits the base again.
    r = invoke("delete", "flags", "-e", "staging")
    assert "flags in staging inherits the base again" in r.stdout
    assert json.loads(invoke("get", "flags", "-e", "staging").stdout)["limits"]["rpm"] == 100
    assert json.loads(invoke("get", "flags").stdout)["label"] == "new"
    explained = invoke("get", "flags", "-e", "staging", "--explain").stdout.splitlines()[0]
    assert explained == (
        "flags/default in staging: no staging overlay (its version 4 was removed), "
        "inherits base version 2"
    )


def test_explain_names_every_layer_and_what_it_hides(invoke: Invoke, tmp_path: Path) -> None:
    make_environments(invoke)
    invoke("set", "flags", "label=base", "beta=true", "limits.rpm=100", "limits.burst=5")
    invoke("set", "flags", "label=staged", "limits.rpm=200", "-e", "staging")
    (tmp_path / ".env").write_text("CONFMAN_FLAGS__LIMITS__RPM=300\n")
    (tmp_path / ".env.staging").write_text("CONFMAN_FLAGS__LIMITS__RPM=400\n")
    (tmp_path / ".env.production").write_text('CONFMAN_FLAGS__TAGS=["prod"]\n')
    r = invoke("get", "flags", "-e", "staging", "--explain",
               env={"CONFMAN_FLAGS__BETA": "false"})  # fmt: skip
    lines = r.stdout.splitlines()
    assert lines[0] == "flags/default in staging: staging version 1 over base version 1"
    table = rows(r.stdout.split("\n", 1)[1])
    assert table["tags"][1:3] == ["[]", "default"]  # .env.production is not staging's
    assert table["limits.burst"][1:4] == ["5", "database", "base v1"]
    assert table["label"][1:5] == ['"staged"', "database", "staging v1", "database (base v1)"]
    assert table["limits.rpm"][1:3] == ["400", "env_file"]
    assert table["limits.rpm"][3].endswith(".env.staging")
    shadows = table["limits.rpm"][4]
    for hidden in ("database (base v1)", "database (staging v1)", ".env"):
        assert hidden in shadows
    assert table["beta"][1:4] == [
        "false",
        "environment",
        "environment variable CONFMAN_FLAGS__BETA",
    ]
    assert table["beta"][4] == "database (base v1)"
    # In the base: no overlay, no .env.staging.
    base = rows(invoke("get", "flags", "--explain").stdout.split("\n", 1)[1])
    assert base["label"][1:4] == ['"base"', "database", "base v1"]
    assert base["limits.rpm"][1] == "300" and base["limits.rpm"][3].endswith(".env")


def test_collections_hide_reset_and_env_only_items(invoke: Invoke) -> None:
    make_environments(invoke)
    invoke("set", "provider", "p1", "url=https://one", "weight=2")
    invoke("set", "provider", "p2", "url=https://two")
    invoke("set", "provider", "p3", "url=https://three", "-e", "staging")  # staging only
    invoke("set", "provider", "p1", "weight=5", "-e", "staging")
    r = invoke("delete", "provider", "p2", "-e", "staging")
    assert r.stdout.splitlines()[0] == "deleted provider/p2 in staging: now version 1"
    assert "hidden in staging only (the base keeps it)" in r.stdout
    staging = json.loads(invoke("get", "provider", "-e", "staging").stdout)
    assert sorted(staging) == ["p1", "p3"] and staging["p1"]["weight"] == 5
    assert sorted(json.loads(invoke("get", "provider").stdout)) == ["p1", "p2"]
    assert sorted(json.loads(invoke("get", "provider", "-e", "production").stdout)) == ["p1", "p2"]
    r = invoke("get", "provider", "p2", "-e", "staging", code=1)
    assert "provider has no item 'p2' in staging" in r.stderr
    explained = invoke("get", "provider", "p2", "-e", "staging", "--explain").stdout
    assert explained.splitlines()[0] == (
        "provider/p2 in staging: hidden by staging version 1 (over base version 1)"
    )
    assert rows(explained.split("\n", 1)[1])["(item)"][3:] == ["staging v1, hidden",
                                                               "database (base v1)"]  # fmt: skip
    listed = rows(invoke("list", "-e", "staging").stdout)
    assert listed["provider"][1:] == ["collection", "2", "-", "3"]  # p1, p3 in effect
    # reset: one field, then a whole overlay (which shows a hidden item again).
    r = invoke("reset", "provider", "p1", "weight", "-e", "staging")
    assert r.stdout.splitlines() == [
        "reset provider/p1 in staging: now version 2 (no overlay left)",
        "inherited again: weight",
        "changed: weight",
    ]
    assert json.loads(invoke("get", "provider", "p1", "-e", "staging").stdout)["weight"] == 2
    r = invoke("reset", "provider", "p2", "--all", "-e", "staging")
    assert "inherited again: every field" in r.stdout
    assert sorted(json.loads(invoke("get", "provider", "-e", "staging").stdout)) == [
        "p1", "p2", "p3"
    ]  # fmt: skip
    invoke("set", "flags", "label=x", 'tags=["a"]', "-e", "staging")
    r = invoke("reset", "flags", "tags", "-e", "staging", "--expect-version", "1")
    assert r.stdout.splitlines()[0] == "reset flags/default in staging: now version 2"
    assert json.loads(invoke("get", "flags", "-e", "staging").stdout) == {
        "beta": False, "label": "x", "limits": {"rpm": 60, "burst": 10}, "tags": []
    }  # fmt: skip
    r = invoke("reset", "provider", "p1", "--all", "-e", "staging", code=1)
    assert "provider/p1 has no overlay in staging" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reset", "flags", "label"], "name it with -e NAME"),
        (["reset", "flags", "-e", "staging"], "name the FIELDs to reset, or --all"),
        (["reset", "flags", "label", "--all", "-e", "staging"], "name no FIELD with it"),
        (["reset", "flags", "bogus", "-e", "staging"], "flags has no field 'bogus'"),
        (["reset", "provider", "-e", "staging"], "provider is a collection: name the KEY"),
        (["reset", "virtual_key", "k", "--all", "-e", "staging"], "virtual_key does not inherit"),
    ],
)
def test_reset_usage_errors(invoke: Invoke, args: list[str], message: str) -> None:
    make_environments(invoke)
    assert message in invoke(*args, code=2).stderr


# --------------------------------------------------------------------------- diff


def test_diff_text_and_json(invoke: Invoke) -> None:
    make_environments(invoke)
    invoke("set", "provider", "p1", "url=https://one", f"api_key={SECRET}")
    invoke("set", "provider", "p2", "url=https://two", "-e", "staging")  # staging only
    invoke("set", "provider", "p1", "api_key=sk-staging-OTHER", "-e", "staging")
    invoke("set", "flags", "limits.rpm=7", "-e", "production")
    r = invoke("diff", "staging", "production")
    assert SECRET not in r.output and "sk-staging-OTHER" not in r.output
    header, *lines = r.stdout.splitlines()
    assert header.split() == ["NAMESPACE", "KEY", "PATH", "STAGING", "SOURCE", "PRODUCTION",
                              "SOURCE"]  # fmt: skip
    found = {tuple(re.split(r"\s{2,}", line)[:3]): re.split(r"\s{2,}", line)[3:] for line in lines}
    assert found[("flags", "default", "limits.rpm")] == ["60", "default", "7",
                                                         "database (production v1)"]  # fmt: skip
    left, left_source, right, right_source = found[("provider", "p1", "api_key")]
    assert left.startswith('"fingerprint:') and right.startswith('"fingerprint:')
    assert left != right
    assert (left_source, right_source) == ("database (staging v1)", "database (base v1)")
    assert found[("provider", "p2", "(item)")] == ["exists", "-", "-", "absent"]
    assert len(found) == 3  # only differences
    # --json: the API's compare shape; the same secret fingerprints the same in one answer.
    data = json.loads(invoke("diff", "base", "production", "provider", "--json", "--all").stdout)
    assert data["left"] is None and data["right"] == "production"
    secret = next(f for f in data["fields"] if f["path"] == "api_key")
    assert secret["secret"] is True and secret["same"] is True
    assert secret["left"] == secret["right"] and secret["left"].startswith("fingerprint:")
    assert SECRET not in json.dumps(data)
    assert {f["namespace"] for f in data["fields"]} == {"provider"}
    data = json.loads(invoke("diff", "production", "staging", "provider", "--json").stdout)
    missing = next(f for f in data["fields"] if f["key"] == "p2")
    assert missing["path"] == "" and missing["left_present"] is False
    assert missing["right_present"] is True and missing["left_source"] == "absent"
    assert all(not f["same"] for f in data["fields"])
    # Nothing differs: said so; every field with --all.
    r = invoke("diff", "production", "production")
    assert r.stdout.strip() == "no differences between production and production"
    everything = invoke("diff", "base", "staging", "flags", "--all").stdout.splitlines()
    assert len(everything) == 1 + 5  # beta, label, limits.rpm, limits.burst, tags
    r = invoke("diff", "staging", "prod", code=2)
    assert "unknown environment 'prod' (known: base, production, staging)" in r.stderr
    assert "unknown namespace 'nope'" in invoke("diff", "base", "staging", "nope", code=2).stderr
    r = invoke("diff", "base", "staging", "virtual_key_secret", code=2)
    assert "virtual_key_secret holds credentials: it is never compared" in r.stderr


# --------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    "args",
    [
        ["get", "flags"],
        ["get", "flags", "--explain"],
        ["set", "flags", "beta=true"],
        ["delete", "flags"],
        ["history", "flags"],
        ["rollback", "flags", "--to-version", "1"],
        ["reset", "flags", "beta"],
        ["list"],
        ["watch", "flags", "--timeout", "5"],
        ["tokens", "list"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
@pytest.mark.parametrize("name", ["prod", "Prod"])
def test_an_unknown_environment_is_one_line_and_exit_2(
    invoke: Invoke, args: list[str], name: str
) -> None:
    make_environments(invoke)
    expected = f"confman: error: unknown environment {name!r} (known: base, production, staging)"
    r = invoke(*args, "-e", name, code=2)
    assert r.stderr.strip() == expected
    r = invoke(*args, code=2, env={"CONFMAN_ENVIRONMENT": name})
    assert r.stderr.strip() == expected
    # Nothing was created by the typo.
    assert sorted(rows(invoke("env", "list").stdout)) == ["production", "staging"]
    # Commands without -e never mind the variable.
    invoke("env", "list", env={"CONFMAN_ENVIRONMENT": name})


# --------------------------------------------------------------------------- tokens


def test_tokens_are_per_environment(invoke: Invoke) -> None:
    make_environments(invoke)
    r = invoke("tokens", "create", "--name", "ci", "--role", "editor", "-e", "staging")
    assert r.stdout.strip().startswith("cmt_")
    assert "for servers in staging" in r.stderr
    assert "ci" in rows(invoke("tokens", "list", "-e", "staging").stdout)
    assert "ci" not in rows(invoke("tokens", "list").stdout)
    assert "ci" not in rows(invoke("tokens", "list", "-e", "production").stdout)
    r = invoke("tokens", "revoke", "ci", "-e", "staging")
    assert r.stdout.strip() == "revoked token 'ci' for servers in staging"
    # --environments limits what a token may use on a server (which serves them all).
    r = invoke("tokens", "create", "--name", "stage-bot", "--role", "editor",
               "--environments", "staging, base,staging")  # fmt: skip
    assert "(all namespaces; environments base, staging)" in r.stderr
    listed = rows(invoke("tokens", "list").stdout)
    assert listed["stage-bot"][1:4] == ["editor", "all", "base, staging"]
    r = invoke("tokens", "create", "--name", "x", "--role", "viewer", "--environments", "prod",
               code=2)  # fmt: skip
    assert "unknown environment 'prod' (known: base, production, staging)" in r.stderr
    r = invoke("tokens", "create", "--name", "x", "--role", "viewer", "--environments", " ,",
               code=2)  # fmt: skip
    assert "--environments names no environment" in r.stderr
    assert "x" not in rows(invoke("tokens", "list").stdout)


# --------------------------------------------------------------------------- real processes


def test_watch_in_an_environment_sees_the_base_and_its_own(proc: Cli) -> None:
    cli = proc
    cli("env", "create", "staging")
    cli("env", "create", "production")
    watcher = cli.popen("watch", "cache", "--json", "--count", "2", "--timeout", "30",
                        "-e", "staging")  # fmt: skip
    try:
        line = wait_until_watching(watcher)
        assert "watching cache (base and staging)" in line
        cli("set", "cache", "max_entries=5", "-e", "production")  # not staging's concern
        cli("set", "cache", "max_entries=6", "-e", "staging", "--actor", "ann")
        cli("set", "cache", "default_ttl_seconds=30", "--actor", "bob")
        seen = finish(watcher)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert seen.code == 0, seen.err
    changes = [json.loads(line) for line in seen.out.splitlines()]
    assert [(c["environment"], c["actor"], c["changed"]) for c in changes] == [
        ("staging", "ann", ["max_entries"]),
        (None, "bob", ["default_ttl_seconds"]),
    ]


def test_round_trip_on_each_database(database_url: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    cli = Cli(workdir, clean_env(CONFMAN_DATABASE_URL=database_url))
    cli("env", "create", "staging", "--description", "pre-production")
    cli("env", "create", "production")
    assert "pre-production" in cli("env", "list").out
    cli("set", "cache", "default_ttl_seconds=42")
    cli("set", "cache", "max_entries=7", "-e", "staging", CONFMAN_ENVIRONMENT="production")
    cli("set", "cache", "max_entries=9", CONFMAN_ENVIRONMENT="production")
    assert json.loads(cli("get", "cache", "-e", "staging").out)["max_entries"] == 7
    assert json.loads(cli("get", "cache", "-e", "production").out)["max_entries"] == 9
    assert json.loads(cli("get", "cache").out)["max_entries"] == 10000
    assert "staging version 1 over base version 1" in cli("get", "cache", "--explain",
                                                          "-e", "staging").out  # fmt: skip
    data = json.loads(cli("diff", "staging", "production", "--json").out)
    assert [(f["path"], f["left"], f["right"]) for f in data["fields"]] == [("max_entries", 7, 9)]
    r = cli("env", "delete", "staging", code=1)
    assert "environment 'staging' still holds 1 document(s); nothing was removed" in r.err
    cli("reset", "cache", "max_entries", "-e", "production")
    assert "no differences" not in cli("diff", "staging", "production").out
    cli("reset", "cache", "--all", "-e", "staging")
    assert cli("diff", "staging", "production").out.strip() == (
        "no differences between staging and production"
    )
    r = cli("get", "cache", "-e", "qa", code=2)
    assert "unknown environment 'qa' (known: base, production, staging)" in r.err
    cli("set", "cache", "enabled=false", "-e", "staging")
    assert "and the 1 document(s) it held" in cli("env", "delete", "staging", "--force").out
    assert "staging" not in cli("env", "list").out
