"""``POST /api/v1/change-sets``, a set as one entry, rolling a set back, and promote:
real servers over SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from confman.api.tokens import BASE_NAME

from .servers import Server, assert_problem, unique

DOC = "/api/v1/namespaces/{namespace}/documents/{key}"
SETS = "/api/v1/change-sets"
PROVIDER = {"type": "openai", "api_key": "sk-one", "models": ["gpt-4o"]}


def alias_to(provider: str) -> dict[str, Any]:
    return {"deployments": [{"provider": provider, "model": "gpt-4o"}]}


def version(client: httpx.Client, namespace: str, key: str = "default", **params: str) -> int:
    answer = client.get(DOC.format(namespace=namespace, key=key), params=params)
    assert answer.status_code == 200, answer.text
    found: int = answer.json()["version"]
    return found


@pytest.fixture(scope="module")
def stages(server: Server) -> tuple[str, str]:
    """(staging, production): two environments of this module's server."""
    admin = server.client("admin")
    names = unique("staging"), unique("production")
    for name in names:
        answer = admin.post("/api/v1/environments", json={"name": name})
        assert answer.status_code == 201, answer.text
    return names


def test_a_set_valid_only_as_a_whole_commits(server: Server) -> None:
    editor = server.client("editor")
    provider, alias = unique("p"), unique("fast")
    route = {"aliases": {alias: alias_to(provider)}}
    alone = editor.patch(DOC.format(namespace="router", key="default"), json=route)
    assert_problem(alone, 422)  # routes to a provider that does not exist
    members = [
        {"op": "update", "namespace": "router", "value": route},
        {"op": "create", "namespace": "model_provider", "key": provider, "value": PROVIDER},
    ]
    answer = editor.post(
        SETS, json={"reason": "add a provider and route to it", "members": members}
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["dry_run"] is False and body["change_set"]
    assert [(m["member"], m["namespace"], m["key"]) for m in body["members"]] == [
        (0, "router", "default"),
        (1, "model_provider", provider),
    ]
    assert body["members"][1]["action"] == "create"
    assert {m["change_set"] for m in body["members"]} == {body["change_set"]}
    assert all(m["seq"] > 0 and not m["unchanged"] for m in body["members"])
    # Secrets never appear in a diff.
    assert "sk-one" not in answer.text

    entry = server.client("viewer").get(f"{SETS}/{body['change_set']}")
    assert entry.status_code == 200, entry.text
    shown = entry.json()
    assert shown["actor"] == "editor" and shown["reason"] == "add a provider and route to it"
    assert [(m["namespace"], m["key"]) for m in shown["members"]] == [
        ("router", "default"),
        ("model_provider", provider),
    ]
    history = editor.get(DOC.format(namespace="router", key="default") + "/history").json()
    assert history[0]["change_set"] == body["change_set"]
    # A limited token sees only its namespaces' members; one that sees none, no set.
    assert_problem(server.client("cache-editor").get(f"{SETS}/{body['change_set']}"), 404)

    # Rolled back as a new set: the provider and the alias go together.
    undone = editor.post(f"{SETS}/{body['change_set']}/rollback")
    assert undone.status_code == 201, undone.text
    again = undone.json()
    assert again["change_set"] not in (None, body["change_set"])
    assert editor.get(DOC.format(namespace="model_provider", key=provider)).status_code == 404
    value = editor.get(DOC.format(namespace="router", key="default")).json()["value"]
    assert alias not in value["aliases"]


def test_one_invalid_member_writes_nothing_and_every_failure_is_listed(server: Server) -> None:
    editor = server.client("editor")
    good, bad = unique("p"), unique("p")
    before = version(editor, "cache")
    members = [
        {"op": "create", "namespace": "model_provider", "key": good, "value": PROVIDER},
        {"op": "create", "namespace": "model_provider", "key": bad, "value": {"type": "nope"}},
        {"op": "update", "namespace": "cache", "value": {"max_entries": 0}},
    ]
    body = assert_problem(editor.post(SETS, json={"members": members}), 422)
    assert {(f["member"], f["namespace"], f["key"]) for f in body["failures"]} == {
        (1, "model_provider", bad),
        (2, "cache", "default"),
    }
    assert all(f["errors"] for f in body["failures"])
    assert any(e["path"].startswith("cache/default: max_entries") for e in body["errors"])
    assert editor.get(DOC.format(namespace="model_provider", key=good)).status_code == 404
    assert version(editor, "cache") == before


def test_malformed_members_are_named(server: Server) -> None:
    editor = server.client("editor")
    members = [
        {"op": "update", "namespace": "cache", "value": {"enabled": True}},
        {"op": "delete", "namespace": "cache"},  # no if_match
        {"op": "rollback", "namespace": "cache"},  # no to_version
    ]
    body = assert_problem(editor.post(SETS, json={"members": members}), 422)
    paths = {e["path"] for e in body["errors"]}
    assert {"members.1", "members.2"} <= paths, paths
    twice = [members[0], {"op": "update", "namespace": "cache", "value": {"enabled": False}}]
    body = assert_problem(editor.post(SETS, json={"members": twice}), 422)
    assert body["errors"][0]["path"] == "members.1"
    too_many = [members[0]] * 1001
    assert_problem(editor.post(SETS, json={"members": too_many}), 422)


def test_conflicting_members_are_named(server: Server) -> None:
    editor = server.client("editor")
    taken = unique("p")
    made = editor.put(DOC.format(namespace="model_provider", key=taken), json=PROVIDER)
    assert made.status_code == 201, made.text
    current = version(editor, "cache")
    stale = [{"op": "update", "namespace": "cache", "if_match": current + 5, "value": {}}]
    body = assert_problem(editor.post(SETS, json={"members": stale}), 412)
    assert body["conflicts"] == [
        {
            "namespace": "cache",
            "key": "default",
            "environment": None,
            "member": 0,
            "expected_version": current + 5,
            "current_version": current,
        }
    ]
    lost = [
        *stale,
        {"op": "create", "namespace": "model_provider", "key": taken, "value": PROVIDER},
    ]
    body = assert_problem(editor.post(SETS, json={"members": lost}), 409)
    assert {(c["member"], c["current_version"]) for c in body["conflicts"]} == {
        (0, current),
        (1, 1),
    }
    assert version(editor, "cache") == current


def test_dry_run_writes_nothing(server: Server) -> None:
    editor = server.client("editor")
    before = version(editor, "cache")
    members = [{"op": "update", "namespace": "cache", "value": {"max_entries": 77}}]
    answer = editor.post(SETS, json={"members": members}, params={"dry_run": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["dry_run"] is True
    changed = {d["path"]: d for d in body["members"][0]["diff"]}
    assert changed["max_entries"]["after"] == 77
    assert body["members"][0]["seq"] == 0
    assert version(editor, "cache") == before


def test_a_dry_run_shows_each_environment_a_base_change_reaches(
    server: Server, stages: tuple[str, str]
) -> None:
    staging, production = stages
    editor = server.client("editor")
    pinned = {"op": "update", "namespace": "cache", "environment": production,
              "value": {"max_entries": 12}}  # fmt: skip
    assert editor.post(SETS, json={"members": [pinned]}).status_code == 201
    fresh = {"max_entries": secrets.randbelow(10**6) + 100,
             "default_ttl_seconds": secrets.randbelow(10**6) + 100}  # fmt: skip
    members = [{"op": "update", "namespace": "cache", "value": fresh}]
    answer = editor.post(SETS, json={"members": members}, params={"dry_run": True})
    assert answer.status_code == 200, answer.text
    seen = {e["environment"]: e for e in answer.json()["members"][0]["per_environment"]}
    assert {staging, production} <= set(seen)
    assert seen[staging]["changed"] == ["default_ttl_seconds", "max_entries"]
    assert seen[production]["changed"] == ["default_ttl_seconds"]  # its overlay keeps 12
    # A token limited to the base and staging sees nothing of production.
    partial = limited(server, "editor", environments=[BASE_NAME, staging])
    answer = partial.post(SETS, json={"members": members}, params={"dry_run": True})
    assert answer.status_code == 200, answer.text
    shown = [e["environment"] for e in answer.json()["members"][0]["per_environment"]]
    assert staging in shown and production not in shown


def limited(server: Server, role: str, **grants: list[str]) -> httpx.Client:
    body: dict[str, Any] = {"name": unique("lim"), "role": role, **grants}
    made = server.client("admin").post("/api/v1/tokens", json=body)
    assert made.status_code == 201, made.text
    return server.bearer(made.json()["token"])


def test_each_member_is_checked_for_the_token(server: Server, stages: tuple[str, str]) -> None:
    staging, production = stages
    admin = server.client("admin")
    before = version(admin, "cache")
    scoped = server.client("cache-editor")
    members = [
        {"op": "update", "namespace": "cache", "value": {"max_entries": 5}},
        {"op": "update", "namespace": "router", "value": {}},
    ]
    body = assert_problem(scoped.post(SETS, json={"members": members}), 403)
    assert [e["path"] for e in body["errors"]] == ["members.1"]
    assert "router" in body["detail"]
    staged = limited(server, "editor", environments=[staging])
    members = [
        {"op": "update", "namespace": "cache", "environment": staging, "value": {"enabled": True}},
        {"op": "update", "namespace": "cache", "environment": production, "value": {}},
    ]
    body = assert_problem(staged.post(SETS, json={"members": members}), 403)
    assert [e["path"] for e in body["errors"]] == ["members.1"]
    assert production in body["detail"]
    assert version(admin, "cache", environment=staging) == 0
    assert version(admin, "cache") == before
    viewer = server.client("viewer")
    assert_problem(viewer.post(SETS, json={"members": members[:1]}), 403)
    unknown = [{"op": "update", "namespace": "cache", "environment": "nowhere", "value": {}}]
    assert_problem(admin.post(SETS, json={"members": unknown}), 404)


def differences(client: httpx.Client, left: str, right: str) -> list[dict[str, Any]]:
    answer = client.get(
        "/api/v1/compare", params={"left": left, "right": right, "namespace": "cache"}
    )
    assert answer.status_code == 200, answer.text
    return [f for f in answer.json()["fields"] if not f["same"]]


def test_promote_through_the_api(server: Server, stages: tuple[str, str]) -> None:
    staging, production = stages
    editor = server.client("editor")
    doc = DOC.format(namespace="cache", key="default")
    staged = editor.patch(doc, json={"max_entries": 4321}, params={"environment": staging})
    assert staged.status_code == 200, staged.text
    assert differences(editor, staging, production)
    query = {"from": staging, "to": production, "namespace": "cache"}
    preview = editor.post("/api/v1/promote", params={**query, "dry_run": True})
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    assert shown["dry_run"] is True
    assert [(m["namespace"], m["environment"], m["action"]) for m in shown["members"]] == [
        ("cache", production, "promote")
    ]
    assert differences(editor, staging, production)  # nothing written
    done = editor.post("/api/v1/promote", params=query)
    assert done.status_code == 201, done.text
    assert done.json()["change_set"]
    assert differences(editor, staging, production) == []
    assert editor.get(f"{SETS}/{done.json()['change_set']}").status_code == 200
    nothing = editor.post("/api/v1/promote", params=query)
    assert nothing.status_code == 200 and nothing.json() == {
        "change_set": None,
        "dry_run": False,
        "members": [],
    }
    assert_problem(server.client("viewer").post("/api/v1/promote", params=query), 403)
    same = editor.post("/api/v1/promote", params={"from": staging, "to": staging})
    assert_problem(same, 422)
    twice = f"/api/v1/promote?from={staging}&to={production}&dry_run=true&dry_run=false"
    assert_problem(editor.post(twice), 400)


def test_rolling_back_a_set_whose_member_changed_since_is_a_conflict(server: Server) -> None:
    editor = server.client("editor")
    members = [{"op": "update", "namespace": "cache", "value": {"max_entries": 321}}]
    made = editor.post(SETS, json={"members": members})
    assert made.status_code == 201, made.text
    written = made.json()["members"][0]["version"]
    later = editor.patch(DOC.format(namespace="cache", key="default"), json={"max_entries": 322})
    assert later.status_code == 200, later.text
    body = assert_problem(editor.post(f"{SETS}/{made.json()['change_set']}/rollback"), 409)
    assert [(c["namespace"], c["current_version"]) for c in body["conflicts"]] == [
        ("cache", written + 1)
    ]
    assert version(editor, "cache") == written + 1
    assert_problem(
        server.client("viewer").post(f"{SETS}/{made.json()['change_set']}/rollback"), 403
    )
    assert_problem(server.client("editor").get(f"{SETS}/{'0' * 32}"), 404)
