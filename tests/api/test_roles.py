"""Who may call what: every route of the OpenAPI document, for every kind of token.

The table below must name exactly the routes ``create_app().openapi()`` has, so a route
added without deciding its role fails here. Each cell is a real request to a real
server: an allowed call must not be refused (and answers its usual status), a refused
one is ``403`` (``401`` without a token). Writes are dry runs or aim at a missing version,
so the table leaves no trace; the audit test below writes for real.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from confman.api import create_app

from .servers import Server, assert_problem, unique

# The service role reads what a viewer reads (secrets in clear) and writes nothing.
RANK = {"viewer": 0, "editor": 1, "admin": 2, "service": 0}
# token name -> (role, namespaces it is limited to)
PRINCIPALS: dict[str, tuple[str, frozenset[str] | None]] = {
    "viewer": ("viewer", None),
    "editor": ("editor", None),
    "admin": ("admin", None),
    "cache-editor": ("editor", frozenset({"cache"})),
    "service": ("service", None),
}
DOC = "/api/v1/namespaces/{namespace}/documents/{key}"


@dataclass(frozen=True)
class Rule:
    role: str | None  # None: public, no token needed
    ok: int  # the status an allowed call answers here
    scoped: bool = False  # the route names a namespace (a limited token is checked)


RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(None, 200),
    ("GET", "/readyz"): Rule(None, 200),
    ("GET", "/metrics"): Rule(None, 200),
    ("GET", "/api/v1/whoami"): Rule("viewer", 200),
    ("GET", "/api/v1/namespaces"): Rule("viewer", 200),
    ("GET", "/api/v1/namespaces/{namespace}/schema"): Rule("viewer", 200, scoped=True),
    ("GET", "/api/v1/namespaces/{namespace}/documents"): Rule("viewer", 200, scoped=True),
    ("GET", DOC): Rule("viewer", 200, scoped=True),
    ("GET", DOC + "/history"): Rule("viewer", 200, scoped=True),
    ("GET", "/api/v1/snapshot"): Rule("viewer", 200, scoped=True),
    ("GET", "/api/v1/layers"): Rule("viewer", 200, scoped=True),
    ("GET", "/api/v1/layers/{namespace}/{key}/versions/{version}"): Rule(
        "viewer", 200, scoped=True
    ),
    ("PUT", "/api/v1/layers/{namespace}/{key}"): Rule("editor", 412, scoped=True),  # stale
    ("POST", "/api/v1/layers"): Rule("editor", 412, scoped=True),  # stale: nothing written
    ("PUT", DOC): Rule("editor", 200, scoped=True),
    ("PATCH", DOC): Rule("editor", 200, scoped=True),
    ("DELETE", DOC): Rule("editor", 200, scoped=True),
    ("POST", DOC + "/rollback"): Rule("admin", 404, scoped=True),  # version 999999: none
    ("POST", DOC + "/reset"): Rule("editor", 422, scoped=True),  # the base has no overlay
    ("POST", "/api/v1/change-sets"): Rule("editor", 200, scoped=True),  # a dry run
    ("GET", "/api/v1/change-sets/{change_set}"): Rule("viewer", 404),  # "x": none
    ("POST", "/api/v1/change-sets/{change_set}/rollback"): Rule("editor", 404),
    ("POST", "/api/v1/promote"): Rule("editor", 422),  # base to base: refused
    ("GET", "/api/v1/environments"): Rule("viewer", 200),
    ("POST", "/api/v1/environments"): Rule("admin", 201),
    ("DELETE", "/api/v1/environments/{name}"): Rule("admin", 404),  # "x": none
    ("GET", "/api/v1/compare"): Rule("viewer", 200),
    ("GET", "/api/v1/events"): Rule("viewer", 200, scoped=True),
    ("GET", "/api/v1/cluster"): Rule("viewer", 200),
    ("GET", "/api/v1/tokens"): Rule("admin", 200),
    ("POST", "/api/v1/tokens"): Rule("admin", 201),
    ("DELETE", "/api/v1/tokens/{name}"): Rule("admin", 204),
    ("POST", "/api/v1/keys/rotate"): Rule("admin", 200),
}


def openapi_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_the_table_covers_every_route(sqlite_server: Server) -> None:
    app_routes = openapi_routes(create_app(lambda: None).openapi())  # type: ignore[arg-type, return-value]
    assert app_routes == set(RULES)
    served = sqlite_server.client(None).get("/openapi.json")
    assert served.status_code == 200
    assert openapi_routes(served.json()) == app_routes


@pytest.fixture(scope="module")
def stored(sqlite_server: Server) -> None:
    """cache and router have a stored version (a dry-run DELETE needs one)."""
    admin = sqlite_server.client("admin")
    for namespace in ("cache", "router"):
        answer = admin.patch(DOC.format(namespace=namespace, key="default"), json={})
        assert answer.status_code == 200, answer.text


def call(
    server: Server, token: str | None, method: str, path: str, namespace: str
) -> httpx.Response:
    """The route's request as ``token``, aimed at ``namespace`` where it names one."""
    client = server.client(token)
    admin = server.client("admin")
    url = path.format(namespace=namespace, key="default", name="x", change_set="x", version=1)
    options: dict[str, Any] = {}
    if path.startswith(DOC) and method in {"PUT", "PATCH", "DELETE"}:
        version = admin.get(DOC.format(namespace=namespace, key="default")).json()["version"]
        options = {"params": {"dry_run": True}, "headers": {"If-Match": f'"{version}"'}}
        if method != "DELETE":
            options["json"] = {}
    elif (method, path) == ("POST", "/api/v1/change-sets"):
        member = {"op": "update", "namespace": namespace, "value": {}}
        options = {"params": {"dry_run": True}, "json": {"members": [member]}}
    elif path == "/api/v1/promote":
        options = {"params": {"from": "base", "to": "base", "dry_run": True}}
    elif path.endswith("/rollback") and path.startswith(DOC):
        options = {"json": {"to_version": 999_999}}
    elif path.endswith("/reset"):
        options = {"json": {"fields": None}}
    elif (method, path) == ("POST", "/api/v1/environments"):
        options = {"json": {"name": unique("e")}}
    elif path in ("/api/v1/snapshot", "/api/v1/layers") and method == "GET":
        options = {"params": {"namespace": namespace}}
    elif (method, path) == ("PUT", "/api/v1/layers/{namespace}/{key}"):
        options = {"json": {"data": {}}, "headers": {"If-Match": '"999999"'}}
    elif (method, path) == ("POST", "/api/v1/layers"):
        member = {"namespace": namespace, "key": "default", "data": {}, "expected_version": 999999}
        options = {"json": {"writes": [member]}}
    elif path == "/api/v1/compare":
        options = {"params": {"left": "base", "right": "base"}}
    elif (method, path) == ("POST", "/api/v1/tokens"):
        options = {"json": {"name": unique("t"), "role": "viewer"}}
    elif (method, path) == ("DELETE", "/api/v1/tokens/{name}"):
        victim = admin.post("/api/v1/tokens", json={"name": unique("victim"), "role": "viewer"})
        assert victim.status_code == 201, victim.text
        url = f"/api/v1/tokens/{victim.json()['name']}"
    elif path == "/api/v1/events":
        with client.stream(
            "GET", url, params={"namespace": namespace}, timeout=httpx.Timeout(10)
        ) as answer:
            if answer.status_code != 200:
                answer.read()  # a problem document
            # else the status is all we need; the stream never ends
        return answer
    return client.request(method, url, **options)


