"""Environments and who may reach them: tokens limited to environments on every route,
the event stream filtered by environment, and ``confman serve --environment``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from confman import ConfigHub
from confman.api import ApiTokenManager

from ..support import run
from .conftest import Spawn
from .servers import EventStream, Server, assert_problem, confman, event_data, unique

DOC = "/api/v1/namespaces/{namespace}/documents/{key}"


@pytest.fixture(scope="module")
def stages(sqlite_server: Server) -> tuple[str, str]:
    """(staging, production): two environments of this module's server."""
    admin = sqlite_server.client("admin")
    names = unique("staging"), unique("production")
    for name in names:
        answer = admin.post("/api/v1/environments", json={"name": name})
        assert answer.status_code == 201, answer.text
    return names


def limited(server: Server, role: str, *environments: str) -> httpx.Client:
    body = {"name": unique("lim"), "role": role, "environments": list(environments)}
    made = server.client("admin").post("/api/v1/tokens", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["environments"] == sorted(environments)
    return server.bearer(made.json()["token"])


def environment_routes(document: dict[str, Any]) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document that is about an environment."""
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", [])}
            if names & {"environment", "left"} or path.startswith("/api/v1/environments/"):
                found.append((method.upper(), path))
    return found


def request(client: httpx.Client, method: str, path: str, environment: str) -> httpx.Response:
    url = path.format(namespace="cache", key="default", name=environment, version=1)
    options: dict[str, Any] = {"params": {"environment": environment}}
    if path == "/api/v1/compare":
        options["params"] = {"left": environment, "right": environment}
    elif path.startswith("/api/v1/environments/"):
        options["params"] = {}
    elif path.endswith("/rollback"):
        options["json"] = {"to_version": 1}
    elif path.endswith("/reset"):
        options["json"] = {"fields": None}
    elif path.startswith("/api/v1/layers/") and method == "PUT":
        options["json"] = {"data": {}}
        options["headers"] = {"If-Match": "0"}
    elif method in {"PUT", "PATCH"}:
        options["json"] = {}
    if method in {"PUT", "PATCH", "DELETE"} and path.startswith(DOC):
        options["params"]["dry_run"] = True
        options["headers"] = {"If-Match": "0"}
    if path == "/api/v1/events":
        with client.stream("GET", url, timeout=httpx.Timeout(10), **options) as answer:
            if answer.status_code != 200:
                answer.read()
        return answer
    return client.request(method, url, **options)


def test_a_staging_token_is_refused_production_on_every_route(
    sqlite_server: Server, stages: tuple[str, str]
) -> None:
    staging, production = stages
    document = sqlite_server.client(None).get("/openapi.json").json()
    routes = environment_routes(document)
    assert len(routes) >= 12, routes  # documents (all of them), events, cluster, compare, ...
    for role in ("viewer", "editor"):
        client = limited(sqlite_server, role, staging)
        refused = []
        for method, path in routes:
            answer = request(client, method, path, production)
            if answer.status_code != 403:
                refused.append(f"{role} {method} {path}: {answer.status_code} {answer.text[:200]}")
                continue
            problem = assert_problem(answer, 403)
            if "role" not in problem["detail"]:  # a role it lacks is refused first
                assert problem["environment"] == production, (method, path, problem)
                assert production in problem["detail"]
        assert not refused, refused

    editor = limited(sqlite_server, "editor", staging)
    for method, path in routes:
        answer = request(editor, method, path, staging)
        if "rollback" in path or path.startswith("/api/v1/environments/"):
            continue  # admin routes
        assert answer.status_code != 403, (method, path, answer.text)
    # A remote hub's change set names each member's environment in its body.
    member = {"namespace": "cache", "key": "default", "data": {}, "expected_version": 0}
    for environment in (production, None):
        body = {"writes": [{**member, "environment": environment}] * 2}
        assert_problem(editor.post("/api/v1/layers", json=body), 403)
    # The base is an environment of its own to a limited token.
    assert_problem(editor.get(DOC.format(namespace="cache", key="default")), 403)
    assert (
        limited(sqlite_server, "viewer", staging, "base")
        .get(DOC.format(namespace="cache", key="default"))
        .is_success
    )


def test_tokens_made_before_reach_every_environment(
    sqlite_server: Server, stages: tuple[str, str]
) -> None:
    staging, production = stages
    editor = sqlite_server.client("editor")  # made by `confman tokens create`, no limit
    for environment in (staging, production, "base"):
        answer = editor.get(
            DOC.format(namespace="cache", key="default"), params={"environment": environment}
        )
        assert answer.status_code == 200, answer.text
    me = editor.get("/api/v1/whoami").json()
    assert me["environments"] is None
    listed = sqlite_server.client("admin").get("/api/v1/tokens").json()
    assert {t["name"]: t for t in listed}["editor"]["environments"] is None


def test_limits_are_checked_when_a_token_is_made(
    sqlite_server: Server, stages: tuple[str, str]
) -> None:
    admin = sqlite_server.client("admin")
    unknown = admin.post(
        "/api/v1/tokens",
        json={"name": unique("t"), "role": "viewer", "environments": [stages[0], "nope"]},
    )
    assert assert_problem(unknown, 422)["errors"][0]["path"] == "environments.1"
    boss = admin.post(
        "/api/v1/tokens", json={"name": unique("t"), "role": "admin", "environments": [stages[0]]}
    )
    assert assert_problem(boss, 422)["errors"][0]["path"] == "environments"
    scoped = limited(sqlite_server, "viewer", stages[0])
    assert [e["name"] for e in scoped.get("/api/v1/environments").json()] == [stages[0]]
    assert scoped.get("/api/v1/whoami").json()["environments"] == [stages[0]]


async def test_a_stream_for_staging_has_the_base_and_staging_only(
    sqlite_server: Server, stages: tuple[str, str]
) -> None:
    staging, production = stages
    key = unique("p")
    path = DOC.format(namespace="model_provider", key=key)
    body = {"type": "ollama", "base_url": "http://127.0.0.1:11434"}
    async with (
        sqlite_server.aclient("viewer") as viewer,
        sqlite_server.aclient("editor") as editor,
        EventStream(viewer, environment=staging, namespaces=["model_provider"]) as ours,
        EventStream(viewer, namespaces=["model_provider"]) as base,
    ):
        seqs = {}
        for name, environment, change in [
            ("base", None, body),
            ("staging", staging, {"rpm_limit": 1}),
            ("production", production, {"rpm_limit": 2}),
            ("base2", None, {"enabled": False}),
        ]:
            params = {} if environment is None else {"environment": environment}
            method = "PUT" if name == "base" else "PATCH"
            answer = await editor.request(method, path, json=change, params=params)
            assert answer.status_code in (200, 201), answer.text
            seqs[name] = answer.json()["change"]["seq"]
        got = [event_data(e) for e in await ours.take(3, timeout=15)]
        assert [(d["seq"], d["environment"]) for d in got] == [
            (seqs["base"], None),
            (seqs["staging"], staging),
            (seqs["base2"], None),
        ]
        assert await ours.drain(2.6) == []  # production's change never comes
        only_base = [event_data(e) for e in await base.take(2)]
        assert [(d["seq"], d["environment"]) for d in only_base] == [
            (seqs["base"], None),
            (seqs["base2"], None),
        ]
        assert await base.drain(2.6) == []
        resumed_from = str(seqs["base"])
        async with EventStream(
            viewer, environment=staging, namespaces=["model_provider"], last_event_id=resumed_from
        ) as again:
            replayed = [event_data(e) for e in await again.take(2)]
            assert [d["seq"] for d in replayed] == [seqs["staging"], seqs["base2"]]
    unknown = sqlite_server.client("viewer").get("/api/v1/events", params={"environment": "nope"})
    assert assert_problem(unknown, 404)["environment"] == "nope"


def test_serve_runs_in_the_environment_it_is_given(
    sqlite_server: Server, stages: tuple[str, str], spawn: Spawn, tmp_path: Path
) -> None:
    staging, _ = stages
    url, env = sqlite_server.database_url, sqlite_server.env

    async def staging_token() -> str:
        # Tokens do not inherit: a server in staging authenticates staging's tokens.
        async with ConfigHub.connect(
            url, env=env, environment=staging, managers=[ApiTokenManager]
        ) as hub:
            issued = await hub.manager(ApiTokenManager).create_token(unique("s"), "editor")
            return issued.plaintext

    token = run(staging_token())
    server = spawn(url, "--environment", staging, env=env, tokens={"s": token})
    client = server.client("s")
    answer = client.get(DOC.format(namespace="cache", key="default"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["environment"] == staging
    assert client.get("/api/v1/cluster").json()["instances"][0]["environment"] == staging
    base_token = sqlite_server.tokens["admin"]
    assert server.bearer(base_token).get("/api/v1/whoami").status_code == 401

    failed = confman(
        "serve", "--database-url", url, "--port", "0", "--environment", "nowhere",
        env=env, cwd=tmp_path, code=None,
    )  # fmt: skip
    assert failed.returncode != 0 and "nowhere" in failed.stderr + failed.stdout
