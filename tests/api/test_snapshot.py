"""``GET /api/v1/snapshot``: a client's start-up read, then the stream from its ``seq``.

Each document in a snapshot must be exactly what ``GET .../documents/{key}`` answers the
same token (value, versions, provenance; secrets per role), the set must be what the
token may read, and a stream resumed from ``seq`` must bring every later change and no
change the snapshot already holds.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from confman.api import create_app
from confman.secrets import mask

from .conftest import Spawn
from .servers import EventStream, Server, assert_problem, event_data, unique

DOC = "/api/v1/namespaces/{namespace}/documents/{key}"
SNAPSHOT = "/api/v1/snapshot"


def provider(client: httpx.Client, api_key: str, key: str | None = None) -> dict[str, Any]:
    """Create a model provider holding ``api_key``; the write's answer."""
    body = {"type": "openai", "api_key": api_key}
    made = client.put(DOC.format(namespace="model_provider", key=key or unique("snap")), json=body)
    assert made.status_code == 201, made.text
    answer: dict[str, Any] = made.json()
    return answer


def by_key(snapshot: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["namespace"], d["key"]): d for d in snapshot["documents"]}


def test_each_document_is_what_its_own_route_answers(server: Server) -> None:
    api_key = f"sk-snap-{uuid.uuid4().hex}"
    written = provider(server.client("editor"), api_key)
    key = written["key"]
    params = {"namespace": ["model_provider", "cache"]}
    for token, shown in (("service", api_key), ("viewer", mask(api_key))):
        client = server.client(token)
        answer = client.get(SNAPSHOT, params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["environment"] is None
        assert body["seq"] >= written["change"]["seq"]  # this server applied its own write
        documents = by_key(body)
        assert {ns for ns, _ in documents} == {"model_provider", "cache"}
        assert documents[("model_provider", key)]["value"]["api_key"] == shown
        listed = client.get("/api/v1/namespaces/model_provider/documents", params={"limit": 10000})
        assert sorted(k for ns, k in documents if ns == "model_provider") == [
            d["key"] for d in listed.json()["documents"]
        ]
        for (namespace, item), document in documents.items():
            own = client.get(DOC.format(namespace=namespace, key=item))
            assert own.status_code == 200, own.text
            assert document == own.json(), (token, namespace, item)
        if token != "service":
            assert api_key not in answer.text


def test_without_namespaces_it_holds_every_namespace_the_token_reads(server: Server) -> None:
    for token in ("viewer", "cache-editor", "service", "admin"):
        client = server.client(token)
        answer = client.get(SNAPSHOT)
        assert answer.status_code == 200, answer.text
        readable = {n["namespace"] for n in client.get("/api/v1/namespaces").json()}
        singletons = {
            n["namespace"] for n in client.get("/api/v1/namespaces").json() if not n["keyed"]
        }
        found = {d["namespace"] for d in answer.json()["documents"]}
        assert singletons <= found <= readable, token  # an empty collection has no entry
        assert "api_token" not in found and "virtual_key_secret" not in found
    assert {d["namespace"] for d in server.client("cache-editor").get(SNAPSHOT).json()[
        "documents"
    ]} == {"cache"}  # fmt: skip


async def test_a_stream_resumed_from_its_seq_misses_nothing_and_repeats_nothing(
    server: Server,
) -> None:
    editor = server.client("editor")
    first = provider(editor, f"sk-{uuid.uuid4().hex}")
    key = first["key"]
    taken = server.client("service").get(SNAPSHOT, params={"namespace": "model_provider"})
    assert taken.status_code == 200, taken.text
    seq = taken.json()["seq"]
    assert by_key(taken.json())[("model_provider", key)]["version"] == 1
    path = DOC.format(namespace="model_provider", key=key)
    later = editor.patch(path, json={"rpm_limit": 7}, headers={"If-Match": '"1"'})
    assert later.status_code == 200, later.text
    second = provider(editor, f"sk-{uuid.uuid4().hex}")
    async with (
        server.aclient("service") as service,
        EventStream(service, namespaces=["model_provider"], last_event_id=str(seq)) as stream,
    ):
        events = [event_data(e) for e in await stream.take(2)]
    mine = [(e["key"], e["version"]) for e in events]
    assert mine == [(key, 2), (second["key"], 1)]  # not (key, 1): the snapshot holds it
    assert all(e["seq"] > seq for e in events)


def test_an_environment_answers_its_overlays_and_only_to_tokens_granted_it(
    server: Server,
) -> None:
    admin = server.client("admin")
    stage = unique("snapstage")
    assert admin.post("/api/v1/environments", json={"name": stage}).status_code == 201
    path = DOC.format(namespace="cache", key="default")
    overlay = admin.patch(path, json={"max_entries": 77}, params={"environment": stage})
    assert overlay.status_code == 200, overlay.text
    viewer = server.client("viewer")
    answer = viewer.get(SNAPSHOT, params={"environment": stage, "namespace": "cache"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["environment"] == stage
    (cache,) = answer.json()["documents"]
    assert cache == viewer.get(path, params={"environment": stage}).json()
    assert cache["value"]["max_entries"] == 77 and cache["version"] >= 1
    assert cache["base_version"] is not None
    assert any(stage in (s["detail"] or "") for s in cache["sources"])

    made = admin.post(
        "/api/v1/tokens",
        json={"name": unique("svc"), "role": "service", "environments": [stage]},
    )
    assert made.status_code == 201, made.text
    limited = server.bearer(made.json()["token"])
    assert limited.get(SNAPSHOT, params={"environment": stage}).status_code == 200
    refused = assert_problem(limited.get(SNAPSHOT), 403)  # the server's own: the base
    assert refused["environment"] == "base"
    assert_problem(viewer.get(SNAPSHOT, params={"environment": unique("none")}), 404)
    assert_problem(server.client("cache-editor").get(SNAPSHOT, params={"namespace": "router"}), 403)
    assert_problem(viewer.get(SNAPSHOT, params={"namespace": "api_token"}), 404)
    assert_problem(server.client(None).get(SNAPSHOT), 401)


def test_more_documents_than_the_bound_is_a_clear_422(spawn: Spawn, database_url: str) -> None:
    server = spawn(database_url, "--max-snapshot-documents", "3")
    editor = server.client("editor")
    for _ in range(3):
        provider(editor, f"sk-{uuid.uuid4().hex}")
    just = editor.get(SNAPSHOT, params={"namespace": "model_provider"})
    assert just.status_code == 200, just.text
    assert len(just.json()["documents"]) == 3
    provider(editor, f"sk-{uuid.uuid4().hex}")
    for params in ({"namespace": "model_provider"}, {}):
        problem = assert_problem(editor.get(SNAPSHOT, params=params), 422)
        assert problem["max_documents"] == 3 and "snapshot limit" in problem["detail"]
        assert problem["errors"] == [
            {"path": "namespace", "in": "query", "message": "selects more than 3 documents"}
        ]
    assert editor.get(SNAPSHOT, params={"namespace": "cache"}).status_code == 200


def test_the_bound_must_be_a_positive_integer() -> None:
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="max_snapshot_documents"):
            create_app(lambda: None, max_snapshot_documents=bad)  # type: ignore[arg-type, return-value]
