"""Version conflicts under real concurrency: many connections, threads and processes.

Each request is a real HTTP request on its own connection; the only serialisation is
what the server and the database do. Over SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .conftest import Spawn
from .servers import Server, assert_problem, etag_version, unique, wait_for

WRITERS = 16


def doc(key: str) -> str:
    return f"/api/v1/namespaces/model_provider/documents/{key}"


def provider(**extra: Any) -> dict[str, Any]:
    return {"type": "ollama", "base_url": "http://127.0.0.1:11434", **extra}


def in_threads(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run every call in its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def history(client: httpx.Client, key: str) -> list[dict[str, Any]]:
    answer = client.get(doc(key) + "/history", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def test_same_if_match_from_many_threads_exactly_one_wins(server: Server) -> None:
    setup = server.client("editor")
    key = unique("race")
    assert setup.put(doc(key), json=provider()).status_code == 201
    clients = [server.client("editor") for _ in range(WRITERS)]
    for client in clients:  # connect first, so the race is about the write, not the socket
        assert client.get("/healthz").status_code == 200

    def patch(i: int) -> Callable[[], httpx.Response]:
        return lambda: clients[i].patch(
            doc(key), json={"rpm_limit": 1000 + i}, headers={"If-Match": '"1"'}
        )

    answers = in_threads([patch(i) for i in range(WRITERS)])
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 1, 412: WRITERS - 1}, statuses
    (winner,) = [i for i, a in enumerate(answers) if a.status_code == 200]
    assert etag_version(answers[winner]) == 2
    for answer in answers:
        if answer.status_code == 412:
            assert assert_problem(answer, 412)["current_version"] == 2
            assert answer.headers["ETag"] == '"2"'

    final = setup.get(doc(key))
    assert final.json()["version"] == 2
    assert final.json()["value"]["rpm_limit"] == 1000 + winner  # no lost update
    versions = [h["version"] for h in history(setup, key)]
    assert versions == [2, 1]  # exactly one new version


async def test_patches_without_if_match_on_different_fields(server: Server) -> None:
    fields: dict[str, Any] = {
        "enabled": False,
        "rpm_limit": 11,
        "tpm_limit": 22,
        "timeout_seconds": 33.0,
        "connect_timeout_seconds": 4.0,
        "organization": "org-x",
        "models": ["m1"],
    }
    key = unique("fields")
    async with server.aclient("editor", limits=httpx.Limits(max_connections=32)) as client:
        assert (await client.put(doc(key), json=provider())).status_code == 201
        answers = await asyncio.gather(
            *(client.patch(doc(key), json={name: value}) for name, value in fields.items())
        )
        final = (await client.get(doc(key))).json()
        logged = (await client.get(doc(key) + "/history", params={"limit": 100})).json()

    ok = {
        name for (name, _), a in zip(fields.items(), answers, strict=True) if a.status_code == 200
    }
    for answer in answers:
        assert answer.status_code in (200, 412), answer.text
        if answer.status_code == 412:  # a clean conflict, never a lost update
            assert_problem(answer, 412)
    assert ok, "no write succeeded"
    for name in ok:  # every acknowledged write is in the final document
        assert final["value"][name] == fields[name], (name, final["value"])
    for name in set(fields) - ok:
        assert final["value"][name] == provider_defaults()[name], name
    versions = sorted(etag_version(a) for a in answers if a.status_code == 200)
    assert versions == list(range(2, 2 + len(ok)))  # one version per acknowledged write
    assert final["version"] == 1 + len(ok)
    assert len(logged) == 1 + len(ok)


def provider_defaults() -> dict[str, Any]:
    return {
        "enabled": True,
        "rpm_limit": None,
        "tpm_limit": None,
        "timeout_seconds": 60.0,
        "connect_timeout_seconds": 10.0,
        "organization": None,
        "models": [],
    }


def test_two_servers_on_one_database_one_winner(database_url: str, spawn: Spawn) -> None:
    """Two processes serving one database: the database's version check decides."""
    first = spawn(database_url)
    second = spawn(database_url, tokens=first.tokens)
    a, b = first.client("editor"), second.client("editor")

    # Create: the same new key from both servers at once; exactly one creates it.
    key = unique("twin")
    per_server = 4
    calls: list[Callable[[], httpx.Response]] = []
    for client in [a] * per_server + [b] * per_server:
        calls.append(lambda c=client: c.put(doc(key), json=provider()))  # type: ignore[misc]
    created = in_threads(calls)
    assert Counter(r.status_code for r in created) == {201: 1, 412: 2 * per_server - 1}

    # Both servers know version 1 (the one that lost the create learns it from the change
    # log; either may have won).
    for client in (a, b):
        wait_for(lambda c=client: c.get(doc(key)).status_code == 200, timeout=10)  # type: ignore[misc]

    calls = []
    for i, client in enumerate([a] * per_server + [b] * per_server):
        calls.append(
            lambda c=client, i=i: c.patch(  # type: ignore[misc]
                doc(key), json={"rpm_limit": 500 + i}, headers={"If-Match": '"1"'}
            )
        )
    answers = in_threads(calls)
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {200: 1, 412: 2 * per_server - 1}, [r.text for r in answers]
    (winner,) = [i for i, r in enumerate(answers) if r.status_code == 200]

    for client in (a, b):
        final = wait_for(
            lambda c=client: (d := c.get(doc(key)).json())["version"] == 2 and d,  # type: ignore[misc]
            timeout=10,
        )
        assert final["value"]["rpm_limit"] == 500 + winner
        assert [h["version"] for h in history(client, key)] == [2, 1]
