"""The service role: what a service reading its configuration gets from ``confman serve``.

It reads effective values with secrets in clear, where viewer and editor tokens keep
seeing them masked, only in the namespaces and environments it is granted, and it can
write nothing: every write is a 403 naming its role.
"""

from __future__ import annotations

import uuid

import httpx

from confman.secrets import mask

from .servers import Server, assert_problem, unique, wait_for

DOC = "/api/v1/namespaces/{namespace}/documents/{key}"


def provider(server: Server, api_key: str) -> str:
    """A model provider holding ``api_key`` (a secret), written by the editor."""
    key = unique("svc")
    body = {"type": "openai", "api_key": api_key, "extra_headers": {"X-Token": api_key + "-h"}}
    made = server.client("editor").put(DOC.format(namespace="model_provider", key=key), json=body)
    assert made.status_code == 201, made.text
    return key


def test_a_service_token_reads_secrets_in_clear_and_the_others_masked(server: Server) -> None:
    api_key = f"sk-svc-{uuid.uuid4().hex}"
    path = DOC.format(namespace="model_provider", key=provider(server, api_key))
    read = server.client("service").get(path)
    assert read.status_code == 200, read.text
    value = read.json()["value"]
    assert value["api_key"] == api_key
    assert value["extra_headers"] == {"X-Token": api_key + "-h"}
    # Provenance stays masked: it says where a field came from, `value` what it is.
    sources = {s["path"]: s for s in read.json()["sources"]}
    assert sources["api_key"]["value"] == mask(api_key)
    for token in ("viewer", "editor", "admin"):
        answer = server.client(token).get(path)
        assert answer.status_code == 200, answer.text
        assert api_key not in answer.text, token
        assert answer.json()["value"]["api_key"] == mask(api_key)


def test_a_service_token_writes_nothing(server: Server) -> None:
    service = server.client("service")
    me = service.get("/api/v1/whoami").json()
    assert (me["role"], me["namespaces"], me["environments"]) == ("service", None, None)
    listed = service.get("/api/v1/namespaces").json()
    assert listed and not any(n["writable"] for n in listed)
    path = DOC.format(namespace="cache", key="default")
    writes: list[tuple[str, httpx.Response]] = [
        ("patch", service.patch(path, json={"max_entries": 3})),
        ("put", service.put(path, json={}, headers={"If-Match": "0"})),
        ("delete", service.delete(path, headers={"If-Match": "1"})),
        ("rollback", service.post(f"{path}/rollback", json={"to_version": 1})),
        ("reset", service.post(f"{path}/reset", json={"fields": None})),
        (
            "change set",
            service.post(
                "/api/v1/change-sets",
                json={"members": [{"op": "update", "namespace": "cache", "value": {}}]},
            ),
        ),
        ("promote", service.post("/api/v1/promote", params={"from": "a", "to": "b"})),
        ("token", service.post("/api/v1/tokens", json={"name": unique("t"), "role": "admin"})),
        ("revoke", service.delete("/api/v1/tokens/viewer")),
        ("tokens", service.get("/api/v1/tokens")),
        ("environment", service.post("/api/v1/environments", json={"name": unique("e")})),
        ("keys", service.post("/api/v1/keys/rotate")),
    ]
    for what, answer in writes:
        problem = assert_problem(answer, 403)
        text = problem["detail"] + "".join(e["message"] for e in problem.get("errors", []))
        assert "service" in text, (what, problem)
    assert server.client("viewer").get("/api/v1/whoami").status_code == 200  # not revoked


def test_a_service_token_is_held_to_its_namespaces_and_environments(server: Server) -> None:
    admin = server.client("admin")
    stage = unique("svcstage")
    assert admin.post("/api/v1/environments", json={"name": stage}).status_code == 201
    body = {
        "name": unique("svc"),
        "role": "service",
        "namespaces": ["model_provider"],
        "environments": [stage],
    }
    made = admin.post("/api/v1/tokens", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["role"] == "service"
    service = server.bearer(made.json()["token"])
    api_key = f"sk-svc-{uuid.uuid4().hex}"
    path = DOC.format(namespace="model_provider", key=provider(server, api_key))
    inherited = service.get(path, params={"environment": stage})
    assert inherited.status_code == 200, inherited.text
    assert inherited.json()["value"]["api_key"] == api_key
    assert assert_problem(service.get(path), 403)["environment"] == "base"
    assert_problem(service.get(DOC.format(namespace="cache", key="default")), 403)


def test_the_cli_makes_and_lists_service_tokens(server: Server) -> None:
    name = unique("svc")
    made = server.cli("tokens", "create", "--name", name, "--role", "service")
    token = made.stdout.strip()
    assert "service token" in made.stderr and token not in made.stderr
    assert name in server.cli("tokens", "list").stdout
    service = server.bearer(token)
    # Made by another process: this server applies it at its next change-log poll.
    wait_for(lambda: service.get("/api/v1/whoami").status_code == 200, timeout=10)
    assert service.get("/api/v1/whoami").json()["role"] == "service"
