"""`confman serve` over a silent database: TCP accepted, then every byte dropped.

Found (issue 11): behind such a network ``/readyz`` took 60 s to say 503, listings and
history as long, and PATCHes hung for minutes holding their document's lock. Once the
network returned, the instance said "ready" but never caught up (it served v91 while the
database and a second server had v92) until it was restarted.

Each HTTP client's timeout is the guard: it fails a hang, and asserts no speed beyond
"within the deadline, plus generous slack".
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import httpx
import pytest

from ..faults import FaultProxy, fault_proxy
from .conftest import Spawn, server_env
from .servers import assert_problem, etag_version, wait_for

CACHE = "/api/v1/namespaces/cache/documents/default"
DEADLINE = 2  # CONFMAN_DATABASE_TIMEOUT of the server behind the proxy
READY_GUARD = 15.0  # readiness has its own 2 s deadline
CALL_GUARD = DEADLINE * 2 + 15.0


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with fault_proxy("127.0.0.1", 5432) as found:
        yield found


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_silent_database_is_unready_fails_fast_and_converges_after(
    database_url: str, proxy: FaultProxy, spawn: Spawn
) -> None:
    env = {**server_env(), "CONFMAN_DATABASE_TIMEOUT": str(DEADLINE)}
    silent = spawn(database_url.replace("127.0.0.1:5432", proxy.address()), env=env)
    direct = spawn(database_url, env=env, tokens=silent.tokens)  # a second instance
    editor = silent.client("editor", timeout=CALL_GUARD)
    written = editor.patch(CACHE, json={"max_entries": 31})
    assert written.status_code == 200, written.text
    before = etag_version(written)
    probe = httpx.Client(base_url=silent.url, timeout=READY_GUARD)
    assert probe.get("/readyz").status_code == 200

    proxy.blackhole()
    unready = probe.get("/readyz")
    assert unready.status_code == 503, unready.text
    assert unready.json()["status"] == "unready"
    assert "unreachable" in unready.json()["database"], unready.json()
    assert "no answer within" in unready.json()["database"], unready.json()

    # Two writers of one document at once: each gets its 503 (the first does not keep
    # the document's lock, so the second is not left waiting behind it).
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda n: editor.patch(CACHE, json={"max_entries": n}),
                (32, 33),
            )
        )
    for refused in answers:
        assert_problem(refused, 503)
    for path in ("/api/v1/namespaces/cache/documents", f"{CACHE}/history"):
        assert_problem(editor.get(path), 503)
    read = editor.get(CACHE)  # reads keep answering from memory
    assert read.status_code == 200 and read.json()["value"]["max_entries"] == 31

    # The other instance writes meanwhile.
    other = direct.client("editor").patch(CACHE, json={"max_entries": 34})
    assert other.status_code == 200, other.text
    current = etag_version(other)
    assert current == before + 1

    proxy.restore()  # connections that lost bytes stay open, out of step
    wait_for(lambda: probe.get("/readyz").status_code == 200, timeout=60, interval=0.5)
    # No restart: catch-up brings the other instance's version here.
    wait_for(lambda: etag_version(editor.get(CACHE)) == current, timeout=60, interval=0.5)
    assert editor.get(CACHE).json()["value"]["max_entries"] == 34
    again = wait_for(
        lambda: (w := editor.patch(CACHE, json={"max_entries": 35})).is_success and w,
        timeout=60,
        interval=0.5,
    )
    assert etag_version(again) == current + 1
    history = editor.get(f"{CACHE}/history")
    assert history.status_code == 200, history.text
    probe.close()
    assert not silent.server_errors(), silent.output()
