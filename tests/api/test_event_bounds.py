"""Bounds of the event stream: clients that never read, long replays, impossible resumes.

Through real ``confman serve`` processes over SQLite; memory is the server process's
resident set (``VmRSS`` in ``/proc/<pid>/status``). Changes are written by a hub in the
test process on the same database (the server applies them from the change log), which
is much faster than one HTTP request each and is what another instance does.

Found:
- a client that connects and never reads is never cut off: everything for it queues in
  the server (10 such clients and 10,500 changes took a server from 177 MB to 732 MB),
  and the "end the stream" marker waits behind the blocked send;
- a replay read whole pages of the change log with every document in them;
- a ``Last-Event-ID`` ahead of the log got a silent stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from confman.managers import CacheConfigurationManager

from ..support import connect, own_database
from .conftest import server_env
from .servers import STANDARD_TOKENS, Server, assert_problem, create_tokens, start_server

CLIENTS = 100
CHANGES = 1_000
REASON = 5_000  # characters: events of about 5 KB, more than the kernel buffers take
MAX_BYTES = 64 * 1024  # per stream; the default is 1 MiB
SEND_TIMEOUT = 2.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def bounded_server(
    request: pytest.FixtureRequest, tmp_path: Path, **limits: str
) -> Iterator[Server]:
    """A server over an own SQLite database, with ``CONFMAN_STREAM_*`` limits set."""
    env = {**server_env(), **{f"CONFMAN_STREAM_{k.upper()}": v for k, v in limits.items()}}
    with own_database("sqlite", request, tmp_path) as url:
        tokens = create_tokens(url, env, tmp_path, STANDARD_TOKENS)
        server = start_server(url, env, tmp_path, tokens)
        try:
            yield server
        finally:
            server.stop()


def hub_of(server: Server) -> Any:
    key = server.env["CONFMAN_ENCRYPTION_KEY"]
    return connect(
        server.database_url, {"CONFMAN_ENCRYPTION_KEY": key}, managers=[CacheConfigurationManager]
    )


def applied(server: Server) -> int:
    seq: int = server.client("viewer").get("/api/v1/cluster").json()["applied_seq"]
    return seq


async def wait_applied(server: Server, seq: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(applied, server) < seq:
        assert time.monotonic() < deadline, f"the server never applied seq {seq}"
        await asyncio.sleep(0.2)


def never_reading_client(server: Server) -> socket.socket:
    """A stream client with a tiny receive buffer that reads the headers and the ready
    event (so it is subscribed) and then nothing more."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    s.connect(("127.0.0.1", server.port))
    s.settimeout(15)
    token = server.tokens["viewer"]
    s.sendall(
        f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}"
        "\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    got = b""
    while b"event: ready" not in got:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got
    return s


def read_until_closed(s: socket.socket, timeout: float) -> int:
    """Bytes read until the server ends the connection (fail if it never does)."""
    total = 0
    s.settimeout(timeout)
    try:
        while chunk := s.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the stream was not cut off (read {total} bytes)") from None
    return total


async def write_changes(server: Server, count: int, reason: str = "load") -> int:
    """``count`` committed changes of ``cache``; the last seq."""
    async with hub_of(server) as hub:
        cache = hub.manager(CacheConfigurationManager)
        start = cache.current.max_entries
        change = None
        for i in range(count):
            change = await cache.update({"max_entries": start + i + 1}, reason=reason)
        assert change is not None and change.seq is not None
        return change.seq


async def test_clients_that_never_read_are_cut_off_and_cost_bounded_memory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with bounded_server(request, tmp_path, max_bytes=str(MAX_BYTES)) as server:
        clients = [never_reading_client(server) for _ in range(CLIENTS)]
        try:
            before = rss_mb(server.proc.pid)
            last = await write_changes(server, CHANGES, reason="r" * REASON)
            await wait_applied(server, last)
            grown = rss_mb(server.proc.pid) - before
            # Everything queued: CLIENTS * CHANGES events (main grew by 131 MB here);
            # bounded: at most MAX_BYTES per client, and dropped once it is cut off.
            assert grown < 40, f"server RSS grew by {grown:.0f} MB"
            event_bytes = CHANGES * REASON  # what each client would have had
            for s in clients:
                assert read_until_closed(s, timeout=20) < event_bytes
        finally:
            for s in clients:
                s.close()
        assert "too far behind" in server.output()
        # The server still streams to a client that reads.
        answer = server.client("viewer").get("/api/v1/cluster")
        assert answer.status_code == 200


