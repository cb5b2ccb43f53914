"""Documents over real HTTP: every status code of docs/api.md, ETag/If-Match, dry runs.

Runs once over SQLite and once over PostgreSQL (the module's ``server``). Tests share
the server, so each writes collection items of its own (``unique`` keys) or reads the
singleton's version before writing it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .servers import Server, assert_problem, etag_version, unique

DOCS = "/api/v1/namespaces/{ns}/documents"


def doc(ns: str, key: str = "default", suffix: str = "") -> str:
    return f"{DOCS.format(ns=ns)}/{key}{suffix}"


def provider(**extra: Any) -> dict[str, Any]:
    return {"type": "ollama", "base_url": "http://127.0.0.1:11434", **extra}


def create_provider(client: httpx.Client, **extra: Any) -> str:
    key = unique("p")
    answer = client.put(doc("model_provider", key), json=provider(**extra))
    assert answer.status_code == 201, answer.text
    return key


def history(client: httpx.Client, ns: str, key: str = "default") -> list[dict[str, Any]]:
    answer = client.get(doc(ns, key, "/history"), params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


def has_diff(diff: list[dict[str, Any]], path: str, before: Any, after: Any) -> bool:
    return any((d["path"], d["before"], d["after"]) == (path, before, after) for d in diff)


def version_of(client: httpx.Client, ns: str, key: str = "default") -> int:
    answer = client.get(doc(ns, key))
    assert answer.status_code == 200, answer.text
    assert etag_version(answer) == answer.json()["version"]
    return answer.json()["version"]


# --------------------------------------------------------------------------- 200 / 201


def test_read_answers_the_document_with_its_version_as_etag(server: Server) -> None:
    client = server.client("viewer")
    answer = client.get(doc("cache"))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert answer.headers["ETag"] == f'"{body["version"]}"'
    assert (body["namespace"], body["key"]) == ("cache", "default")
    assert body["value"]["default_ttl_seconds"] > 0
    assert {s["path"] for s in body["sources"]} >= {"default_ttl_seconds", "backend"}
    assert body["problems"] == []


def test_put_without_if_match_creates_once(server: Server) -> None:
    client = server.client("editor")
    key = unique("p")
    created = client.put(doc("model_provider", key), json=provider(), params={"reason": "new"})
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == '"1"'
    body = created.json()
    assert body["version"] == 1 and body["change"]["version"] == 1
    assert body["change"]["action"] == "create"
    assert body["value"]["base_url"] == "http://127.0.0.1:11434/"

    read = client.get(doc("model_provider", key))
    assert read.status_code == 200 and read.headers["ETag"] == '"1"'

    again = client.put(doc("model_provider", key), json=provider(enabled=False))
    problem = assert_problem(again, 412)
    assert problem["current_version"] == 1
    assert again.headers["ETag"] == '"1"'
    assert client.get(doc("model_provider", key)).json()["value"]["enabled"] is True

    replaced = client.put(
        doc("model_provider", key), json=provider(enabled=False), headers={"If-Match": '"1"'}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.headers["ETag"] == '"2"'
    assert replaced.json()["value"]["enabled"] is False


def test_writes_answer_the_new_etag_and_change(server: Server) -> None:
    client = server.client("editor")
    before = version_of(client, "cache")
    patched = client.patch(
        doc("cache"), json={"max_entries": 4321}, headers={"If-Match": f'"{before}"'}
    )
    assert patched.status_code == 200, patched.text
    assert etag_version(patched) == before + 1
    change = patched.json()["change"]
    assert change["version"] == before + 1 and change["action"] in {"update", "create"}
    assert "max_entries" in change["changed"]
    assert patched.json()["value"]["max_entries"] == 4321
    # The bare number works too (docs/api.md), and so does no If-Match on PATCH.
    bare = client.patch(
        doc("cache"), json={"max_entries": 4322}, headers={"If-Match": str(before + 1)}
    )
    assert bare.status_code == 200, bare.text
    assert etag_version(bare) == before + 2
    free = client.patch(doc("cache"), json={"max_entries": 4323})
    assert free.status_code == 200, free.text
    assert etag_version(free) == before + 3
    assert version_of(client, "cache") == before + 3
    assert free.json()["change"]["seq"] > bare.json()["change"]["seq"]


def test_delete_and_rollback(server: Server) -> None:
    editor, admin = server.client("editor"), server.client("admin")
    key = create_provider(editor, models=["llama3"])
    assert editor.patch(doc("model_provider", key), json={"models": ["qwen"]}).status_code == 200

    rolled = admin.post(
        doc("model_provider", key, "/rollback"), json={"to_version": 1}, headers={"If-Match": '"2"'}
    )
    assert rolled.status_code == 200, rolled.text
    assert rolled.headers["ETag"] == '"3"'
    assert rolled.json()["value"]["models"] == ["llama3"]
    assert rolled.json()["change"]["action"] == "rollback"

    deleted = editor.delete(doc("model_provider", key), headers={"If-Match": '"3"'})
    assert deleted.status_code == 200, deleted.text
    assert deleted.headers["ETag"] == '"4"'
    assert deleted.json()["change"]["action"] == "delete"
    assert_problem(editor.get(doc("model_provider", key)), 404)
    assert [h["action"] for h in history(editor, "model_provider", key)] == [
        "delete",
        "rollback",
        "update",
        "create",
    ]
    # A deleted item can be created again with PUT and no If-Match.
    again = editor.put(doc("model_provider", key), json=provider())
    assert again.status_code == 201, again.text


# --------------------------------------------------------------------------- 401


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, "Bearer"),
        ("Bearer cmt_not-a-real-token", 'Bearer error="invalid_token"'),
        ("Bearer something-else", 'Bearer error="invalid_token"'),
        ("Basic dXNlcjpwYXNz", "Bearer"),
    ],
)
def test_401_without_a_valid_token(
    server: Server, authorization: str | None, challenge: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    client = server.client(None)
    for method, path in [
        ("GET", "/api/v1/namespaces"),
        ("GET", doc("cache")),
        ("PATCH", doc("cache")),
        ("GET", "/api/v1/whoami"),
        ("GET", "/api/v1/tokens"),
    ]:
        answer = client.request(
            method, path, headers=headers, json={} if method == "PATCH" else None
        )
        assert_problem(answer, 401)
        assert answer.headers["WWW-Authenticate"] == challenge


# --------------------------------------------------------------------------- 403


def test_403_wrong_role_or_namespace(server: Server) -> None:
    viewer, editor = server.client("viewer"), server.client("editor")
    cache_editor = server.client("cache-editor")
    key = create_provider(editor)
    assert_problem(viewer.patch(doc("cache"), json={"max_entries": 5}), 403)
    assert_problem(viewer.put(doc("model_provider", unique("p")), json=provider()), 403)
    assert_problem(viewer.delete(doc("model_provider", key), headers={"If-Match": "1"}), 403)
    assert_problem(cache_editor.patch(doc("router"), json={}), 403)
    assert_problem(cache_editor.get(doc("model_provider", key)), 403)
    assert_problem(
        editor.post(doc("model_provider", key, "/rollback"), json={"to_version": 1}), 403
    )
    for client in (viewer, editor, cache_editor):
        assert_problem(client.get("/api/v1/tokens"), 403)
        assert_problem(client.post("/api/v1/tokens", json={"name": "x", "role": "admin"}), 403)
        assert_problem(client.delete("/api/v1/tokens/admin"), 403)
        assert_problem(client.post("/api/v1/keys/rotate"), 403)
    # Nothing of that was written.
    assert version_of(editor, "model_provider", key) == 1
    # The namespace-restricted editor may write its own namespace.
    assert cache_editor.patch(doc("cache"), json={"max_entries": 777}).status_code == 200


# --------------------------------------------------------------------------- 404


def test_404_unknown_namespace_item_key_or_version(server: Server) -> None:
    admin = server.client("admin")
    key = create_provider(admin)
    missing = unique("p")
    for answer in [
        admin.get(DOCS.format(ns="nope")),
        admin.get(doc("nope")),
        admin.get("/api/v1/namespaces/nope/schema"),
        admin.patch(doc("nope"), json={}),
        admin.get(doc("model_provider", missing)),
        admin.patch(doc("model_provider", missing), json={"enabled": False}),
        admin.delete(doc("model_provider", missing), headers={"If-Match": '"1"'}),
        # a singleton's only key is "default"
        admin.get(doc("cache", "other")),
        admin.patch(doc("cache", "other"), json={}),
        admin.put(doc("cache", "other"), json={}),
        admin.delete(doc("cache", "other"), headers={"If-Match": '"1"'}),
        admin.get(doc("cache", "other", "/history")),
        admin.post(doc("cache", "other", "/rollback"), json={"to_version": 1}),
        # rollback to a version that never was
        admin.post(doc("model_provider", key, "/rollback"), json={"to_version": 99}),
        admin.post(doc("model_provider", missing, "/rollback"), json={"to_version": 1}),
        # tokens are served by their own routes only
        admin.get(DOCS.format(ns="api_token")),
        admin.get(doc("api_token", "admin")),
        admin.delete("/api/v1/tokens/" + unique("nobody")),
    ]:
        assert_problem(answer, 404)


# --------------------------------------------------------------------------- 412


def test_412_stale_if_match_on_every_write(server: Server) -> None:
    editor, admin = server.client("editor"), server.client("admin")
    key = create_provider(editor)
    assert editor.patch(doc("model_provider", key), json={"enabled": False}).status_code == 200
    stale = {"If-Match": '"1"'}
    path, body = doc("model_provider", key), provider()
    dry = {"dry_run": True}
    answers = {
        "PATCH": editor.patch(path, json={"enabled": True}, headers=stale),
        "PUT": editor.put(path, json=body, headers=stale),
        "DELETE": editor.delete(path, headers=stale),
        "rollback": admin.post(f"{path}/rollback", json={"to_version": 1}, headers=stale),
        "PATCH dry run": editor.patch(path, json={"enabled": True}, headers=stale, params=dry),
        "PUT dry run": editor.put(path, json=body, headers=stale, params=dry),
        "DELETE dry run": editor.delete(path, headers=stale, params=dry),
    }
    for answer in answers.values():
        problem = assert_problem(answer, 412)
        assert problem["current_version"] == 2, problem
    # Every 412 carries the current version as ETag (docs/api.md: writes answer ETag).
    without_etag = [what for what, a in answers.items() if a.headers.get("ETag") != '"2"']
    assert not without_etag, f"412 without ETag: {without_etag}"
    assert version_of(editor, "model_provider", key) == 2
    assert len(history(editor, "model_provider", key)) == 2
    # PUT without If-Match on an existing singleton: 412 too
    assert editor.patch(doc("cache"), json={"max_entries": 9}).status_code == 200
    current = version_of(editor, "cache")
    problem = assert_problem(editor.put(doc("cache"), json={}), 412)
    assert problem["current_version"] == current


def test_400_on_an_if_match_that_names_no_version(server: Server) -> None:
    editor = server.client("editor")
    # "²" is a digit to str.isdigit; W/ tags never match (If-Match compares strongly).
    for value in ['"abc"', "*", '"1", "2"', "1" * 30, '"²"', 'W/"1"']:
        header = value.encode("latin-1")  # byte 0xB2 arrives as "²"
        answer = editor.patch(doc("cache"), json={}, headers={"If-Match": header})
        assert_problem(answer, 400)


# --------------------------------------------------------------------------- 422 / 428


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"default_ttl_seconds": 0}, "default_ttl_seconds"),
        ({"default_ttl_seconds": 987654321}, "default_ttl_seconds"),
        ({"max_entries": "lots"}, "max_entries"),
        ({"ttl_by_model": {"gpt-4o": -5}}, "ttl_by_model.gpt-4o"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"backend": "redis"}, "redis_url"),  # a model rule across fields
    ],
)
def test_422_names_the_refused_field_and_never_echoes_the_value(
    server: Server, patch: dict[str, Any], path: str
) -> None:
    editor = server.client("editor")
    before = version_of(editor, "cache")
    for params in ({}, {"dry_run": True}):  # a dry run refuses exactly like a write
        answer = editor.patch(doc("cache"), json=patch, params=params)
        problem = assert_problem(answer, 422)
        assert path in [e["path"] for e in problem["errors"]], problem
        assert all(e["message"] for e in problem["errors"])
        if "987654321" in str(patch) or "lots" in str(patch):
            assert "987654321" not in answer.text and "lots" not in answer.text
    assert version_of(editor, "cache") == before


def test_422_on_a_body_that_is_not_a_json_object(server: Server) -> None:
    editor = server.client("editor")
    for content in (b"[1, 2]", b"not json", b'"text"'):
        answer = editor.patch(
            doc("cache"), content=content, headers={"content-type": "application/json"}
        )
        problem = assert_problem(answer, 422)
        assert problem["errors"]
    answer = server.client("admin").post(
        doc("cache", "default", "/rollback"), json={"to_version": 0}
    )
    problem = assert_problem(answer, 422)
    assert [e["path"] for e in problem["errors"]] == ["to_version"]


def test_428_delete_without_if_match(server: Server) -> None:
    editor = server.client("editor")
    key = create_provider(editor)
    assert_problem(editor.delete(doc("model_provider", key)), 428)
    assert_problem(editor.delete(doc("model_provider", key), params={"dry_run": True}), 428)
    assert version_of(editor, "model_provider", key) == 1


# --------------------------------------------------------------------------- dry runs


def test_dry_run_shows_the_diff_and_stores_nothing(server: Server) -> None:
    editor = server.client("editor")
    key = create_provider(editor, models=["a"])
    before_history = history(editor, "model_provider", key)
    path = doc("model_provider", key)

    patch = editor.patch(path, json={"models": ["a", "b"]}, params={"dry_run": "true"})
    assert patch.status_code == 200, patch.text
    assert patch.json()["dry_run"] is True
    assert patch.json()["value"]["models"] == ["a", "b"]
    diff_paths = {d["path"] for d in patch.json()["diff"]}
    assert diff_paths and all(p.startswith("models") for p in diff_paths), patch.json()

    put = editor.put(
        path, json=provider(enabled=False), params={"dry_run": True}, headers={"If-Match": '"1"'}
    )
    assert put.status_code == 200, put.text
    assert has_diff(put.json()["diff"], "enabled", True, False), put.json()

    delete = editor.delete(path, params={"dry_run": True}, headers={"If-Match": '"1"'})
    assert delete.status_code == 200, delete.text
    assert delete.json()["value"] is None
    assert has_diff(delete.json()["diff"], "type", "ollama", None), delete.json()

    new_key = unique("p")
    create = editor.put(doc("model_provider", new_key), json=provider(), params={"dry_run": True})
    assert create.status_code == 200, create.text
    assert has_diff(create.json()["diff"], "type", None, "ollama"), create.json()

    # Nothing was stored: versions and history are as before.
    assert version_of(editor, "model_provider", key) == 1
    assert history(editor, "model_provider", key) == before_history
    assert editor.get(path).json()["value"]["models"] == ["a"]
    assert_problem(editor.get(doc("model_provider", new_key)), 404)
    assert history(editor, "model_provider", new_key) == []

    singleton_version = version_of(editor, "cache")
    reset = editor.delete(
        doc("cache"), params={"dry_run": True}, headers={"If-Match": str(singleton_version)}
    )
    assert reset.status_code == 200, reset.text
    assert reset.json()["value"]["max_entries"] == 10_000  # the default it would reset to
    assert version_of(editor, "cache") == singleton_version


def test_listing_pages_through_every_item_once(server: Server) -> None:
    editor = server.client("editor")
    mine = sorted(create_provider(editor) for _ in range(5))
    whole = editor.get(DOCS.format(ns="model_provider"), params={"limit": 10_000}).json()
    keys = [d["key"] for d in whole["documents"]]
    assert keys == sorted(keys) and set(mine) <= set(keys) and whole["next_after"] is None
    paged: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = editor.get(DOCS.format(ns="model_provider"), params=params).json()
        assert len(page["documents"]) <= 2
        paged += [d["key"] for d in page["documents"]]
        if page["next_after"] is None:
            break
        params["after"] = page["next_after"]
    assert paged == keys
    versions = {d["key"]: d["version"] for d in whole["documents"]}
    assert all(versions[k] == 1 for k in mine)


# --------------------------------------------------------------------------- found bugs


def test_listing_a_reset_singleton_gives_its_real_version(server: Server) -> None:
    """After DELETE resets a singleton, the list must name the version an If-Match needs.

    Found: the list says version 0 while the document's ETag is the tombstone's version,
    so a client that takes its If-Match from the list always gets 412.
    """
    editor = server.client("editor")
    assert editor.patch(doc("router"), json={}).status_code == 200
    current = version_of(editor, "router")
    reset = editor.delete(doc("router"), headers={"If-Match": f'"{current}"'})
    assert reset.status_code == 200, reset.text
    etag = version_of(editor, "router")
    listed = editor.get(DOCS.format(ns="router")).json()["documents"]
    assert [d["key"] for d in listed] == ["default"]
    assert listed[0]["version"] == etag, (listed, etag)


EDGE_CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    # (id, method, path, request options): none may be answered with a 5xx.
    (
        "rollback-to-version-beyond-int32",
        "POST",
        doc("cache", "default", "/rollback"),
        {"json": {"to_version": 2**31}},
    ),
    (
        "rollback-to-version-beyond-int64",
        "POST",
        doc("cache", "default", "/rollback"),
        {"json": {"to_version": 147909949800939228495872}},
    ),
    (
        "virtual-key-put-dry-run",
        "PUT",
        doc("virtual_key", "0"),
        {"json": {}, "params": {"dry_run": True}},
    ),
    (
        "virtual-key-put-dry-run-valid",
        "PUT",
        doc("virtual_key", "k" * 64),
        {"json": {"name": "team"}, "params": {"dry_run": True}},
    ),
    ("nul-in-virtual-key", "GET", doc("virtual_key", "%00"), {}),
    ("nul-in-history-key", "GET", doc("model_provider", "%00", "/history"), {}),
    (
        "nul-in-rollback-key",
        "POST",
        doc("virtual_key", "%00", "/rollback"),
        {"json": {"to_version": 1}},
    ),
    ("nul-in-a-value", "PATCH", doc("cache"), {"json": {"key_prefix": "a\u0000b"}}),
]


@pytest.mark.parametrize(
    ("method", "path", "options"),
    [case[1:] for case in EDGE_CASES],
    ids=[case[0] for case in EDGE_CASES],
)
def test_no_server_error_on_edge_inputs(
    server: Server, method: str, path: str, options: dict[str, Any]
) -> None:
    """Inputs schemathesis found: each was a 500 on some database. Any 4xx is fine."""
    answer = server.client("admin").request(method, path, **options)
    assert answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code >= 400:
        assert_problem(answer, answer.status_code)


def test_the_internal_namespaces_are_not_served(server: Server) -> None:
    admin = server.client("admin")
    listed = [n["namespace"] for n in admin.get("/api/v1/namespaces").json()]
    for internal in ("api_token", "virtual_key_secret"):
        assert internal not in listed
        assert_problem(admin.get(doc(internal)), 404)
        assert_problem(admin.patch(doc(internal), json={}), 404)
