"""What a token limited in role or namespaces may learn from answers meant for others:
404s for namespaces, cross-manager validation messages and the cluster view."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .servers import Server, assert_problem

HIDDEN = ("api_token", "virtual_key_secret")


def _namespace_answers(client: httpx.Client, namespace: str) -> list[httpx.Response]:
    """Every route that looks a namespace up by name."""
    base = f"/api/v1/namespaces/{namespace}"
    return [
        client.get(f"{base}/schema"),
        client.get(f"{base}/documents"),
        client.get(f"{base}/documents/default"),
        client.get(f"{base}/documents/default/history"),
        client.patch(f"{base}/documents/default", json={}),
        client.get("/api/v1/events", params={"namespace": namespace}),
    ]


def _shape(body: dict[str, Any]) -> list[str]:
    return sorted(body)


@pytest.mark.parametrize("token", ["admin", "editor", "viewer"])
def test_a_hidden_namespace_answers_as_an_unknown_one(sqlite_server: Server, token: str) -> None:
    client = sqlite_server.client(token)
    visible = [n["namespace"] for n in client.get("/api/v1/namespaces").json()]
    assert visible and not set(HIDDEN) & set(visible)
    unknown = [assert_problem(a, 404) for a in _namespace_answers(client, "no_such_namespace")]
    for hidden in HIDDEN:
        found = [assert_problem(a, 404) for a in _namespace_answers(client, hidden)]
        for body, like in zip(found, unknown, strict=True):
            assert _shape(body) == _shape(like)
            # The same sentence, but for the name asked about.
            assert body["detail"] == like["detail"].replace("no_such_namespace", hidden)
    for body in unknown:
        # Only what the token may see is listed, and no hidden name appears.
        assert body["detail"].endswith(f"known: {', '.join(visible)}"), body["detail"]
        assert not any(name in body["detail"] for name in HIDDEN), body["detail"]


def test_a_limited_token_learns_nothing_of_namespaces_beyond_its_grant(
    sqlite_server: Server,
) -> None:
    client = sqlite_server.client("cache-editor")
    for namespace in ("no_such_namespace", "router", *HIDDEN):
        for answer in _namespace_answers(client, namespace):
            body = assert_problem(answer, 403)
            assert body["detail"] == f"token 'cache-editor' is not granted namespace {namespace!r}"
