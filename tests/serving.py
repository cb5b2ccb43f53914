"""Run ``confman serve`` as a real process on a free loopback port, for HTTP tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from confman.secrets import generate_key

CONFMAN = str(Path(sys.executable).with_name("confman"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    database_url: str
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes]
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``confman ARGS`` against the same database and key as the server."""
        return subprocess.run(
            [CONFMAN, *args, "--database-url", self.database_url],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def token(self, name: str, role: str, namespaces: Sequence[str] | None = None) -> str:
        """A new bearer token (through ``confman tokens create``)."""
        args = ["tokens", "create", "--name", name, "--role", role]
        if namespaces is not None:
            args += ["--namespaces", ",".join(namespaces)]
        token = self.cli(*args).stdout.strip()
        self.tokens[name] = token
        # The server learns of the token like of any change made elsewhere: at its next
        # change-log poll (at once with Redis). Wait until it does.
        deadline = time.monotonic() + 15
        with self.client(token) as http:
            while http.get("/api/v1/whoami").status_code != 200:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the server never accepted token {name!r}")
                time.sleep(0.05)
        return token

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serving(
    database_url: str,
    *,
    workdir: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[Server]:
    """Start ``confman serve``, wait for ``/readyz``, and stop it by its pid afterwards."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CONFMAN_")} | {
        "CONFMAN_ENCRYPTION_KEY": generate_key(),
        **(env or {}),
    }
    log = workdir / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                CONFMAN,
                "serve",
                "--database-url",
                database_url,
                "--port",
                str(port),
                "--no-bootstrap-token",
                *args,
            ],
            cwd=workdir,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", database_url, environment, workdir, process, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"confman serve exited: {server.output()}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"confman serve not ready in {ready_timeout}s: {server.output()}"
                )
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
