"""Real `confman serve` processes on loopback, the `confman` CLI, and HTTP/SSE helpers.

Nothing here mocks anything: a `Server` is the ``confman serve`` command in its own
process, on its own port, over a database the test owns; tokens are made with
``confman tokens create`` beforehand, exactly as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse
from prometheus_client.parser import text_string_to_metric_families

_SCRIPT = shutil.which("confman", path=str(Path(sys.executable).parent))
CONFMAN = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "confman.cli"]

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# name -> (role, namespaces or None): the tokens every standard server gets.
STANDARD_TOKENS: dict[str, tuple[str, str | None]] = {
    "admin": ("admin", None),
    "editor": ("editor", None),
    "viewer": ("viewer", None),
    "cache-editor": ("editor", "cache"),
    "service": ("service", None),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unique(prefix: str) -> str:
    """A collection key (model providers accept lower-case letters, digits and ``-``)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def clean_env(**extra: str) -> dict[str, str]:
    """The real environment minus every CONFMAN_* variable (no override leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONFMAN_")}
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def confman(
    *args: str,
    env: Mapping[str, str],
    cwd: Path,
    code: int | None = 0,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the ``confman`` command; check its exit code (unless ``code`` is None)."""
    proc = subprocess.run(
        [*CONFMAN, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if code is not None:
        assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


async def aconfman(
    *args: str, env: Mapping[str, str], cwd: Path, code: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """`confman` from async code, without blocking the event loop."""
    return await asyncio.to_thread(confman, *args, env=env, cwd=cwd, code=code)


def create_tokens(
    database_url: str,
    env: Mapping[str, str],
    cwd: Path,
    specs: Mapping[str, tuple[str, str | None]],
) -> dict[str, str]:
    """``confman tokens create`` for each spec, in parallel; name -> plaintext token."""
    procs = {}
    for name, (role, namespaces) in specs.items():
        args = ["tokens", "create", "--database-url", database_url, "--name", name]
        args += ["--role", role, "--actor", "test-setup"]
        if namespaces is not None:
            args += ["--namespaces", namespaces]
        procs[name] = subprocess.Popen(
            [*CONFMAN, *args],
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    tokens = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (name, out, err)
        token = out.strip()
        assert token.startswith("cmt_"), (name, out, err)
        # The value is on stdout only; stderr says what was made but never the value.
        assert token not in err
        tokens[name] = token
    return tokens


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """Terminate by PID, then kill after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@dataclass
class Server:
    """One ``confman serve`` process."""

    database_url: str
    env: dict[str, str]
    workdir: Path
    tokens: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra_args: tuple[str, ...] = ()
    tls: ssl.SSLContext | None = None  # served with TLS: clients verify with this
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{'http' if self.tls is None else 'https'}://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def auth(self, token_name: str | None) -> dict[str, str]:
        if token_name is None:
            return {}
        return {"Authorization": f"Bearer {self.tokens[token_name]}"}

    def client(self, token_name: str | None = "admin", **options: Any) -> httpx.Client:
        """A sync client (closed with the server) sending ``token_name``'s token."""
        options.setdefault("timeout", 30)
        headers = {**self.auth(token_name), **options.pop("headers", {})}
        if self.tls is not None:
            options.setdefault("verify", self.tls)
        client = httpx.Client(base_url=self.url, headers=headers, **options)
        self._clients.append(client)
        return client

    def bearer(self, token: str) -> httpx.Client:
        """A sync client sending the plaintext ``token``."""
        return self.client(None, headers={"Authorization": f"Bearer {token}"})

    def aclient(self, token_name: str | None = "admin", **options: Any) -> httpx.AsyncClient:
        """An async client; use it as ``async with``."""
        options.setdefault("timeout", 30)
        if self.tls is not None:
            options.setdefault("verify", self.tls)
        return httpx.AsyncClient(base_url=self.url, headers=self.auth(token_name), **options)

    def cli(self, *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
        """The ``confman`` command on this server's database, as another process."""
        return confman(
            *args, "--database-url", self.database_url, env=self.env, cwd=self.workdir, code=code
        )

    async def acli(self, *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.cli, *args, code=code)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        stop_process(self.proc)

    def server_errors(self) -> list[str]:
        """Lines of the server's log that report an unhandled exception."""
        return [line for line in self.output().splitlines() if "Exception in ASGI" in line]


def start_server(
    database_url: str,
    env: Mapping[str, str],
    workdir: Path,
    tokens: Mapping[str, str],
    *extra_args: str,
    name: str = "server",
    tls: ssl.SSLContext | None = None,
    port: int | None = None,
) -> Server:
    """Start ``confman serve`` and wait for ``/readyz`` = 200 (fail with its output).

    ``tls``: the server is given ``--tls-cert`` and ``--tls-key`` in ``extra_args``;
    every client, this wait's too, verifies it with this context. ``port``: listen
    there (a restart on the port a killed server had) instead of on a free one.
    """
    port = free_port() if port is None else port
    log_path = workdir / f"{name}-{port}.log"
    args = ["serve", "--database-url", database_url, "--port", str(port), "--no-bootstrap-token"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*CONFMAN, *args, *extra_args],
            env=dict(env),
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(
        database_url, dict(env), workdir, dict(tokens), port, proc, log_path, tuple(extra_args),
        tls,
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    last: str = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"confman serve exited with {proc.returncode}:\n{server.output()}")
        try:
            answer = httpx.get(f"{server.url}/readyz", timeout=2, verify=tls or True)
            if answer.status_code == 200:
                return server
            last = f"{answer.status_code} {answer.text}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.1)
    server.stop()
    raise AssertionError(
        f"confman serve did not become ready in {START_TIMEOUT:g}s (last: {last}):\n"
        f"{server.output()}"
    )


# --------------------------------------------------------------------------- HTTP helpers


def etag_version(response: httpx.Response) -> int:
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), etag
    return int(etag.strip('"'))


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem of ``status``; its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text page by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value, 0.0 when absent (a counter not yet incremented)."""
    return metric_samples(text).get((name, frozenset(labels.items())), 0.0)


def database_seq(client: httpx.Client) -> int:
    """The newest change-log seq, as the server sees the database."""
    answer = client.get("/api/v1/cluster")
    assert answer.status_code == 200, answer.text
    seq: int = answer.json()["database_seq"]
    return seq


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; that value (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {predicate}")
        time.sleep(interval)


# --------------------------------------------------------------------------- SSE


class EventStream:
    """Reads ``GET /api/v1/events`` in a task; change events queue up until taken.

    ``async with EventStream(client, last_event_id="7") as stream: await stream.take(3)``

    Without ``last_event_id`` the server opens with ``event: ready`` (``data: {"seq": N}``,
    sent once it is subscribed); entering waits for it and keeps its seq in ``ready``.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        namespaces: Iterable[str] = (),
        last_event_id: str | None = None,
        environment: str | None = None,
    ) -> None:
        self.client = client
        self.params = [("namespace", n) for n in namespaces]
        if environment is not None:
            self.params.append(("environment", environment))
        self.resuming = last_event_id is not None
        self.headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        self.events: asyncio.Queue[ServerSentEvent] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self.ended = asyncio.Event()
        self.ready: int | None = None
        self.applied: int | None = None  # the last resume point the server marked
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async with aconnect_sse(
                self.client,
                "GET",
                "/api/v1/events",
                params=self.params,
                headers=dict(self.headers),  # aconnect_sse adds to the dict it gets
                timeout=httpx.Timeout(30, read=None),
            ) as source:
                self.response = source.response
                self.connected.set()
                if source.response.status_code != 200:
                    await source.response.aread()
                    return
                async for event in source.aiter_sse():
                    if event.event == "ready" and self.ready is None and not self.resuming:
                        self.ready = int(json.loads(event.data)["seq"])
                        assert event.id == str(self.ready), event
                        self._ready.set()
                        continue
                    if event.event == "applied":  # a resume point, not a change
                        self.applied = int(json.loads(event.data)["seq"])
                        assert event.id == str(self.applied), event
                        continue
                    await self.events.put(event)
        except (httpx.HTTPError, asyncio.CancelledError) as e:
            self.error = e
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self.connected.set()
            self._ready.set()
            self.ended.set()

    async def __aenter__(self) -> EventStream:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.connected.wait(), 15)
        if not self.resuming and self.response is not None and self.response.status_code == 200:
            await asyncio.wait_for(self._ready.wait(), 15)
            assert self.ready is not None, f"no ready event (stream error: {self.error!r})"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def next(self, timeout: float = 10.0) -> ServerSentEvent:
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no event within {timeout:g}s (stream error: {self.error!r})"
            ) from None

    async def take(self, count: int, timeout: float = 10.0) -> list[ServerSentEvent]:
        return [await self.next(timeout) for _ in range(count)]

    async def drain(self, seconds: float) -> list[ServerSentEvent]:
        """Whatever arrives within ``seconds``."""
        found = []
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                found.append(await asyncio.wait_for(self.events.get(), left))
            except TimeoutError:
                break
        return found


def event_data(event: ServerSentEvent) -> dict[str, Any]:
    assert event.event == "change", event
    data: dict[str, Any] = json.loads(event.data)
    assert event.id == str(data["seq"]), (event.id, data)  # the id is the seq
    return data


# --------------------------------------------------------------------------- faults


class TcpProxy:
    """A loopback TCP proxy to ``upstream`` that a test can cut and restore.

    ``cut()`` closes the listening socket and every proxied connection, so the database
    is unreachable (connection refused) for whoever connects through the proxy;
    ``restore()`` listens on the same port again. ``retarget(port)`` fails over: new
    connections go to another upstream, the current ones are dropped.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def retarget(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        """Send new connections to another upstream (a failover) and drop the current
        ones, so that every client reconnects, to it; the port stays open throughout."""
        self.upstream = (upstream_host, upstream_port)
        self.drop()

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self.drop()

    def drop(self) -> None:
        """Close every proxied connection (the listening socket stays)."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.cut()
