"""The `confman` command, run for real: subprocesses on migrated SQLite (and PostgreSQL).

Every run gets an explicit environment (the real one minus any ``CONFMAN_*`` variable)
and a fresh working directory, so no ``.env`` file or variable of the machine leaks in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from confman.cli import UsageError as CliUsageError
from confman.cli import build_patch, main

REPO = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).with_name("confman")
CONFMAN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "confman.cli"]

SECRET = "sk-live-DO-NOT-PRINT-4242"

APP_MODULE = """
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from confman import ConfigurationManager


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    rpm: int = Field(60, gt=0)
    burst: int = 10


class Flags(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    beta: bool = False
    label: str = "none"
    limits: Limits = Limits()
    tags: list[str] = []


class FlagsManager(ConfigurationManager[Flags]):
    namespace = "flags"
    model = Flags


class Provider(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    url: str
    api_key: SecretStr | None = None
    weight: int = Field(1, gt=0)


class ProviderManager(ConfigurationManager[Provider]):
    namespace = "provider"
    model = Provider
    keyed = True


MANAGERS = [FlagsManager, ProviderManager]
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    """Runs ``confman`` in ``cwd`` with ``env``; checks that no traceback ever escapes."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env

    def __call__(self, *args: str, code: int | None = 0, **extra_env: str) -> Result:
        proc = subprocess.run(
            [*CONFMAN, *args],
            cwd=self.cwd,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        if code is not None:
            assert proc.returncode == code, (args, result)
        if proc.returncode != 0:
            # An error is exactly one line: `confman: error: ...` (warnings may precede it).
            last = proc.stderr.strip().splitlines()[-1]
            assert last.startswith("confman: error: "), proc.stderr
        return result

    def popen(self, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CONFMAN, *args],
            cwd=self.cwd,
            env={**self.env, **extra_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONFMAN_")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def fresh(workdir: Path) -> Cli:
    """A CLI in an empty directory: no database yet."""
    return Cli(workdir, clean_env())


@pytest.fixture
def cli(workdir: Path, sqlite_template: Path) -> Cli:
    """A CLI whose default database (./confman.db) is migrated and empty."""
    shutil.copy(sqlite_template, workdir / "confman.db")
    return Cli(workdir, clean_env())


@pytest.fixture
def app_cli(cli: Cli, tmp_path: Path) -> Cli:
    """`cli` with a module of extra managers on PYTHONPATH and named by CONFMAN_APP."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "cli_test_app.py").write_text(APP_MODULE)
    cli.env.update(PYTHONPATH=str(app_dir), CONFMAN_APP="cli_test_app:MANAGERS")
    return cli


def wait_until_watching(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Read the watcher's stderr until it says it is subscribed."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "watching" in line:
            return line
    proc.kill()
    raise AssertionError(f"watcher did not start: {''.join(lines)}")


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> Result:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return Result(proc.returncode, out, err)


# --------------------------------------------------------------------------- basics


def test_help_version_and_in_process_main(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("confman ")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("db", "list", "get", "set", "delete", "history", "rollback", "watch", "keys"):
        assert command in out
    assert main(["keys", "generate"]) == 0
    Fernet(capsys.readouterr().out.strip())  # a valid key
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("confman: error: no such command 'frobnicate'")


def test_build_patch() -> None:
    assert build_patch(["a.b=1", "a.c=x", "d=[1, 2]", "e=null", 'f="1"', "g="]) == {
        "a": {"b": 1, "c": "x"},
        "d": [1, 2],
        "e": None,
        "f": "1",
        "g": "",
    }
    for bad in (["a"], ["=1"], ["a..b=1"], ["a=1", "a.b=2"], ["a=1", "a=2"]):
        with pytest.raises(CliUsageError):
            build_patch(bad)


def test_keys_generate_subprocess(fresh: Cli) -> None:
    keys = {fresh("keys", "generate").out.strip() for _ in range(2)}
    assert len(keys) == 2
    for key in keys:
        Fernet(key)


# --------------------------------------------------------------------------- db


def test_missing_database_is_never_created_implicitly(fresh: Cli) -> None:
    for args in (["list"], ["get", "cache"], ["set", "cache", "enabled=false"], ["db", "current"]):
        r = fresh(*args, code=1)
        assert "confman db upgrade" in r.err
        assert r.err.count("\n") == 1
    assert not (fresh.cwd / "confman.db").exists()


def test_db_upgrade_and_current(fresh: Cli) -> None:
    r = fresh("db", "upgrade")
    assert "is at" in r.out
    assert (fresh.cwd / "confman.db").exists()
    r = fresh("db", "current", "--check")
    assert "up to date" in r.out
    fresh("db", "upgrade")  # idempotent
    # Another database, in a directory that does not exist yet, via the variable.
    url = "sqlite:///nested/dir/other.db"
    fresh("db", "upgrade", CONFMAN_DATABASE_URL=url)
    assert (fresh.cwd / "nested/dir/other.db").exists()
    fresh("--database-url", url, "list")
    fresh("list", "--database-url", url)  # options after the subcommand work too


def test_schema_out_of_date(fresh: Cli) -> None:
    (fresh.cwd / "confman.db").touch()  # a database without confman's schema
    r = fresh("db", "current")
    assert "out of date" in r.out
    fresh("db", "current", "--check", code=1)
    r = fresh("get", "cache", code=1)
    assert "confman db upgrade" in r.err


def test_unreachable_and_invalid_databases(fresh: Cli) -> None:
    r = fresh("--database-url", "postgresql://nobody@127.0.0.1:1/nowhere", "list", code=1)
    assert "database" in r.err
    fresh("--database-url", "not a url", "list", code=2)


# --------------------------------------------------------------------------- read and write


def test_list_get_set_on_the_default_database(cli: Cli) -> None:
    r = cli("list")
    assert r.out.splitlines()[0].split() == ["NAMESPACE", "KIND", "ITEMS", "VERSION"]
    # items count stored documents, as the API's namespace listing does
    assert any(line.split()[:4] == ["cache", "singleton", "0", "0"] for line in r.out.splitlines())

    defaults = json.loads(cli("get", "cache").out)
    assert defaults["default_ttl_seconds"] == 300

    r = cli("set", "cache", "default_ttl_seconds=60", "enabled=false", "--reason", "load test")
    assert "now version 1" in r.out
    assert "changed: default_ttl_seconds, enabled" in r.out
    value = json.loads(cli("get", "cache", "default").out)
    assert (value["default_ttl_seconds"], value["enabled"]) == (60, False)
    assert any(
        line.split()[:4] == ["cache", "singleton", "1", "1"]
        for line in cli("list").out.splitlines()
    )

    # null removes the stored field: back to the default
    r = cli("set", "cache", "enabled=null", "--expect-version", "1")
    assert "now version 2" in r.out
    assert json.loads(cli("get", "cache").out)["enabled"] is True


def test_explain_shows_layers_and_overrides(cli: Cli) -> None:
    cli("set", "cache", "default_ttl_seconds=60", "max_entries=7")
    r = cli("get", "cache", "--explain", CONFMAN_CACHE__MAX_ENTRIES="5")
    assert r.out.splitlines()[0] == "cache/default: version 1"
    rows = {line.split()[0]: line for line in r.out.splitlines()[2:]}
    assert rows["default_ttl_seconds"].split()[1:5] == ["60", "database", "base", "v1"]
    assert rows["max_entries"].split()[1:3] == ["5", "environment"]
    assert "CONFMAN_CACHE__MAX_ENTRIES" in rows["max_entries"]
    assert "database (base v1)" in rows["max_entries"]  # what the override shadows
    assert rows["enabled"].split()[1:3] == ["true", "default"]
    # an env file in the working directory is a layer too
    (cli.cwd / ".env").write_text("CONFMAN_CACHE__ENABLED=false\n")
    r = cli("get", "cache", "--explain")
    enabled = next(line for line in r.out.splitlines() if line.startswith("enabled"))
    assert enabled.split()[1:3] == ["false", "env_file"]


def test_set_on_a_pinned_field_says_so(cli: Cli) -> None:
    r = cli("set", "cache", "max_entries=7", CONFMAN_CACHE__MAX_ENTRIES="5")
    assert "now version 1" in r.out
    assert "note: max_entries pinned by an override" in r.out
    assert "CONFMAN_CACHE__MAX_ENTRIES" in r.out


def test_validation_and_conflict_exit_codes(cli: Cli) -> None:
    cli("set", "cache", "default_ttl_seconds=60")
    r = cli("set", "cache", "default_ttl_seconds=-1", code=4)
    assert "default_ttl_seconds" in r.err and "nothing was written" in r.err
    r = cli("set", "cache", "no_such_field=1", code=4)
    assert "no_such_field" in r.err
    r = cli("set", "cache", "default_ttl_seconds=30", "--expect-version", "0", code=3)
    assert "already exists" in r.err
    cli("set", "cache", "max_entries=100", "--expect-version", "1")
    r = cli("set", "cache", "default_ttl_seconds=30", "--expect-version", "1", code=3)
    assert "expected version 1" in r.err and "version is 2" in r.err
    # nothing of the refused writes was stored
    assert json.loads(cli("get", "cache").out)["default_ttl_seconds"] == 60
    assert [line.split()[1] for line in cli("history", "cache").out.splitlines()[1:]] == ["2", "1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "nope"], "unknown namespace 'nope'; known: cache"),  # cache sorts first
        (["set", "nope", "a=1"], "unknown namespace 'nope'"),
        (["watch", "cache", "nope"], "unknown namespace 'nope'"),
        (["set", "cache", "default_ttl_seconds", "60"], "cache is a singleton"),
        (["set", "cache", "=1"], "not of the form field=value"),
        (["set", "cache"], "missing argument"),
        (["get", "cache", "somekey"], "cache is a singleton"),
        (["rollback", "cache"], "--to-version"),
        (["history", "cache", "--limit", "x"], "is not a valid integer"),
        (["db"], "required"),
        (["bogus"], "no such command 'bogus'"),
        (["--app", "no_colon", "list"], "module:attribute"),
    ],
)
def test_usage_errors(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process (usage is checked before any database is opened); the exit code and the
    # one-line form of a real process are checked by the subprocess tests.
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith("CONFMAN_")]:
        monkeypatch.delenv(name)
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert message in err
    assert err.startswith("confman: error: ") and err.count("\n") == 1
    assert out == ""


def test_usage_error_in_a_real_process(cli: Cli) -> None:
    r = cli("get", "nope", code=2)
    assert r.err.startswith("confman: error: unknown namespace 'nope'; known: ")
    assert r.out == ""


def test_history_rollback_delete(cli: Cli) -> None:
    assert "no recorded changes" in cli("history", "cache").out
    cli("set", "cache", "default_ttl_seconds=60", "--actor", "alice", "--reason", "load test")
    cli("set", "cache", "max_entries=5", "--actor", "bob")
    r = cli("rollback", "cache", "--to-version", "1", "--actor", "carol")
    assert "rolled back cache/default: now version 3" in r.out
    assert "changed: max_entries" in r.out
    assert json.loads(cli("get", "cache").out)["max_entries"] == 10_000
    cli("rollback", "cache", "--to-version", "9", code=1)  # no such version

    lines = cli("history", "cache").out.splitlines()
    assert lines[0].split() == ["SEQ", "VERSION", "ACTION", "ACTOR", "REASON", "TIME", "CHANGED"]
    assert [line.split()[1:4] for line in lines[1:]] == [
        ["3", "rollback", "carol"],
        ["2", "update", "bob"],
        ["1", "create", "alice"],
    ]
    assert "load test" in lines[3] and lines[3].endswith("default_ttl_seconds")
    assert "rollback to v1" in lines[1]
    assert len(cli("history", "cache", "--limit", "1").out.splitlines()) == 2

    r = cli("delete", "cache", "--reason", "reset")
    assert "deleted cache/default: now version 4" in r.out
    assert json.loads(cli("get", "cache").out)["default_ttl_seconds"] == 300
    cli("delete", "cache", "--expect-version", "1", code=1)  # nothing stored to delete
    cli("set", "cache", "max_entries=9")
    cli("delete", "cache", "--expect-version", "1", code=3)


def test_a_set_that_changes_nothing_says_unchanged(cli: Cli) -> None:
    cli("set", "cache", "default_ttl_seconds=60")
    r = cli("set", "cache", "default_ttl_seconds=60")
    assert r.out.strip() == "unchanged cache/default: still version 1 (nothing written)"
    assert len(cli("history", "cache").out.splitlines()) == 2  # header and one change


def test_db_prune_keeps_the_newest_versions(cli: Cli) -> None:
    for ttl in range(1, 6):
        cli("set", "cache", f"default_ttl_seconds={ttl}")
    r = cli("db", "prune", "--keep-versions", "2")
    assert r.out.startswith("pruned 3 change-log row(s) from ")
    versions = [line.split()[1] for line in cli("history", "cache").out.splitlines()[1:]]
    assert versions == ["5", "4"]
    assert cli("db", "prune", "--keep-versions", "2").out.startswith("pruned 0 ")
    # Age alone: nothing is 90 days old, and the newest version always stays.
    assert cli("db", "prune", "--older-than", "0").out.startswith("pruned 1 ")
    cli("db", "prune", "--keep-versions", "0", code=2)
    cli("db", "prune", "--older-than", "-1", code=2)


# --------------------------------------------------------------------------- --app


def test_app_managers_collections_and_secrets(app_cli: Cli) -> None:
    cli = app_cli
    outputs: list[str] = []

    def run(*args: str, code: int = 0) -> Result:
        r = cli(*args, code=code)
        outputs.extend([r.out, r.err])
        return r

    lines = run("list").out.splitlines()
    assert any(line.split()[:3] == ["flags", "singleton", "0"] for line in lines)
    assert any(line.split()[:3] == ["provider", "collection", "0"] for line in lines)

    # dotted fields, JSON values, strings where JSON does not parse
    r = run("set", "flags", "limits.rpm=100", "beta=true", 'tags=["a", "b"]', "label=hello")
    assert "changed: beta, label, limits.rpm, tags" in r.out
    flags = json.loads(run("get", "flags").out)
    assert flags == {
        "beta": True,
        "label": "hello",
        "limits": {"rpm": 100, "burst": 10},
        "tags": ["a", "b"],
    }
    r = run("get", "flags", "--explain")
    assert any(line.split()[:3] == ["limits.rpm", "100", "database"] for line in r.out.splitlines())

    # set creates a collection item that does not exist yet
    r = run("set", "provider", "openai", "url=https://api.example", f"api_key={SECRET}")
    assert "created provider/openai: now version 1" in r.out
    run("set", "provider", "openai", "weight=3", "--expect-version", "1")
    items = json.loads(run("get", "provider").out)
    assert set(items) == {"openai"}
    assert items["openai"]["api_key"].startswith("**********#")
    one = json.loads(run("get", "provider", "openai").out)
    assert one == items["openai"] and one["weight"] == 3
    run("get", "provider", "openai", "--explain")
    run("set", "provider", "openai", "api_key=sk-another-secret")
    run("history", "provider", "openai")

    # collection errors
    assert "name the KEY" in run("set", "provider", "url=x", code=2).err
    assert "name the KEY" in run("history", "provider", code=2).err
    assert "no item 'nope'" in run("get", "provider", "nope", code=1).err
    assert "url" in run("set", "provider", "new", "weight=2", code=4).err  # url is required
    assert (
        "already exists"
        in run("set", "provider", "openai", "weight=2", "--expect-version", "0", code=3).err
    )

    run("delete", "provider", "openai")
    assert json.loads(run("get", "provider").out) == {}
    run("delete", "provider", "openai", code=1)
    run("set", "provider", "openai", "url=https://again")  # re-created after a delete
    newest = run("history", "provider", "openai", "--limit", "1").out.splitlines()[1]
    assert newest.split()[1:3] == ["5", "create"]

    everything = "\n".join(outputs)
    assert SECRET not in everything
    assert "sk-another-secret" not in everything


def test_app_option_forms_and_errors(cli: Cli, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "cli_test_app.py").write_text(APP_MODULE)
    (app_dir / "broken_app.py").write_text("raise RuntimeError('boom at import')\n")
    env = {"PYTHONPATH": str(app_dir)}
    # one class, repeated --app, before or after the subcommand
    r = cli(
        "--app", "cli_test_app:FlagsManager", "list", "--app", "cli_test_app:ProviderManager", **env
    )
    assert "flags" in r.out and "provider" in r.out
    # a module in the working directory needs no PYTHONPATH
    shutil.copy(app_dir / "cli_test_app.py", cli.cwd / "cwd_app.py")
    assert "flags" in cli("--app", "cwd_app:MANAGERS", "list").out
    assert "flags" in cli("list", CONFMAN_APP="cwd_app:FlagsManager, cwd_app:ProviderManager").out
    # stored namespaces without a manager are listed as such
    cli("--app", "cwd_app:MANAGERS", "set", "flags", "beta=true")
    r = cli("list")
    assert any(line.split()[:2] == ["flags", "unknown"] for line in r.out.splitlines())

    for spec, message in [
        ("missing_module:X", "cannot import 'missing_module'"),
        ("broken_app:X", "RuntimeError: boom at import"),
        ("cli_test_app:Nope", "has no attribute 'Nope'"),
        ("cli_test_app:Flags", "expected a ConfigurationManager subclass"),
    ]:
        r = cli("--app", spec, "list", code=2, **env)
        assert message in r.err


def test_invalid_override_is_a_clear_error(cli: Cli) -> None:
    r = cli("get", "cache", code=4, CONFMAN_CACHE__DEFAULT_TTL_SECONDS="-5")
    assert "CONFMAN_CACHE__DEFAULT_TTL_SECONDS" in r.err
    r = cli("get", "cache", code=4, CONFMAN_CACHE__NO_SUCH="1")
    assert "CONFMAN_CACHE__NO_SUCH" in r.err
    # list reports the namespace it cannot load and still lists the others
    r = cli("list", code=1, CONFMAN_CACHE__NO_SUCH="1")
    assert "confman: warning: cache:" in r.err


# --------------------------------------------------------------------------- watch


def test_watch_prints_changes_from_another_process(cli: Cli) -> None:
    watcher = cli.popen("watch", "cache", "--count", "2", "--timeout", "30")
    try:
        wait_until_watching(watcher)
        cli("set", "cache", "default_ttl_seconds=61", "--actor", "alice", "--reason", "live one")
        cli("set", "cache", "max_entries=5", "--actor", "bob")
        r = finish(watcher)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == 2
    assert "cache/default v1 create by alice: default_ttl_seconds (live one)" in lines[0]
    assert "cache/default v2 update by bob: max_entries" in lines[1]


def test_watch_all_as_json_and_collection_items(app_cli: Cli) -> None:
    watcher = app_cli.popen("watch", "--json", "--count", "2", "--timeout", "30")
    try:
        line = wait_until_watching(watcher)
        assert "cache" in line and "flags" in line and "provider" in line
        app_cli("set", "provider", "p1", "url=u", f"api_key={SECRET}")
        app_cli("set", "flags", "beta=true")
        r = finish(watcher)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert r.code == 0, r.err
    events = [json.loads(line) for line in r.out.splitlines()]
    assert [(e["namespace"], e["key"], e["version"], e["action"]) for e in events] == [
        ("provider", "p1", 1, "create"),
        ("flags", "default", 1, "create"),
    ]
    assert events[1]["changed"] == ["beta"]
    assert SECRET not in r.out + r.err


def test_watch_timeout_and_signals(cli: Cli) -> None:
    r = cli("watch", "cache", "--timeout", "0.5")
    assert r.out == ""
    r = cli("watch", "cache", "--count", "1", "--timeout", "0.5", code=1)
    assert "timed out" in r.err
    for signum in (signal.SIGINT, signal.SIGTERM):
        watcher = cli.popen("watch")
        wait_until_watching(watcher)
        watcher.send_signal(signum)
        r = finish(watcher)
        assert r.code == 0, (signum, r.err)


# --------------------------------------------------------------------------- keys


def test_keys_rotate(app_cli: Cli) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app_cli.env["CONFMAN_ENCRYPTION_KEY"] = old
    app_cli("set", "provider", "p1", "url=u", f"api_key={SECRET}")
    before = json.loads(app_cli("get", "provider", "p1").out)["api_key"]
    r = app_cli("keys", "rotate", "--actor", "ops", CONFMAN_ENCRYPTION_KEY=f"{new},{old}")
    assert re.search(r"re-encrypted [1-9][0-9]* stored secret", r.out), r.out
    app_cli.env["CONFMAN_ENCRYPTION_KEY"] = new  # the old key is gone now
    after = json.loads(app_cli("get", "provider", "p1").out)["api_key"]
    assert after == before  # same secret, same fingerprint
    assert SECRET not in r.out


# --------------------------------------------------------------------------- PostgreSQL


async def test_round_trip_on_each_database(database_url: str, workdir: Path) -> None:
    cli = Cli(workdir, clean_env(CONFMAN_DATABASE_URL=database_url))
    cli("db", "upgrade")
    assert "up to date" in cli("db", "current", "--check").out
    watcher = cli.popen("watch", "cache", "--count", "1", "--timeout", "30")
    try:
        wait_until_watching(watcher)
        r = cli("set", "cache", "default_ttl_seconds=42", "--reason", "pg", "--actor", "ops")
        assert "now version 1" in r.out
        seen = finish(watcher)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert "cache/default v1 create by ops: default_ttl_seconds (pg)" in seen.out
    assert json.loads(cli("get", "cache").out)["default_ttl_seconds"] == 42
    cli("set", "cache", "default_ttl_seconds=0", code=4)
    cli("set", "cache", "default_ttl_seconds=43", "--expect-version", "0", code=3)
    cli("set", "cache", "default_ttl_seconds=43")  # a rollback to what is stored writes nothing
    cli("rollback", "cache", "--to-version", "1")
    history = cli("history", "cache").out.splitlines()
    assert [line.split()[2] for line in history[1:]] == ["rollback", "update", "create"]


# --------------------------------------------------------------------------- the tour


@pytest.mark.timeout(300)
def test_tour(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(REPO / "scripts" / "tour"), "--no-setup"],
        env=clean_env(TMPDIR=str(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=290,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in out
    for expected in [
        "$ confman db upgrade",
        "environment variable CONFMAN_CACHE__MAX_ENTRIES",
        "confman: error: cache/default refused (source: update): default_ttl_seconds:",
        "(exit code 4)",
        "expected version 1, but the stored version is 2",
        "(exit code 3)",
        "rolled back cache/default: now version 3",
        "cache/default v4 update by dave: default_ttl_seconds (seen live)",
        "cache/default in staging: staging version 1 over base version 4",
        "unknown environment 'prod' (known: base, production, staging)",
        "(exit code 2)",
        "no differences between staging and production",
        "deleted environment staging and the 0 document(s) it held",
        "tour complete.",
    ]:
        assert expected in out, expected
    assert re.search(r"cache\s+singleton\s+0\s+0 \(defaults\)", out)
    assert re.search(r"max_entries\s+500\s+database \(staging v1\)\s+10000\s+default", out)
    assert list(tmp_path.iterdir()) == []  # the tour cleaned up after itself


def test_lazily_loaded_virtual_keys_are_listed_and_read_from_the_database(
    cli: Cli, workdir: Path
) -> None:
    # Issue a key in another process; a fresh CLI process has nothing cached.
    script = (
        "import asyncio\n"
        "from confman import ConfigHub\n"
        "from confman.managers import VirtualKeyConfigurationManager as VK\n"
        "async def main():\n"
        "    async with ConfigHub.connect('sqlite+aiosqlite:///confman.db', env_files=(),\n"
        "                                 managers=[VK]) as hub:\n"
        "        issued = await hub.manager(VK).issue({'name': 'team-a'})\n"
        "        print(issued.key_id)\n"
        "asyncio.run(main())\n"
    )
    made = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=cli.env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    key_id = made.stdout.strip()
    listed = cli("list")
    assert re.search(r"virtual_key\s+collection\s+1\b", listed.out), listed.out
    shown = json.loads(cli("get", "virtual_key", key_id).out)
    assert shown["name"] == "team-a"
    assert key_id in json.loads(cli("get", "virtual_key").out)
    # An operator revokes it with `set` (an update of the stored key, not a create).
    cli("set", "virtual_key", key_id, "enabled=false", "--reason", "leaked")
    assert json.loads(cli("get", "virtual_key", key_id).out)["enabled"] is False
