"""``/api/v1/layers`` and the documents in change events: what a remote hub loads from,
writes to and hears changes from (`confman.remote`).

Stored documents travel with each secret as ``{"$secret": ...}``: in clear for a service
token, masked for every other; writes are version-checked, validated by the server and
refused to tokens that may not write.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from confman.secrets import generate_key, mask

from .conftest import Spawn
from .servers import EventStream, Server, assert_problem, clean_env, event_data, unique

LAYER = "/api/v1/layers/{namespace}/{key}"


def provider(server: Server, api_key: str) -> str:
    key = unique("layer")
    made = server.client("editor").put(
        f"/api/v1/namespaces/model_provider/documents/{key}",
        json={"type": "openai", "api_key": api_key, "timeout_seconds": 5},
    )
    assert made.status_code == 201, made.text
    return key


def layer(server: Server, token: str, key: str) -> dict[str, Any]:
    answer = server.client(token).get(
        "/api/v1/layers", params={"namespace": "model_provider", "key": key}
    )
    assert answer.status_code == 200, answer.text
    (found,) = answer.json()["documents"]
    assert isinstance(found, dict)
    return found


def test_layers_give_stored_documents_secrets_by_role(server: Server) -> None:
    api_key = f"sk-layer-{uuid.uuid4().hex}"
    key = provider(server, api_key)
    clear = layer(server, "service", key)
    assert clear["data"]["api_key"] == {"$secret": api_key}
    assert clear["version"] == 1 and clear["environment"] is None
    for token in ("viewer", "editor", "admin"):
        shown = server.client(token).get("/api/v1/layers").text
        assert api_key not in shown, token
        assert json.loads(shown)["seq"] >= 1
        assert layer(server, token, key)["data"]["api_key"] == {"$secret": mask(api_key)}
    one = server.client("viewer").get("/api/v1/layers", params={"key": key})
    assert_problem(one, 422)  # ?key= needs one namespace


def test_layer_writes_are_checked_and_keep_masked_secrets(server: Server) -> None:
    api_key = f"sk-keep-{uuid.uuid4().hex}"
    key = provider(server, api_key)
    path = LAYER.format(namespace="model_provider", key=key)
    shown = layer(server, "editor", key)["data"]
    body = {"data": {**_plain(shown), "timeout_seconds": 9}}
    assert_problem(server.client("editor").put(path, json=body), 428)
    for token in ("service", "viewer"):
        assert_problem(server.client(token).put(path, json=body, headers={"If-Match": '"1"'}), 403)
    stale = server.client("editor").put(path, json=body, headers={"If-Match": '"7"'})
    assert assert_problem(stale, 412)["current_version"] == 1
    bad = {"data": {**_plain(shown), "timeout_seconds": -1}}
    refused = assert_problem(
        server.client("editor").put(path, json=bad, headers={"If-Match": '"1"'}), 422
    )
    assert any("timeout_seconds" in e["path"] for e in refused["errors"])
    # The editor sends back the mask it was shown: the server keeps the stored secret.
    written = server.client("editor").put(path, json=body, headers={"If-Match": '"1"'})
    assert written.status_code == 200, written.text
    assert written.json()["version"] == 2 and written.headers["ETag"] == '"2"'
    after = layer(server, "service", key)["data"]
    assert after["api_key"] == {"$secret": api_key} and after["timeout_seconds"] == 9
    # A mask that is not the stored secret's is refused, as a pasted one is.
    other = {"data": {**_plain(shown), "api_key": mask("something else")}}
    pasted = server.client("editor").put(path, json=other, headers={"If-Match": '"2"'})
    assert_problem(pasted, 422)
    # A rollback needs the admin role; any version is read from the change log.
    version = server.client("service").get(f"{path}/versions/1")
    assert version.status_code == 200 and version.json()["data"]["timeout_seconds"] == 5
    back = {"data": version.json()["data"], "action": "rollback"}
    back["data"] = _plain(back["data"])
    assert_problem(server.client("editor").put(path, json=back, headers={"If-Match": '"2"'}), 403)
    rolled = server.client("admin").put(path, json=back, headers={"If-Match": '"2"'})
    assert rolled.status_code == 200 and rolled.json()["action"] == "rollback"


async def test_events_carry_the_document_and_resume_points(server: Server) -> None:
    api_key = f"sk-event-{uuid.uuid4().hex}"
    async with (
        server.aclient("service") as service,
        server.aclient("viewer") as viewer,
        EventStream(service, namespaces=["model_provider"]) as clear,
        EventStream(viewer, namespaces=["model_provider"]) as masked,
    ):
        key = provider(server, api_key)
        seen = event_data(await clear.next())
        assert seen["key"] == key and seen["data"]["api_key"] == {"$secret": api_key}
        assert seen["data_omitted"] is False
        hidden = event_data(await masked.next())
        assert hidden["data"]["api_key"] == {"$secret": mask(api_key)}
        assert api_key not in json.dumps(hidden)
        for _ in range(50):  # the resume point follows the burst
            if clear.applied is not None and clear.applied >= seen["seq"]:
                break
            await clear.drain(0.1)
        assert clear.applied is not None and clear.applied >= seen["seq"]
        # Resuming replays from the change log with documents too.
        async with EventStream(service, last_event_id=str(seen["seq"] - 1)) as again:
            replayed = event_data(await again.next())
            assert replayed["seq"] == seen["seq"] and replayed["data"] == seen["data"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_large_document_is_left_out_of_events(database_url: str, spawn: Spawn) -> None:
    env = clean_env(CONFMAN_ENCRYPTION_KEY=generate_key(), CONFMAN_STREAM_MAX_EVENT_DATA="200")
    server = spawn(database_url, env=env)
    async with server.aclient("service") as service, EventStream(service) as stream:
        small = provider(server, "sk-small")
        big_key = unique("big")
        made = server.client("editor").put(
            f"/api/v1/namespaces/model_provider/documents/{big_key}",
            json={"type": "openai", "api_key": "sk-big", "models": [f"m{i}" for i in range(50)]},
        )
        assert made.status_code == 201, made.text
        first, second = event_data(await stream.next()), event_data(await stream.next())
        assert first["key"] == small and first["data"] is not None
        assert second["key"] == big_key and second["data"] is None and second["data_omitted"]


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """A layer's data as a client sends it back: each ``{"$secret": v}`` as ``v``."""
    return {
        k: v["$secret"] if isinstance(v, dict) and set(v) == {"$secret"} else v
        for k, v in data.items()
    }
