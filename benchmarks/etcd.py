"""etcd as a peer: a private server per run, and a small client over its JSON gateway.

The server is Debian's ``etcd-server`` (3.4), started by the suite on two free loopback
ports with a temporary data directory, with etcd's defaults otherwise (every commit is
fsynced, as PostgreSQL's are). It is stopped by its PID when the run ends.

The client speaks etcd's v3 gRPC JSON gateway (served by etcd itself on the client port:
``/v3/kv/put``, ``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/watch``; keys and values in
base64) over one ``httpx.AsyncClient``. Why not a Python etcd library, see
docs/benchmarks.md ("etcd as a peer").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import Skipped

DEADLINE = 10.0  # seconds: every request to etcd; a watch has no read deadline
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


def b64(value: bytes | str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode()


def unb64(value: str) -> bytes:
    return base64.b64decode(value)


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that makes a range or watch cover every key under ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdServer:
    """One etcd process of this run (see `start`)."""

    url: str
    version: str
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Any = field(repr=False)

    @classmethod
    def launch(cls) -> EtcdServer:
        """Spawn etcd on free loopback ports (not yet ready: see `start`)."""
        binary = shutil.which("etcd")
        if binary is None:
            raise Skipped("etcd is not installed (Debian: apt-get install etcd-server)")
        version = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split("\n", 1)[0]
        data_dir = Path(tempfile.mkdtemp(prefix="confman-bench-etcd-"))
        client, peer = _free_port(), _free_port()
        url = f"http://127.0.0.1:{client}"
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        args = [
            binary,
            "--name=bench",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=bench=http://127.0.0.1:{peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-level=warn",
        ]
        proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        return cls(url, version, proc, data_dir, log)

    @classmethod
    async def start(cls, timeout: float = 20.0) -> EtcdServer:
        """Start etcd and wait until healthy; `Skipped` (with the reason) if it cannot."""
        server = await asyncio.to_thread(cls.launch)
        try:
            await server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    async def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise Skipped(f"etcd exited ({self.proc.returncode}): {self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get("/health")
                    if response.status_code == 200 and response.json().get("health") == "true":
                        return
                await asyncio.sleep(0.1)
        raise Skipped(f"etcd was not healthy within {timeout:g} s: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self.log.flush()
            self.log.seek(0)
            return str(self.log.read()[-2000:].decode(errors="replace"))
        return ""

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL if it lingers; the data directory is removed."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(OSError):
            self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class EtcdError(Exception):
    pass


class EtcdClient:
    """The few v3 calls the figures need, over the JSON gateway (one keep-alive pool)."""

    def __init__(self, url: str, *, connections: int = 16) -> None:
        import httpx

        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.AsyncClient(base_url=url, timeout=DEADLINE, limits=limits)

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(path, content=json.dumps(body, separators=(",", ":")))
        if response.status_code != 200:
            raise EtcdError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
        out: dict[str, Any] = response.json()
        return out

    async def put(self, key: str, value: bytes) -> int:
        """Put; returns the revision it committed at."""
        out = await self._call("/v3/kv/put", {"key": b64(key), "value": b64(value)})
        return int(out["header"]["revision"])

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value and its mod revision, or ``None``."""
        out = await self._call("/v3/kv/range", {"key": b64(key)})
        kvs = out.get("kvs") or []
        if not kvs:
            return None
        return unb64(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    async def revision(self) -> int:
        out = await self._call("/v3/kv/range", {"key": b64("\0"), "limit": 1})
        return int(out["header"]["revision"])

    async def put_if(self, key: str, value: bytes, mod_revision: int) -> int | None:
        """Put only if ``key`` is still at ``mod_revision`` (0: absent): the optimistic
        write confman does with its version. Returns the new revision, ``None`` on a
        conflict."""
        body = {
            "compare": [
                {
                    "target": "MOD",
                    "result": "EQUAL",
                    "key": b64(key),
                    "mod_revision": str(mod_revision),
                }
            ],
            "success": [{"request_put": {"key": b64(key), "value": b64(value)}}],
        }
        out = await self._call("/v3/kv/txn", body)
        if not out.get("succeeded"):  # proto3 JSON leaves a false flag out
            return None
        return int(out["header"]["revision"])

    async def put_many(self, pairs: list[tuple[str, bytes]]) -> int:
        """Put every pair in one transaction (at most etcd's ``--max-txn-ops``, 128 by
        default); returns the revision they all committed at."""
        success = [{"request_put": {"key": b64(k), "value": b64(v)}} for k, v in pairs]
        out = await self._call("/v3/kv/txn", {"success": success})
        return int(out["header"]["revision"])

    @contextlib.asynccontextmanager
    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int | None = None
    ) -> AsyncIterator[AsyncIterator[list[dict[str, Any]]]]:
        """A watch stream: yields an iterator of event batches (one per response).

        Entered once the server confirmed the watch (``created``), so a put made after
        entering is seen."""
        request: dict[str, Any] = {"key": b64(key)}
        if prefix:
            request["range_end"] = prefix_end(key)
        if start_revision is not None:
            request["start_revision"] = str(start_revision)
        body = json.dumps({"create_request": request})
        import httpx

        timeout = httpx.Timeout(DEADLINE, read=None)  # a quiet watch is not a failure
        async with self.http.stream("POST", "/v3/watch", content=body, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise EtcdError(f"/v3/watch: HTTP {resp.status_code}")
            lines = resp.aiter_lines()
            first = json.loads(await anext(lines))
            if not first.get("result", {}).get("created"):
                raise EtcdError(f"/v3/watch: not created: {first}")
            pending = first["result"].get("events") or []

            async def batches() -> AsyncIterator[list[dict[str, Any]]]:
                if pending:
                    yield pending
                async for line in lines:
                    if not line:
                        continue
                    message = json.loads(line)
                    if "error" in message:
                        raise EtcdError(f"/v3/watch: {message['error']}")
                    events = message.get("result", {}).get("events")
                    if events:
                        yield events

            yield batches()


def event_value(event: dict[str, Any]) -> tuple[str, bytes, int]:
    """(key, value, mod revision) of a watch event (a put)."""
    kv = event["kv"]
    return unb64(kv["key"]).decode(), unb64(kv.get("value", "")), int(kv["mod_revision"])
