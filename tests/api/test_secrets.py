"""Secrets never leave the server: not in any body, header, event, metric or log line.

A model provider with an API key and a secret header is written through the API, read
back every way the API offers, changed, rolled back and streamed; the cache's Redis URL
(a secret too) comes from an environment override of the server. Every answer is
searched for every plaintext; values must show the mask ``**********#<fingerprint>``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from confman.secrets import mask

from .conftest import standard_server
from .servers import EventStream, Server, assert_problem, event_data, unique

API_KEY = f"sk-live-{uuid.uuid4().hex}"
NEW_API_KEY = f"sk-live-{uuid.uuid4().hex}"
HEADER_SECRET = f"hdr-{uuid.uuid4().hex}"
REFUSED_KEY = f"sk-refused-{uuid.uuid4().hex}"
ENV_PASSWORD = f"envpw{uuid.uuid4().hex}"
ENV_REDIS_URL = f"redis://:{ENV_PASSWORD}@127.0.0.1:6379/0"
SECRETS = [API_KEY, NEW_API_KEY, HEADER_SECRET, REFUSED_KEY, ENV_PASSWORD]


@pytest.fixture(scope="module")
def secret_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with standard_server(
        "sqlite", request, tmp_path_factory, CONFMAN_CACHE__REDIS_URL=ENV_REDIS_URL
    ) as server:
        yield server


def assert_no_secret(answer: httpx.Response, what: str) -> None:
    text = answer.text
    headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.multi_items())
    for secret in SECRETS:
        assert secret not in text, f"{what}: a secret is in the body"
        assert secret not in headers, f"{what}: a secret is in the headers"


def doc(key: str) -> str:
    return f"/api/v1/namespaces/model_provider/documents/{key}"


async def test_secrets_are_masked_everywhere(secret_server: Server) -> None:
    key = unique("openai")
    path = doc(key)
    body = {"type": "openai", "api_key": API_KEY, "extra_headers": {"X-Token": HEADER_SECRET}}
    answers: dict[str, httpx.Response] = {}
    async with (
        secret_server.aclient("editor") as editor,
        secret_server.aclient("admin") as admin,
        secret_server.aclient(None) as anonymous,
    ):
        answers["create"] = created = await editor.put(path, json=body)
        assert created.status_code == 201, created.text
        value = created.json()["value"]
        assert value["api_key"] == mask(API_KEY)
        assert value["api_key"].startswith("**********#") and len(value["api_key"]) == 19
        assert value["extra_headers"] == {"X-Token": mask(HEADER_SECRET)}
        sources = {s["path"]: s for s in created.json()["sources"]}
        assert sources["api_key"]["value"] == mask(API_KEY)

        answers["get"] = got = await editor.get(path)
        assert got.json()["value"]["api_key"] == mask(API_KEY)
        answers["list"] = await editor.get("/api/v1/namespaces/model_provider/documents")
        answers["dry run"] = dry = await editor.patch(
            path, json={"api_key": NEW_API_KEY}, params={"dry_run": True}
        )
        assert dry.status_code == 200, dry.text
        assert any(
            (d["path"], d["before"], d["after"]) == ("api_key", mask(API_KEY), mask(NEW_API_KEY))
            for d in dry.json()["diff"]
        ), dry.json()
        answers["patch"] = patched = await editor.patch(path, json={"api_key": NEW_API_KEY})
        assert patched.status_code == 200, patched.text
        assert patched.json()["value"]["api_key"] == mask(NEW_API_KEY)
        answers["rollback"] = rolled = await admin.post(path + "/rollback", json={"to_version": 1})
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["value"]["api_key"] == mask(API_KEY)  # the old key is back
        answers["history"] = logged = await editor.get(path + "/history")
        assert logged.status_code == 200 and len(logged.json()) == 3
        masks = {d["after"] for h in logged.json() for d in h["diff"] if d["path"] == "api_key"}
        assert masks <= {mask(API_KEY), mask(NEW_API_KEY)}, masks

        # The environment override of a secret: masked, and said where it came from.
        answers["cache"] = cache = await editor.get("/api/v1/namespaces/cache/documents/default")
        assert cache.json()["value"]["redis_url"] == mask(ENV_REDIS_URL)
        (origin,) = [s for s in cache.json()["sources"] if s["path"] == "redis_url"]
        assert origin["layer"] == "environment" and origin["value"] == mask(ENV_REDIS_URL)
        assert "CONFMAN_CACHE__REDIS_URL" in origin["detail"]

        # Refused input is not echoed, secrets included.
        answers["refused"] = refused = await editor.put(
            doc(unique("bad")),
            json={"type": "openai", "api_key": REFUSED_KEY, "timeout_seconds": -1},
        )
        assert_problem(refused, 422)
        answers["refused url"] = refused_url = await editor.patch(
            "/api/v1/namespaces/cache/documents/default",
            json={"redis_url": f"http://user:{REFUSED_KEY}@example.com"},
        )
        assert [e["path"] for e in assert_problem(refused_url, 422)["errors"]] == ["redis_url"]

        async with EventStream(editor, last_event_id="0") as stream:
            events = await stream.drain(1.0)
        assert [event_data(e)["version"] for e in events if key in e.data] == [1, 2, 3]
        for event in events:
            assert all(secret not in event.data for secret in SECRETS)

        for route in ("/metrics", "/openapi.json", "/healthz", "/readyz"):
            answers[route] = await anonymous.get(route)
        for route in ("/api/v1/namespaces", "/api/v1/cluster", "/api/v1/whoami"):
            answers[route] = await admin.get(route)
        answers["schema"] = await admin.get("/api/v1/namespaces/model_provider/schema")

    for what, answer in answers.items():
        assert_no_secret(answer, what)
    log = secret_server.output()
    assert all(secret not in log for secret in SECRETS), "a secret is in the server's log"


@pytest.mark.parametrize("dry_run", [False, True])
def test_pasting_a_masked_value_back_is_refused(secret_server: Server, dry_run: bool) -> None:
    editor = secret_server.client("editor")
    key = unique("paste")
    created = editor.put(doc(key), json={"type": "anthropic", "api_key": API_KEY})
    assert created.status_code == 201, created.text
    shown = created.json()["value"]
    params = {"dry_run": True} if dry_run else {}
    # The whole document as read, mask included, sent back: the key would be lost.
    replaced = editor.put(doc(key), json=shown, headers={"If-Match": '"1"'}, params=params)
    problem = assert_problem(replaced, 422)
    assert "api_key" in [e["path"] for e in problem["errors"]], problem
    patched = editor.patch(doc(key), json={"api_key": shown["api_key"]}, params=params)
    assert "api_key" in [e["path"] for e in assert_problem(patched, 422)["errors"]]
    assert editor.get(doc(key)).json()["version"] == 1
