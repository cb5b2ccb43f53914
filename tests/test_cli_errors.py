"""The `confman` command's refusals and hints (issue 11, section 7).

In-process with Click's `CliRunner` where no server is involved: it sees what a shell
sees, since the root group's ``main`` prints the one-line error and returns the code.
The serve start-up and the printed hints run real processes: a hint is only right if
running it, as printed, works on the same database.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from confman.cli import cli

_SCRIPT = Path(sys.executable).with_name("confman")
CONFMAN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "confman.cli"]

Invoke = Callable[..., Result]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONFMAN_")}
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``confman ARGS`` in-process, in an empty directory, without CONFMAN_* variables."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith("CONFMAN_")]:
        monkeypatch.delenv(name)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == code, (args, result.output)
        assert "Traceback" not in result.output
        if code:
            lines = result.stderr.strip().splitlines()
            start = "confman: interrupted" if code == 130 else "confman: error: "
            assert len(lines) == 1 and lines[0].startswith(start), result.stderr
        return result

    return run


def run_confman(
    *args: str, cwd: Path, code: int | None = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*CONFMAN, *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if code is not None:
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    return proc


# --------------------------------------------------------------------------- usage: exit 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "99999"], "'--port': 99999 is not in the range 0<=x<=65535"),
        (["serve", "--port", "-1"], "'--port': -1 is not in the range 0<=x<=65535"),
        (["--database-url", "mysql://u@127.0.0.1/db", "list"], "unsupported database 'mysql'"),
        (["--database-url", "redis://127.0.0.1:6379/0", "list"], "unsupported database 'redis'"),
        (["--database-url", "postgresql://u@127.0.0.1:99999/db", "list"], "port 99999"),
        (["--database-url", "postgresql+psycopg2://u@h/db", "list"], "not an async driver"),
        (["history", "cache", "--limit", "99999999999999999999"], "'--limit'"),
        (["history", "cache", "--limit", "0"], "'--limit'"),
        (["serve", "--redis-url", "garbage", "--port", "0"], "--redis-url must start with"),
        (["serve", "--redis-url", "redis://127.0.0.1:99999", "--port", "0"], "--redis-url"),
        (["--bogus"], "--bogus"),
        (["list", "--bogus"], "--bogus"),
        (["tokens", "create", "--name", "t", "--role", "admin", "--namespaces", ""], "names no"),
        (["tokens", "create", "--name", "t", "--role", "admin", "--namespaces", " , "], "names no"),
        (["set", "cache", "enabled=false", "--expect-version", "-1"], "'--expect-version'"),
        (["delete", "cache", "--expect-version", "-1"], "'--expect-version'"),
        (["rollback", "cache", "--to-version", "0"], "'--to-version'"),
        (["watch", "--timeout", "-5"], "'--timeout'"),
        (["watch", "--timeout", "nan"], "'--timeout'"),
        (["watch", "--interval", "0"], "'--interval'"),
        (["watch", "--count", "0"], "'--count'"),
    ],
)
def test_usage_and_config_mistakes_exit_2(invoke: Invoke, args: list[str], message: str) -> None:
    r = invoke(*args, code=2)
    assert message in r.stderr
    assert r.stdout == ""
    assert not Path("confman.db").exists()  # nothing was created on the way


def test_db_upgrade_to_an_unknown_revision(invoke: Invoke) -> None:
    r = invoke("db", "upgrade", "no-such-revision", code=2)
    assert "'no-such-revision'" in r.stderr and "head" in r.stderr
    assert not Path("confman.db").exists()  # the file it would have created is gone again


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve", "--port", "0"]])
def test_a_sqlite_file_that_cannot_be_created(tmp_path: Path, command: list[str]) -> None:
    # A real process: aiosqlite's failures surfaced as tracebacks from its worker thread.
    for url in ("sqlite:////proc/confman-no-such-dir/x.db", "sqlite:////proc/x.db"):
        r = run_confman("--database-url", url, *command, cwd=tmp_path, code=2)
        assert r.stderr.startswith("confman: error: cannot create the database file /proc/")
        assert r.stderr.count("\n") == 1
        assert "dashboard at" not in r.stdout


def test_errors_are_click_exceptions_and_confman_errors() -> None:
    import click

    from confman import ConfmanError
    from confman.cli import CannotStart, CliError, UsageError

    for cls, code in ((CliError, 1), (UsageError, 2), (CannotStart, 5)):
        error = cls("x")
        assert isinstance(error, click.ClickException) and isinstance(error, ConfmanError)
        assert error.exit_code == code


# --------------------------------------------------------------------------- list as the API


def test_list_hides_what_the_api_hides_and_counts_stored_documents(
    invoke: Invoke, sqlite_template: Path
) -> None:
    shutil.copy(sqlite_template, "confman.db")
    invoke("tokens", "create", "--name", "ops", "--role", "admin")
    rows = {line.split()[0]: line.split() for line in invoke("list").stdout.splitlines()[1:]}
    assert "api_token" not in rows and "virtual_key_secret" not in rows
    assert rows["router"][:4] == ["router", "singleton", "0", "0"]  # defaults: nothing stored
    invoke("set", "cache", "enabled=false")
    rows = {line.split()[0]: line.split() for line in invoke("list").stdout.splitlines()[1:]}
    assert rows["cache"][:4] == ["cache", "singleton", "1", "1"]


# --------------------------------------------------------------------------- serve start-up


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_taken_port_cannot_start(tmp_path: Path, taken_port: int) -> None:
    r = run_confman("serve", "--port", str(taken_port), cwd=tmp_path, code=5)
    assert (
        r.stderr
        == f"confman: error: cannot start: port {taken_port} on 127.0.0.1 is already in use\n"
    )
    assert r.stdout == ""  # no URL announced, no token printed
    assert not (tmp_path / "confman.db").exists()  # bound before creating anything


def test_serve_on_an_unresolvable_host_cannot_start(tmp_path: Path) -> None:
    r = run_confman("serve", "--host", "no-such-host.invalid", "--port", "0", cwd=tmp_path, code=5)
    assert r.stderr.startswith("confman: error: cannot start: host 'no-such-host.invalid'")
    assert r.stderr.count("\n") == 1 and r.stdout == ""


class _Serve:
    """A `confman serve --port 0` process whose start-up lines are read as they come."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CONFMAN, "serve", "--port", "0", *args],
            cwd=cwd,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.proc.stdout.readline()
            if not text:
                break
            self.lines.append(text)
            found = re.search(pattern, text)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(self.lines)}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _run_hint(hint: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    words = shlex.split(hint)
    assert words[0] == "confman", hint
    return run_confman(*words[1:], cwd=cwd)


def test_serve_hints_work_as_printed_from_another_directory(tmp_path: Path) -> None:
    # The newcomer's path: serve in one directory (the default database there), then run
    # the printed command from another terminal, elsewhere. Its token must log in.
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    served.mkdir()
    elsewhere.mkdir()
    server = _Serve(served, "--no-bootstrap-token")
    try:
        url = server.line(r"dashboard at (http://127\.0\.0\.1:(\d+)/)").group(1)
        assert not url.endswith(":0/")  # the bound port, not the requested 0
        hint = server.line(r"no API token exists; create one with `([^`]+)`").group(1)
        made = _run_hint(hint, elsewhere)
        token = made.stdout.strip()
        assert not (elsewhere / "confman.db").exists()  # no second, empty database
        # The server learns of a token made by another process from the change log.
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.get(
                f"{url}api/v1/namespaces", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            if answer.status_code != 401 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        # ... and `confman list` there agrees with the API's listing.
        listed = run_confman("list", cwd=served).stdout.splitlines()[1:]
        cli_rows = {line.split()[0]: int(line.split()[2]) for line in listed}
        api_rows = {n["namespace"]: n["items"] for n in answer.json()}
        assert cli_rows == api_rows
    finally:
        server.stop()
    # With a token stored, the hint names the same command, and it works as printed too.
    server = _Serve(served)
    try:
        hint = server.line(r"log in with a token \(`([^`]+)` makes one\)").group(1)
        assert "--name NAME" in hint
        _run_hint(hint.replace("NAME", "second"), elsewhere)
    finally:
        server.stop()
    tokens = run_confman("tokens", "list", cwd=served).stdout
    assert "second" in tokens


@pytest.mark.parametrize("prepare", ["missing", "unmigrated"])
def test_the_upgrade_hint_works_as_printed(tmp_path: Path, prepare: str) -> None:
    url = "sqlite:///nested/other.db"
    if prepare == "unmigrated":
        (tmp_path / "nested").mkdir()
        (tmp_path / "nested" / "other.db").touch()
    r = run_confman("get", "cache", "--database-url", url, cwd=tmp_path, code=1)
    hint = re.search(r"run `([^`]+)`", r.stderr)
    assert hint is not None, r.stderr
    _run_hint(hint.group(1), tmp_path)
    run_confman("get", "cache", "--database-url", url, cwd=tmp_path)
    assert not (tmp_path / "confman.db").exists()  # the hint did not go to the default


def test_ctrl_c_is_one_line_and_exit_130(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    import confman.cli.documents

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(confman.cli.documents, "_list", interrupted)
    r = invoke("list", code=130)
    assert r.stderr == "confman: interrupted\n"  # no blank line before it
