"""``confman promote`` and ``confman change-set show/rollback`` on SQLite and PostgreSQL,
in-process with Click's `CliRunner` (what a shell sees: one-line errors, exit codes)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from confman.cli import cli as confman
from confman.secrets import generate_key

from .test_cli import APP_MODULE, SECRET

Invoke = Callable[..., Result]


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Invoke:
    """``confman ARGS`` in-process over ``database_url`` with the test app's managers."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith("CONFMAN_")]:
        monkeypatch.delenv(name)
    (tmp_path / "cli_promote_app.py").write_text(APP_MODULE)
    monkeypatch.setenv("CONFMAN_APP", "cli_promote_app:MANAGERS")
    monkeypatch.setenv("CONFMAN_DATABASE_URL", database_url)
    monkeypatch.setenv("CONFMAN_ENCRYPTION_KEY", generate_key())
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(confman, list(args), catch_exceptions=False)
        assert result.exit_code == code, (args, result.output)
        assert "Traceback" not in result.output
        if code:
            assert result.stderr.strip().splitlines()[-1].startswith("confman: error: ")
        return result

    return run


def differences(invoke: Invoke, *namespaces: str) -> list[tuple[str, str, str]]:
    data = json.loads(invoke("diff", "staging", "production", *namespaces, "--json").stdout)
    return [(f["namespace"], f["key"], f["path"]) for f in data["fields"]]


def test_promote_dry_run_then_real(invoke: Invoke) -> None:
    invoke("env", "create", "staging")
    invoke("env", "create", "production")
    invoke("set", "provider", "p1", "url=https://one", f"api_key={SECRET}")
    invoke("set", "flags", "limits.rpm=7", "beta=true", "-e", "staging")
    invoke("set", "provider", "p2", "url=https://two", "-e", "staging")  # staging only
    invoke("set", "flags", "label=prod", "-e", "production")
    before = differences(invoke)
    assert ("flags", "default", "limits.rpm") in before

    r = invoke("promote", "--from", "staging", "--to", "production", "--dry-run")
    assert SECRET not in r.output
    header, *lines = r.stdout.splitlines()
    assert header.split() == ["NAMESPACE", "KEY", "PATH", "PRODUCTION", "NOW", "FROM", "STAGING"]
    found = {tuple(re.split(r"\s{2,}", line)[:3]): re.split(r"\s{2,}", line)[3:] for line in lines}
    assert found[("flags", "default", "limits.rpm")] == ["60", "7"]
    assert found[("flags", "default", "label")] == ['"prod"', '"none"']
    assert found[("provider", "p2", "(item)")] == ["-", "exists"]
    assert "nothing written" in lines[-1] if lines else False
    assert differences(invoke) == before  # the dry run wrote nothing

    data = json.loads(
        invoke("promote", "--from", "staging", "--to", "production", "--dry-run", "--json").stdout
    )
    assert data["dry_run"] is True and data["change_set"] is None
    assert {(m["namespace"], m["key"], m["action"]) for m in data["members"]} == {
        ("flags", "default", "promote"),
        ("provider", "p2", "promote"),
    }
    assert all(m["environment"] == "production" for m in data["members"])

    r = invoke("promote", "--from", "staging", "--to", "production", "--reason", "release 7")
    assert "limits.rpm" in r.stdout  # the diff first
    done = re.search(r"change set ([0-9a-f]{32}) \(2 document\(s\)\)", r.stdout.splitlines()[-1])
    assert done, r.stdout
    assert differences(invoke) == []
    again = invoke("promote", "--from", "staging", "--to", "production")
    assert again.stdout.strip() == "nothing to promote: production already has staging's values"

    shown = invoke("change-set", "show", done[1])
    assert "release 7" in shown.stdout.splitlines()[0]
    assert {line.split()[1] for line in shown.stdout.splitlines()[2:]} == {"flags", "provider"}
    entry = json.loads(invoke("change-set", "show", done[1], "--json").stdout)
    assert entry["reason"] == "release 7" and len(entry["members"]) == 2
    assert {m["action"] for m in entry["members"]} == {"promote"}

    undone = invoke("change-set", "rollback", done[1])
    assert "rolled back change set" in undone.stdout
    assert differences(invoke) == before


def test_promote_refuses_what_it_cannot_do(invoke: Invoke) -> None:
    invoke("env", "create", "staging")
    r = invoke("promote", "--from", "staging", "--to", "staging", code=2)
    assert "two different environments" in r.stderr
    r = invoke("promote", "--from", "staging", "--to", "nowhere", code=2)
    assert "unknown environment 'nowhere'" in r.stderr
    invoke("promote", "--from", "base", "--to", "staging", code=2)
    invoke("change-set", "show", "0" * 32, code=1)