async def test_a_send_that_does_not_finish_in_time_ends_the_stream(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    limits = {"max_bytes": str(64 << 20), "send_timeout": str(SEND_TIMEOUT)}
    with bounded_server(request, tmp_path, **limits) as server:
        s = never_reading_client(server)
        try:
            # More than the socket buffers of a client that does not read take (up to
            # 4 MB here), far less than the byte bound: only the send deadline ends it.
            last = await write_changes(server, 160, reason="s" * 50_000)  # 8 MB of events
            await wait_applied(server, last)
            output = server.output()
            deadline = time.monotonic() + 30
            while "a send took longer than" not in output:
                assert time.monotonic() < deadline, output
                await asyncio.sleep(0.2)
                output = server.output()
            read_until_closed(s, timeout=20)
        finally:
            s.close()


async def test_many_concurrent_replays_over_a_long_log_cost_bounded_memory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Each change row holds the whole (large) document; a replay must not read it."""
    with bounded_server(request, tmp_path, replay_page="20") as server:
        async with hub_of(server) as hub:
            cache = hub.manager(CacheConfigurationManager)
            big = {f"model-{i:04d}": 60 + i for i in range(1000)}
            first = await cache.update({"ttl_by_model": big})
            assert first.seq is not None
            for i in range(150):
                last = await cache.update({"max_entries": 5000 + i})
            assert last.seq is not None
        await wait_applied(server, last.seq)
        after = first.seq - 1
        expected = list(range(first.seq, last.seq + 1))

        before = rss_mb(server.proc.pid)
        peak = before
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mb(server.proc.pid))
                await asyncio.sleep(0.05)

        async def replay(client: httpx.AsyncClient) -> list[int]:
            seqs: list[int] = []
            headers = {"Last-Event-ID": str(after)}
            async with client.stream("GET", "/api/v1/events", headers=headers) as answer:
                assert answer.status_code == 200
                async for line in answer.aiter_lines():
                    if line.startswith("data: "):
                        seqs.append(json.loads(line[6:])["seq"])
                        if seqs[-1] >= last.seq:
                            return seqs
            return seqs

        sampler = asyncio.create_task(sample())
        async with server.aclient("viewer", timeout=60) as client:
            got = await asyncio.gather(*(replay(client) for _ in range(20)))
        done.set()
        await sampler
        for seqs in got:
            assert seqs == expected
        # Main read every row with its ~20 KB document per replay: hundreds of MB.
        assert peak - before < 60, f"server RSS grew by {peak - before:.0f} MB"


async def test_a_last_event_id_ahead_of_the_log_is_a_409_naming_the_newest_seq(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with bounded_server(request, tmp_path) as server:
        viewer = server.client("viewer")
        newest = viewer.get("/api/v1/cluster").json()["database_seq"]
        ahead = {"Last-Event-ID": str(newest + 1000)}
        with viewer.stream("GET", "/api/v1/events", headers=ahead, timeout=10) as answer:
            assert answer.status_code == 409, answer.status_code  # not a silent stream
            answer.read()
        body = assert_problem(answer, 409)
        assert body["newest_seq"] == newest
        assert "ahead" in body["detail"] and "Last-Event-ID" in body["detail"]
        # At the newest seq exactly is a resume with nothing missed: a stream.
        with viewer.stream(
            "GET", "/api/v1/events", headers={"Last-Event-ID": str(newest)}, timeout=5
        ) as stream:
            assert stream.status_code == 200


def test_stream_limits_come_from_the_environment_and_refuse_nonsense_by_name() -> None:
    from confman.api import StreamLimits
    from confman.api.stream import StreamLimitsInvalid

    assert StreamLimits.from_environ({}) == StreamLimits()
    limits = StreamLimits.from_environ(
        {"CONFMAN_STREAM_MAX_BYTES": "4096", "CONFMAN_STREAM_SEND_TIMEOUT": "2.5"}
    )
    assert (limits.max_bytes, limits.send_timeout) == (4096, 2.5)
    for name, raw in [
        ("CONFMAN_STREAM_MAX_EVENTS", "0"),
        ("CONFMAN_STREAM_MAX_BYTES", "1.5"),
        ("CONFMAN_STREAM_SEND_TIMEOUT", "nan"),
        ("CONFMAN_STREAM_PING_INTERVAL", "-1"),
        ("CONFMAN_STREAM_REPLAY_PAGE", "lots"),
    ]:
        with pytest.raises(StreamLimitsInvalid, match=name):
            StreamLimits.from_environ({name: raw})
    with pytest.raises(StreamLimitsInvalid, match="max_bytes"):
        StreamLimits(max_bytes=0)


async def test_a_last_event_id_older_than_the_pruned_log_is_a_409_naming_the_oldest_seq(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = server_env()
    with own_database("sqlite", request, tmp_path) as url:
        key = {"CONFMAN_ENCRYPTION_KEY": env["CONFMAN_ENCRYPTION_KEY"]}
        async with connect(url, key, managers=[CacheConfigurationManager]) as hub:
            cache = hub.manager(CacheConfigurationManager)
            seqs = [(await cache.update({"max_entries": 100 + i})).seq for i in range(3)]
        assert seqs == [1, 2, 3]
        tokens = create_tokens(url, env, tmp_path, STANDARD_TOKENS)
        # Retention removed the first two changes (it keeps each document's newest).
        with contextlib.closing(sqlite3.connect(url.split("///", 1)[1])) as db, db:
            db.execute("DELETE FROM config_changes WHERE seq < 3")
        server = start_server(url, env, tmp_path, tokens)
        try:
            viewer = server.client("viewer")
            with viewer.stream(
                "GET", "/api/v1/events", headers={"Last-Event-ID": "1"}, timeout=10
            ) as answer:
                assert answer.status_code == 409, answer.status_code  # seq 2 is gone
                answer.read()
            body = assert_problem(answer, 409)
            assert body["oldest_seq"] == 3 and "pruned" in body["detail"]
            # After 2 nothing is missing: seq 3 onwards is all there.
            with viewer.stream(
                "GET", "/api/v1/events", headers={"Last-Event-ID": "2"}, timeout=10
            ) as answer:
                assert answer.status_code == 200
                lines = answer.iter_lines()
                assert next(line for line in lines if line.startswith("id:")) == "id: 3"
        finally:
            server.stop()
