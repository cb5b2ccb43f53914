"""Writes over real HTTP that change nothing, and query and path values the framework
would otherwise rewrite or half-read. Once over SQLite and once over PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from .servers import EventStream, Server, assert_problem, etag_version, event_data, unique
from .test_documents import DOCS, create_provider, doc, history, provider

PROVIDERS = DOCS.format(ns="model_provider")


def change_of(answer: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    found: dict[str, Any] = answer.json()["change"]
    return found


async def test_writes_that_change_nothing_answer_the_current_version(server: Server) -> None:
    key = unique("noop")
    path = doc("model_provider", key)
    async with (
        server.aclient("admin") as admin,
        EventStream(admin, namespaces=["model_provider"]) as stream,
    ):
        created = await admin.put(path, json=provider(tpm_limit=5))
        assert created.status_code == 201, created.text
        assert event_data(await stream.next())["key"] == key
        same = {"If-Match": '"1"'}
        answers = [
            await admin.patch(path, json={"tpm_limit": 5}, headers=same),
            await admin.patch(path, json={}),
            await admin.put(path, json=provider(tpm_limit=5), headers=same),
            await admin.post(f"{path}/rollback", json={"to_version": 1}, headers=same),
        ]
        for answer in answers:
            change = change_of(answer)
            assert answer.headers["ETag"] == '"1"'
            assert change["unchanged"] is True
            assert (change["version"], change["seq"], change["changed"]) == (1, 0, [])
            assert answer.json()["version"] == 1 and answer.json()["value"]["tpm_limit"] == 5
        assert len((await admin.get(f"{path}/history")).json()) == 1
        # No event was sent for them: the next one is the next real change.
        changed = await admin.patch(path, json={"tpm_limit": 6}, headers=same)
        assert change_of(changed)["unchanged"] is False and etag_version(changed) == 2
        data = event_data(await stream.next())
        assert (data["key"], data["version"], data["changed"]) == (key, 2, ["tpm_limit"])


def test_a_created_item_lists_its_fields_as_history_does(server: Server) -> None:
    client = server.client("admin")
    key = unique("made")
    created = client.put(doc("model_provider", key), json=provider(tpm_limit=5))
    listed = history(client, "model_provider", key)[0]["changed"]
    assert change_of(created, 201)["changed"] == listed
    assert {"type", "base_url", "tpm_limit"} <= set(listed)
    deleted = client.delete(doc("model_provider", key), headers={"If-Match": '"1"'})
    assert change_of(deleted)["changed"] == history(client, "model_provider", key)[0]["changed"]
    assert change_of(deleted)["changed"] != []


def test_a_rollback_dry_run_writes_nothing(server: Server) -> None:
    client = server.client("admin")
    key = create_provider(client, tpm_limit=5)
    path = doc("model_provider", key)
    assert client.patch(path, json={"tpm_limit": 6}).status_code == 200
    preview = client.post(f"{path}/rollback", json={"to_version": 1}, params={"dry_run": "true"})
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["dry_run"] is True and body["value"]["tpm_limit"] == 5
    assert [(d["path"], d["before"], d["after"]) for d in body["diff"]] == [("tpm_limit", 6, 5)]
    stale = client.post(
        f"{path}/rollback",
        json={"to_version": 1},
        params={"dry_run": "true"},
        headers={"If-Match": '"1"'},
    )
    assert assert_problem(stale, 412)["current_version"] == 2
    missing = client.post(f"{path}/rollback", json={"to_version": 9}, params={"dry_run": "true"})
    assert_problem(missing, 404)
    assert etag_version(client.get(path)) == 2
    assert len(history(client, "model_provider", key)) == 2


def test_a_repeated_query_parameter_is_refused(server: Server) -> None:
    client = server.client("admin")
    key = create_provider(client)
    path = doc("model_provider", key)
    twice = "dry_run=true&dry_run=false"
    for answer in [
        client.patch(f"{path}?{twice}", json={"enabled": False}),
        client.put(f"{path}?{twice}", json=provider(enabled=False), headers={"If-Match": "1"}),
        client.delete(f"{path}?{twice}", headers={"If-Match": "1"}),
        client.post(f"{path}/rollback?{twice}", json={"to_version": 1}),
        client.get(f"{PROVIDERS}?limit=1&limit=2"),
    ]:
        problem = assert_problem(answer, 400)
        assert problem["errors"][0]["in"] == "query"
        assert problem["errors"][0]["path"] in {"dry_run", "limit"}
        assert "2 times" in problem["detail"]
    assert etag_version(client.get(path)) == 1
    # Without a token the answer is 401, whatever the query.
    assert_problem(server.client(None).get(f"{PROVIDERS}?limit=1&limit=2"), 401)


def test_a_nul_in_a_query_value_is_refused(server: Server) -> None:
    client = server.client("admin")
    assert client.get(PROVIDERS).status_code == 200
    for query in ["after=%00", "after=a%00b"]:
        problem = assert_problem(client.get(f"{PROVIDERS}?{query}"), 422)
        assert [(e["in"], e["path"]) for e in problem["errors"]] == [("query", "after")]
        assert "\x00" not in problem["detail"]


def test_a_key_that_is_not_utf8_is_refused(server: Server) -> None:
    # Decoded with errors="replace", each of these would name the one key "<prefix>\ufffd".
    client = server.client("admin")
    prefix = unique("vk")
    for escaped in ["%ff", "%fe", "%C0%AF"]:
        path = doc("virtual_key", f"{prefix}{escaped}")
        problem = assert_problem(client.put(path, json={"name": "team"}), 400)
        assert problem["errors"] == [
            {"path": "key", "in": "path", "message": "is not valid UTF-8 once percent-decoded"}
        ]
        assert_problem(client.get(path), 400)
    assert_problem(client.get(f"{PROVIDERS}?after=%ff"), 400)
    # Percent-encoded UTF-8 is a key like any other.
    made = client.put(doc("virtual_key", f"{prefix}%C3%A9"), json={"name": "team"})
    assert made.status_code == 201, made.text
    assert made.json()["key"] == f"{prefix}\u00e9"


def test_a_blank_or_invisible_key_is_refused(server: Server) -> None:
    client = server.client("admin")
    for escaped in ["%20", "%20%09", "%E2%80%8B", "%EF%BB%BF", "%C2%A0", "%01"]:
        answer = client.put(doc("virtual_key", escaped), json={"name": "team"})
        problem = assert_problem(answer, 422)
        assert [e["path"] for e in problem["errors"]] == ["key"]
        assert "visible character" in problem["detail"]
