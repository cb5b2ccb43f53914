"""One request must not freeze the server: linear work, and limits with clear answers.

Every test talks to a real ``confman serve``. No speed is asserted: the large requests
use sizes where today's quadratic paths took minutes (40,000 keys: 343 s of diff alone),
so on that code they run into the client's timeout, while the linear ones answer at once.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from confman.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DOCUMENT_BYTES

from .servers import Server, assert_problem, etag_version

GUARD = 90.0  # seconds a request may take before the test calls it a hang
KEYS = 40_000
CACHE = "/api/v1/namespaces/cache/documents/default"

pytestmark = pytest.mark.timeout(600)


def ttl_patch(count: int, ttl: int = 60) -> dict[str, Any]:
    return {"ttl_by_model": {f"model-{i:05d}": ttl + i % 1000 for i in range(count)}}


def nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(depth - 1):
        doc = {"x": doc}
    return doc


def test_a_large_dry_run_by_a_limited_editor_answers(sqlite_server: Server) -> None:
    editor = sqlite_server.client("cache-editor", timeout=GUARD)
    before = editor.get(CACHE)
    assert before.status_code == 200, before.text
    answer = editor.patch(CACHE, params={"dry_run": "true"}, json=ttl_patch(KEYS))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["dry_run"] is True
    assert len(body["diff"]) == KEYS
    assert body["diff"][0] == {
        "path": "ttl_by_model.model-00000",
        "change": "added",
        "before": None,
        "after": 60,
    }
    assert len(body["value"]["ttl_by_model"]) == KEYS
    assert editor.get(CACHE).headers["ETag"] == before.headers["ETag"]  # nothing stored
    assert sqlite_server.server_errors() == []


def test_a_large_stored_document_reads_and_audits(sqlite_server: Server) -> None:
    editor = sqlite_server.client("cache-editor", timeout=GUARD)
    viewer = sqlite_server.client("viewer", timeout=GUARD)
    written = editor.patch(CACHE, json=ttl_patch(KEYS))
    assert written.status_code == 200, written.text
    version = etag_version(written)
    assert len(written.json()["sources"]) >= KEYS
    read = viewer.get(CACHE)
    assert read.status_code == 200 and etag_version(read) == version
    sources = {s["path"]: s for s in read.json()["sources"]}
    assert sources["ttl_by_model.model-39999"]["layer"] == "database"
    history = viewer.get(f"{CACHE}/history", params={"limit": 1})
    assert history.status_code == 200, history.text
    (entry,) = history.json()
    assert entry["version"] == version and len(entry["diff"]) == KEYS
    # Every key changed again: a diff of two large documents.
    again = editor.patch(CACHE, json=ttl_patch(KEYS, ttl=61))
    assert again.status_code == 200, again.text
    (entry,) = viewer.get(f"{CACHE}/history", params={"limit": 1}).json()
    assert {d["change"] for d in entry["diff"]} == {"changed"}
    assert len(entry["diff"]) == KEYS
    reset = editor.delete(CACHE, headers={"If-Match": again.headers["ETag"]})
    assert reset.status_code == 200, reset.text
    assert sqlite_server.server_errors() == []


@pytest.mark.parametrize("depth", [500, 900])
@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_deep_bodies_are_refused_with_a_field_path(
    sqlite_server: Server, method: str, depth: int
) -> None:
    editor = sqlite_server.client("cache-editor")
    headers = {"If-Match": editor.get(CACHE).headers["ETag"]}
    answer = editor.request(method, CACHE, json={"ttl_by_model": nested(depth)}, headers=headers)
    body = assert_problem(answer, 422)
    (error,) = body["errors"]
    assert error["path"] == "ttl_by_model" + ".x" * 31
    assert "deeper than 32 levels" in error["message"]
    dry = editor.request(
        method,
        CACHE,
        params={"dry_run": "true"},
        json={"ttl_by_model": nested(depth)},
        headers=headers,
    )
    assert_problem(dry, 422)
    assert sqlite_server.server_errors() == []


def test_bodies_past_the_json_parser_get_a_client_error(sqlite_server: Server) -> None:
    editor = sqlite_server.client("cache-editor")
    deep = '{"ttl_by_model": ' + '{"x": ' * 100_000 + "1" + "}" * 100_001
    answer = editor.patch(CACHE, content=deep, headers={"Content-Type": "application/json"})
    assert_problem(answer, 400)
    assert sqlite_server.server_errors() == []


def test_a_document_past_the_size_limit_is_refused(sqlite_server: Server) -> None:
    editor = sqlite_server.client("cache-editor")
    count = DEFAULT_MAX_DOCUMENT_BYTES // 190
    huge = {"excluded_models": [f"{i:06d}" + "m" * 190 for i in range(count)]}
    payload = json.dumps(huge).encode()
    assert DEFAULT_MAX_DOCUMENT_BYTES < len(payload) < DEFAULT_MAX_BODY_BYTES
    for params in ({}, {"dry_run": "true"}):
        answer = editor.patch(
            CACHE, params=params, content=payload, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422, answer.text[:500]  # not the whole document back
        body = assert_problem(answer, 422)
        assert body["errors"][0]["path"] == ""
        assert f"the limit is {DEFAULT_MAX_DOCUMENT_BYTES:,} bytes" in body["errors"][0]["message"]
        assert body["source"] == "update"
        assert "m" * 190 not in answer.text


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"excluded_models": ["'
    sent = 0
    while sent < total:
        yield b"m" * 65536
        sent += 65536
    yield b'"]}'


def test_a_body_past_the_limit_is_refused_as_it_arrives(sqlite_server: Server) -> None:
    editor = sqlite_server.client("cache-editor")
    answer = editor.patch(
        CACHE,
        content=_chunks(DEFAULT_MAX_BODY_BYTES + 1),  # chunked: no Content-Length
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(answer, 413)
    assert f"larger than {DEFAULT_MAX_BODY_BYTES:,} bytes" in body["detail"]
    assert sqlite_server.server_errors() == []


def test_a_declared_length_past_the_limit_is_refused_at_once(sqlite_server: Server) -> None:
    # Headers only: a server that waited for the body would never answer.
    request = (
        f"PATCH {CACHE} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {sqlite_server.tokens['cache-editor']}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {100 * DEFAULT_MAX_BODY_BYTES}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sqlite_server.port), timeout=30) as conn:
        conn.sendall(request.encode())
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"application/problem+json" in head
    assert json.loads(payload)["status"] == 413
    # The same over a client, and the server still serves the next request.
    answer = httpx.post(
        f"{sqlite_server.url}/api/v1/namespaces/cache/documents/default/rollback",
        content=b"{}" + b" " * DEFAULT_MAX_BODY_BYTES,
        headers={"Content-Type": "application/json", **sqlite_server.auth("admin")},
        timeout=30,
    )
    assert_problem(answer, 413)
    assert httpx.get(f"{sqlite_server.url}/healthz", timeout=10).status_code == 200
    assert sqlite_server.server_errors() == []


def test_serve_takes_its_limits_from_flags_and_the_environment(
    spawn: Any, database_url: str
) -> None:
    server = spawn(database_url, "--max-body-bytes", "2000", "--max-depth", "4")
    with server.client("editor") as client:
        assert_problem(client.patch(CACHE, json=ttl_patch(200)), 413)  # ~4 KB of body
        refused = assert_problem(client.patch(CACHE, json={"ttl_by_model": nested(5)}), 422)
        assert "depth limit" in json.dumps(refused)
        assert client.patch(CACHE, json=ttl_patch(10)).status_code == 200
    server.stop()
    env = {**server.env, "CONFMAN_MAX_DOCUMENT_BYTES": "300"}
    server = spawn(database_url, env=env)
    with server.client("editor") as client:
        refused = assert_problem(client.patch(CACHE, json=ttl_patch(20)), 422)
        assert "300 bytes" in json.dumps(refused)
    server.cli("serve", "--max-depth", "201", code=2)


def test_a_body_past_the_limit_after_a_stream_started_ends_it_quietly(
    spawn: Any, database_url: str
) -> None:
    # The events route has answered 200 before it reads the body (only to see the client
    # leave): past the limit then, it is too late for a 413, and no traceback may follow.
    server = spawn(database_url, "--max-body-bytes", "1000")
    request = (
        "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.tokens['viewer']}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 "), head
        for _ in range(4):
            conn.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
        conn.settimeout(30)
        while conn.recv(65536):  # the server ends the stream
            pass
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert server.server_errors() == []