ROUTE_IDS = [f"{m} {p}" for m, p in RULES]


@pytest.mark.usefixtures("stored")
@pytest.mark.parametrize(("method", "path"), list(RULES), ids=ROUTE_IDS)
def test_each_route_for_each_token(sqlite_server: Server, method: str, path: str) -> None:
    rule = RULES[(method, path)]
    namespaces = ["cache", "router"] if rule.scoped else ["cache"]
    failures = []
    for token in [None, *PRINCIPALS]:
        for namespace in namespaces:
            answer = call(sqlite_server, token, method, path, namespace)
            if rule.role is None:
                expected = rule.ok
            elif token is None:
                expected = 401
            else:
                role, grants = PRINCIPALS[token]
                in_grants = not rule.scoped or grants is None or namespace in grants
                expected = rule.ok if RANK[role] >= RANK[rule.role] and in_grants else 403
            if answer.status_code != expected:
                failures.append(f"{token} on {namespace}: {answer.status_code}, not {expected}")
            elif expected in (401, 403):
                assert_problem(answer, expected)
                if expected == 401:
                    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert not failures, failures


def test_unlisted_pages_need_no_token(sqlite_server: Server) -> None:
    client = sqlite_server.client(None)
    for path in ("/openapi.json", "/docs", "/", "/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_a_limited_token_sees_only_its_namespaces(sqlite_server: Server) -> None:
    scoped = sqlite_server.client("cache-editor")
    listed = scoped.get("/api/v1/namespaces").json()
    assert [n["namespace"] for n in listed] == ["cache"]
    assert listed[0]["writable"] is True
    me = scoped.get("/api/v1/whoami").json()
    assert me == {
        "name": "cache-editor",
        "role": "editor",
        "namespaces": ["cache"],
        "environments": None,
    }
    viewer = sqlite_server.client("viewer")
    assert viewer.get("/api/v1/whoami").json()["namespaces"] is None
    namespaces = {n["namespace"]: n for n in viewer.get("/api/v1/namespaces").json()}
    assert "api_token" not in namespaces and {"cache", "router"} <= set(namespaces)
    assert not any(n["writable"] for n in namespaces.values())


Write = Callable[[httpx.Client], httpx.Response]


def test_every_write_is_audited_with_the_tokens_name(sqlite_server: Server) -> None:
    key = unique("audit")
    path = DOC.format(namespace="model_provider", key=key)
    body = {"type": "ollama", "base_url": "http://127.0.0.1:11434"}
    editor, admin = sqlite_server.client("editor"), sqlite_server.client("admin")
    scoped = sqlite_server.client("cache-editor")
    steps: list[tuple[str, Write]] = [
        ("editor", lambda c: c.put(path, json=body, params={"reason": "onboard"})),
        ("admin", lambda c: c.patch(path, json={"rpm_limit": 9})),
        ("editor", lambda c: c.put(path, json=body, headers={"If-Match": "2"})),
        ("admin", lambda c: c.post(f"{path}/rollback", json={"to_version": 2})),
        ("editor", lambda c: c.delete(path, headers={"If-Match": "4"}, params={"reason": "gone"})),
    ]
    clients = {"editor": editor, "admin": admin}
    for token, step in steps:
        answer = step(clients[token])
        assert answer.status_code in (200, 201), answer.text
    logged = admin.get(f"{path}/history").json()
    assert [(h["version"], h["actor"]) for h in logged] == [
        (5, "editor"),
        (4, "admin"),
        (3, "editor"),
        (2, "admin"),
        (1, "editor"),
    ]
    assert logged[0]["reason"] == "gone" and logged[-1]["reason"] == "onboard"
    assert logged[1]["action"] == "rollback"

    answer = scoped.patch(DOC.format(namespace="cache", key="default"), json={"max_entries": 5})
    assert answer.status_code == 200, answer.text
    newest = admin.get(DOC.format(namespace="cache", key="default") + "/history").json()[0]
    assert (newest["actor"], newest["version"]) == ("cache-editor", answer.json()["version"])
