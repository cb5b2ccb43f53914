"""Schemathesis against the running server's ``/openapi.json``: no input gets a 5xx.

Runs the ``st`` command (schemathesis 4) as a subprocess with a fixed seed and a bounded
number of examples per operation, with an admin token of its own (so a generated
``DELETE /api/v1/tokens/{name}`` cannot revoke the token it runs with). The event
stream is left out: it never ends. Any 5xx fails the test, with schemathesis' report
(each failure with a ``curl`` line that reproduces it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .servers import Server, unique

ST = shutil.which("st", path=str(Path(sys.executable).parent)) or "st"
EXAMPLES = os.environ.get("CONFMAN_TEST_SCHEMATHESIS_EXAMPLES", "30")
SEED = os.environ.get("CONFMAN_TEST_SCHEMATHESIS_SEED", "1")


def test_no_generated_request_gets_a_server_error(server: Server, tmp_path: Path) -> None:
    made = server.client("admin").post(
        "/api/v1/tokens", json={"name": unique("schemathesis"), "role": "admin"}
    )
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    report = tmp_path / "report.json"
    command = [
        ST, "run", f"{server.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--header", f"Authorization: Bearer {token}",
        "--exclude-path", "/api/v1/events",
        "--max-examples", EXAMPLES,
        "--seed", SEED,
        "--workers", "2",
        "--request-timeout", "15",
        "--suppress-health-check", "all",
        "--report", "json", "--report-json-path", str(report),
        "--no-color",
    ]  # fmt: skip
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    output = proc.stdout + proc.stderr
    assert report.exists(), output
    result = json.loads(report.read_text())
    assert result["operations"]["tested"] >= 15, output
    server_errors = [f for f in result["failures"] if f["code"] == "ST101"]
    failures = output.split("= FAILURES =", 1)[-1] if server_errors else ""
    failures = re.sub(r"(?s)=+ WARNINGS =+.*", "", failures)
    assert not server_errors, f"5xx answers:\n{server_errors}\n{failures}"
    assert server.server_errors() == [], server.output()[-5000:]
