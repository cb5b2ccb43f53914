"""The server-sent event stream: live changes from any process, resume, filters.

Over SQLite and PostgreSQL. Changes come from the API and from another process (the
``confman`` CLI on the same database), and a client that reconnects with
``Last-Event-ID`` must get every change it missed exactly once, in seq order.
"""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import Spawn
from .servers import EventStream, Server, event_data, unique

QUIET = 2.6  # longer than the server's change-log poll (2 s): a late repeat would show


def doc(ns: str, key: str = "default") -> str:
    return f"/api/v1/namespaces/{ns}/documents/{key}"


def provider(**extra: Any) -> dict[str, Any]:
    return {"type": "ollama", "base_url": "http://127.0.0.1:11434", **extra}


async def current_seq(client: httpx.AsyncClient) -> int:
    answer = await client.get("/api/v1/cluster")
    assert answer.status_code == 200, answer.text
    seq: int = answer.json()["database_seq"]
    return seq


async def write(client: httpx.AsyncClient, method: str, path: str, **options: Any) -> int:
    """A write that must succeed; its seq."""
    answer = await client.request(method, path, **options)
    assert answer.status_code in (200, 201), answer.text
    seq: int = answer.json()["change"]["seq"]
    return seq


async def test_api_and_cli_writes_arrive_with_id_equal_to_seq(server: Server) -> None:
    key = unique("sse")
    path = doc("model_provider", key)
    async with (
        server.aclient("viewer") as viewer,
        server.aclient("editor") as editor,
        EventStream(viewer) as stream,
    ):
        assert stream.response is not None and stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.ready <= await current_seq(viewer)  # where a new client stands

        created = await write(editor, "PUT", path, json=provider())
        seq = await write(editor, "PATCH", path, json={"enabled": False})
        first, data = (event_data(e) for e in await stream.take(2))
        assert first["seq"] == created > stream.ready and first["action"] == "create"
        assert data["seq"] == seq > created
        assert (data["namespace"], data["key"], data["action"]) == ("model_provider", key, "update")
        assert data["actor"] == "editor" and data["changed"] == ["enabled"]
        assert data["version"] == 2
        api_origin = data["origin"]

        # A change committed by another process reaches the stream too.
        await server.acli("set", "model_provider", key, "tpm_limit=77", "--actor", "cli-person")
        data = event_data(await stream.next(timeout=15))
        assert (data["key"], data["actor"], data["changed"]) == (key, "cli-person", ["tpm_limit"])
        assert data["seq"] > seq and data["origin"] != api_origin
        assert data["version"] == 3 == (await viewer.get(path)).json()["version"]
        assert await stream.drain(QUIET) == []  # nothing twice (the poll saw it too)


async def test_resume_with_last_event_id_misses_nothing_and_repeats_nothing(
    server: Server,
) -> None:
    key = unique("resume")
    path = doc("model_provider", key)
    async with server.aclient("viewer") as viewer, server.aclient("editor") as editor:
        async with EventStream(viewer) as first:
            ready = first.ready
        # Dropped before any change: resuming from the ready id gets what came since.
        created = await write(editor, "PUT", path, json=provider())
        async with EventStream(viewer, last_event_id=str(ready)) as first:
            assert event_data(await first.next())["seq"] == created
            seen = [
                await write(editor, "PATCH", path, json={"rpm_limit": 100 + i}) for i in range(3)
            ]
            events = [event_data(e) for e in await first.take(3)]
            assert [e["seq"] for e in events] == seen
        last_id = str(seen[-1])

        # Disconnected: three API writes, one by another process, one in another namespace.
        missed = [await write(editor, "PATCH", path, json={"rpm_limit": 200 + i}) for i in range(3)]
        await server.acli("set", "model_provider", key, "tpm_limit=5", "--actor", "offline")
        missed.append((await viewer.get(path + "/history", params={"limit": 1})).json()[0]["seq"])
        missed.append(await write(editor, "PATCH", doc("cache"), json={"max_entries": 31337}))
        assert missed == sorted(missed) and missed[0] > seen[-1]

        async with EventStream(viewer, last_event_id=last_id) as second:
            replayed = [event_data(e) for e in await second.take(len(missed))]
            assert [e["seq"] for e in replayed] == missed  # all, in seq order
            assert replayed[3]["actor"] == "offline"
            live = await write(editor, "PATCH", path, json={"enabled": False})
            assert event_data(await second.next())["seq"] == live  # then the live feed
            # The server applies the CLI's change from the log meanwhile: never sent twice.
            assert await second.drain(QUIET) == []


