"""Process helpers for the multi-process tests: worker processes, own redis-servers and brokers."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from confman.testing import record_changes
from tests.support import IN_CI, connect

from .models import CountersManager

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Worker:
    """One confman instance in its own process (tests/cluster/worker.py)."""

    def __init__(
        self, config: dict[str, Any], out_dir: Path, module: str = "tests.cluster.worker"
    ) -> None:
        self.instance_id = config["instance_id"]
        self.out = out_dir / f"{self.instance_id}.json"
        config = {**config, "out": str(self.out)}
        self.lines: queue.Queue[str] = queue.Queue()
        self.history: list[str] = []
        self.stderr_path = out_dir / f"{self.instance_id}.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()[-4000:]

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """Wait for the next stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if prefix != "STATUS" and self.proc.poll() is None:
                    self.send("STATUS")
                    with contextlib.suppress(AssertionError):
                        self.expect("STATUS", 5)
                raise AssertionError(
                    f"{self.instance_id}: no {prefix!r} within {timeout}s; "
                    f"saw {self.history[-5:]}; stderr:\n{self.stderr()}"
                )
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(
                        f"{self.instance_id} exited ({self.proc.returncode}) before "
                        f"{prefix!r}; stderr:\n{self.stderr()}"
                    ) from None
                continue
            self.history.append(line)
            if line.startswith(prefix):
                return line

    def drain(self) -> list[str]:
        """The lines printed since the last look, without waiting."""
        new: list[str] = []
        while True:
            try:
                new.append(self.lines.get_nowait())
            except queue.Empty:
                self.history.extend(new)
                return new

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Ask the worker to stop; return what it recorded."""
        self.send("STOP")
        try:
            self.proc.wait(timeout)
        finally:
            self.kill()
        if self.proc.returncode != 0:
            raise AssertionError(f"{self.instance_id} failed:\n{self.stderr()}")
        result: dict[str, Any] = json.loads(self.out.read_text())
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._stderr.close()


@contextlib.contextmanager
def workers(
    configs: list[dict[str, Any]], out_dir: Path, module: str = "tests.cluster.worker"
) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for config in configs:
            started.append(Worker(config, out_dir, module))
        yield started
    finally:
        for w in started:
            w.kill()


class RedisServer:
    """A redis-server of our own on a free port, for tests that kill Redis."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            # scripts/test installs it; under CI a missing binary must fail, not skip.
            message = "redis-server is not installed (scripts/services installs it)"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="confman-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise AssertionError("own redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


class MosquittoServer:
    """A mosquitto broker of our own on a free port, for tests that kill the broker."""

    def __init__(self, users: dict[str, str] | None = None, *, tls: bool = False) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
        )
        if binary is None:
            message = "mosquitto is not installed (scripts/services installs it)"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="confman-mosquitto-")
        self.config = Path(self.dir) / "mosquitto.conf"
        # Run as ourselves: mosquitto started as root would switch to its own user, which
        # cannot read our private temporary directory.
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            f"user {getpass.getuser()}",
        ]
        if users:
            # Only these users may connect (mosquitto_passwd hashes the passwords).
            passwords = Path(self.dir) / "passwd"
            passwords.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(passwords), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.tls = tls
        self.ca_file = Path(self.dir) / "ca.pem"
        if tls:
            self._make_certificates()
            lines += [
                f"cafile {self.ca_file}",
                f"certfile {self.dir}/server.pem",
                f"keyfile {self.dir}/server.key",
            ]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def _make_certificates(self) -> None:
        """A throw-away CA and a server certificate for 127.0.0.1 (openssl)."""
        d = self.dir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=confman-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        )
        (Path(d) / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", "san.ext",
                "-out", "server.pem")  # fmt: skip

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        raise AssertionError("own mosquitto did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def own_mosquitto(
    users: dict[str, str] | None = None, *, tls: bool = False
) -> Iterator[MosquittoServer]:
    server = MosquittoServer(users, tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# ------------------------------------------------------- the fleet's history checker

KEYS = [f"k{i}" for i in range(10)]
PER_KEY = 100  # 10 keys x 100 versions = 1,000 changes


def assert_strictly_increasing(result: dict[str, Any], expected: dict[str, int]) -> None:
    seen: dict[str, list[int]] = result["seen"]
    for key, final in expected.items():
        versions = seen.get(key, [])
        assert versions, f"{result['instance_id']} never saw {key}"
        assert all(a < b for a, b in itertools.pairwise(versions)), (
            f"{result['instance_id']} emitted {key} out of order: {versions}"
        )
        assert versions[-1] == final, (result["instance_id"], key, versions[-3:])
        assert result["final"][key] == final


async def write_changes(database_url: str, env: dict[str, str], **options: Any) -> dict[str, int]:
    async with connect(database_url, env, managers=[CountersManager], **options) as hub:
        counters = hub.manager(CountersManager)
        seen = record_changes(counters)
        for key in KEYS:
            await counters.create(key, {"value": 0})
        for i in range(1, PER_KEY):
            await asyncio.gather(*(counters.update({"value": i}, key=key) for key in KEYS))
        # The origin instance emits every version.
        for key in KEYS:
            assert seen.versions(key) == list(range(1, PER_KEY + 1))
    return {f"counters/{k}": PER_KEY for k in KEYS}


async def first_leader(candidates: list[Any], timeout: float = 30.0) -> tuple[Any, int]:
    """The first candidate to announce ``LEADER True <token>``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for w in candidates:
            for line in w.drain():
                if line.startswith("LEADER True"):
                    return w, int(line.split()[2])
        await asyncio.sleep(0.01)
    raise AssertionError("no leader")


async def write_late_change(raw: Any) -> int:
    """In ``raw``'s open transaction (an asyncpg connection), write counters/x v2 (value 7)
    with its change-log row as confman does, and return the row's seq: a "slow writer"
    whose id is handed out now but becomes visible only at its commit."""
    await raw.execute(
        "UPDATE config_documents SET data = $1::jsonb, version = 2 "
        "WHERE namespace = 'counters' AND key = 'x' AND version = 1",
        json.dumps({"value": 7}),
    )
    return int(
        await raw.fetchval(
            "INSERT INTO config_changes (namespace, key, version, action, actor, reason, "
            "before, after, changed, data, origin, committed_at) VALUES ('counters', 'x', "
            "2, 'update', 'slow', NULL, $1::jsonb, $2::jsonb, $3::jsonb, $2::jsonb, "
            "'slow-writer', $4) RETURNING seq",
            json.dumps({"value": 0}),
            json.dumps({"value": 7}),
            json.dumps(["value"]),
            datetime.now(UTC),
        )
    )