async def test_namespace_filter(server: Server) -> None:
    key = unique("filter")
    async with server.aclient("viewer") as viewer, server.aclient("editor") as editor:
        after = str(await current_seq(viewer))
        async with (
            EventStream(viewer, namespaces=["cache"], last_event_id=after) as cache_only,
            EventStream(viewer, namespaces=["cache", "router"], last_event_id=after) as both,
        ):
            wanted_cache, wanted_both = [], []
            await write(editor, "PUT", doc("model_provider", key), json=provider())
            seq = await write(editor, "PATCH", doc("cache"), json={"max_entries": 1234})
            wanted_cache.append(seq)
            wanted_both.append(seq)
            wanted_both.append(await write(editor, "PATCH", doc("router"), json={}))
            await write(editor, "PATCH", doc("model_provider", key), json={"rpm_limit": 3})
            seq = await write(editor, "PATCH", doc("cache"), json={"max_entries": 4321})
            wanted_cache.append(seq)
            wanted_both.append(seq)

            got = [event_data(e) for e in await cache_only.take(2)]
            assert [e["seq"] for e in got] == wanted_cache
            assert {e["namespace"] for e in got} == {"cache"}
            got = [event_data(e) for e in await both.take(3)]
            assert [e["seq"] for e in got] == wanted_both
            assert await cache_only.drain(1.0) == [] and await both.drain(0.2) == []


async def test_a_namespace_restricted_token_streams_only_its_namespaces(server: Server) -> None:
    key = unique("scoped")
    async with (
        server.aclient("cache-editor") as scoped,
        server.aclient("editor") as editor,
    ):
        after = str(await current_seq(editor))
        async with EventStream(scoped, last_event_id=after) as stream:
            await write(editor, "PUT", doc("model_provider", key), json=provider())
            seq = await write(scoped, "PATCH", doc("cache"), json={"max_entries": 99})
            data = event_data(await stream.next())
            assert (data["seq"], data["namespace"], data["actor"]) == (seq, "cache", "cache-editor")
            assert await stream.drain(1.0) == []


async def test_stream_refuses_an_ungranted_or_unknown_namespace(server: Server) -> None:
    """Found: the checks run inside the generator, after ``200`` and the headers went out,
    so the client sees ``200 text/event-stream`` and then a broken connection."""
    cases = [("cache-editor", "router", 403), ("admin", "nope", 404), ("admin", "api_token", 404)]
    for token, namespace, status in cases:
        async with server.aclient(token) as client:
            try:
                async with client.stream(
                    "GET", "/api/v1/events", params={"namespace": namespace}, timeout=5
                ) as answer:
                    got = answer.status_code
                    await answer.aread()
            except httpx.HTTPError as e:  # the broken stream after a 200
                raise AssertionError(f"{token} ?namespace={namespace}: {e!r}") from e
            assert got == status, (token, namespace, got)


async def test_a_replayed_event_is_the_event_sent_live(server: Server) -> None:
    """The same seq must carry the same data whether live or read back from the log.

    Found: for a ``create`` the live event says ``changed: []`` while the replayed one
    lists every field (the change log's ``changed``); so does the PUT's ``change``.
    """
    key = unique("same")
    path = doc("model_provider", key)
    async with server.aclient("viewer") as viewer, server.aclient("editor") as editor:
        after = str(await current_seq(viewer))
        async with EventStream(viewer, last_event_id=after) as stream:
            await write(editor, "PUT", path, json=provider())
            await write(editor, "PATCH", path, json={"enabled": False})
            await write(editor, "DELETE", path, headers={"If-Match": '"2"'})
            live = [event_data(e) for e in await stream.take(3)]
        async with EventStream(viewer, last_event_id=after) as again:
            replayed = [event_data(e) for e in await again.take(3)]
    assert [e["action"] for e in live] == ["create", "update", "delete"]
    assert replayed == live


async def test_resume_on_another_instance_repeats_nothing(database_url: str, spawn: Spawn) -> None:
    """A client resumes on a second instance (a load balancer's choice) that has not yet
    applied the changes the client saw: it must not send them again when it does.

    Found: the live loop only skips seqs it sent from the backlog, not seqs at or below
    ``Last-Event-ID``, so the lagging instance repeats every change the client had.
    """
    first = spawn(database_url)
    second = spawn(database_url, tokens=first.tokens)
    key = unique("lag")
    path = doc("model_provider", key)
    async with (
        first.aclient("editor") as editor,
        first.aclient("viewer") as on_first,
        second.aclient("viewer") as on_second,
    ):
        after = str(await current_seq(on_first))
        async with EventStream(on_first, last_event_id=after) as stream:
            await write(editor, "PUT", path, json=provider())
            for attempt in range(10):
                seq = await write(editor, "PATCH", path, json={"rpm_limit": attempt + 1})
                while event_data(await stream.next())["seq"] != seq:
                    pass
                # Resume on the second instance before its poll (every 2 s) applied it.
                lagging = (await on_second.get("/api/v1/cluster")).json()["applied_seq"] < seq
                if lagging:
                    break
            assert lagging, "the second instance was never behind; cannot test"
        async with EventStream(on_second, last_event_id=str(seq)) as resumed:
            newer = await write(editor, "PATCH", path, json={"enabled": False})
            got = [event_data(e)["seq"] for e in await resumed.drain(QUIET)]
    assert got == [newer], f"resumed after {seq}, got {got}"
