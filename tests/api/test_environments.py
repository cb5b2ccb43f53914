"""Environments over real HTTP: overlays, inheritance, validation across environments,
reset, hidden items, compare and the environment registry.

Runs once over SQLite and once over PostgreSQL (the module's ``server``, which runs on
the base). Tests share the server, so each makes environments and items of its own.
"""

from __future__ import annotations

from typing import Any

import httpx

from confman import ConfigHub

from ..support import run
from .servers import Server, assert_problem, etag_version, unique

DOCS = "/api/v1/namespaces/model_provider/documents"


def item(key: str, suffix: str = "") -> str:
    return f"{DOCS}/{key}{suffix}"


def anthropic(**extra: Any) -> dict[str, Any]:
    return {"type": "anthropic", "api_key": "sk-base-secret", **extra}


def new_environment(admin: httpx.Client, prefix: str = "stg") -> str:
    name = unique(prefix)
    answer = admin.post("/api/v1/environments", json={"name": name, "description": prefix})
    assert answer.status_code == 201, answer.text
    return name


def base_item(admin: httpx.Client, **extra: Any) -> str:
    key = unique("p")
    answer = admin.put(item(key), json=anthropic(**extra))
    assert answer.status_code == 201, answer.text
    return key


def read(client: httpx.Client, key: str, environment: str | None) -> dict[str, Any]:
    params = {} if environment is None else {"environment": environment}
    answer = client.get(item(key), params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert etag_version(answer) == body["version"]
    return body


def source(document: dict[str, Any], path: str) -> str | None:
    found: str | None = next(s["detail"] for s in document["sources"] if s["path"] == path)
    return found


def test_an_overlay_changes_staging_only(server: Server) -> None:
    admin, editor = server.client("admin"), server.client("editor")
    staging, production = new_environment(admin), new_environment(admin, "prod")
    key = base_item(admin)
    # The item is the base's: staging has no document of its own yet (version 0).
    inherited = read(editor, key, staging)
    assert (inherited["environment"], inherited["version"], inherited["base_version"]) == (
        staging,
        0,
        1,
    )
    wrote = editor.patch(
        item(key), params={"environment": staging}, json={"rpm_limit": 5}, headers={"If-Match": "0"}
    )
    assert wrote.status_code == 200, wrote.text
    assert etag_version(wrote) == 1 and wrote.json()["environment"] == staging

    seen = read(editor, key, staging)
    assert seen["value"]["rpm_limit"] == 5 and seen["version"] == 1
    assert source(seen, "rpm_limit") == f"{staging} v1"
    assert source(seen, "type") == "base v1"
    for environment in (production, "base", None):
        other = read(editor, key, environment)
        assert other["value"]["rpm_limit"] is None
        assert other["environment"] == (production if environment == production else None)
    assert read(editor, key, "base")["version"] == 1  # the base's own version

    stale = editor.patch(
        item(key), params={"environment": staging}, json={"rpm_limit": 6}, headers={"If-Match": "0"}
    )
    assert assert_problem(stale, 412)["current_version"] == 1


def test_a_base_change_reaches_staging_where_it_does_not_override(server: Server) -> None:
    admin = server.client("admin")
    staging = new_environment(admin)
    key = base_item(admin)
    assert admin.patch(item(key), params={"environment": staging}, json={"rpm_limit": 5}).is_success
    changed = admin.patch(item(key), json={"rpm_limit": 9, "timeout_seconds": 30})
    assert changed.status_code == 200, changed.text
    seen = read(admin, key, staging)
    assert seen["value"]["rpm_limit"] == 5  # overridden: staging keeps its own
    assert seen["value"]["timeout_seconds"] == 30  # not overridden: the base's
    assert source(seen, "timeout_seconds") == "base v2"
    assert seen["base_version"] == 2 and seen["version"] == 1


def test_a_base_write_an_overlay_would_make_invalid_is_refused(server: Server) -> None:
    admin = server.client("admin")
    staging = new_environment(admin)
    key = base_item(admin)
    overlay = admin.patch(
        item(key), params={"environment": staging}, json={"api_version": "2023-06-01"}
    )
    assert overlay.status_code == 200, overlay.text
    # openai takes no api_version: staging's value would be invalid.
    for dry_run in (True, False):
        refused = admin.patch(item(key), json={"type": "openai"}, params={"dry_run": dry_run})
        problem = assert_problem(refused, 422)
        assert problem["environment"] == staging, problem
        assert staging in problem["detail"]
        assert "api_version" in [e["path"] for e in problem["errors"]]
    assert read(admin, key, None)["value"]["type"] == "anthropic"
    assert read(admin, key, None)["version"] == 1


def test_reset_removes_fields_from_the_overlay(server: Server) -> None:
    admin = server.client("admin")
    staging = new_environment(admin)
    key = base_item(admin)
    params = {"environment": staging}
    assert admin.patch(item(key), params=params, json={"rpm_limit": 5, "tpm_limit": 7}).is_success

    one = admin.post(item(key, "/reset"), params=params, json={"fields": ["rpm_limit"]})
    assert one.status_code == 200, one.text
    assert one.json()["value"]["rpm_limit"] is None and one.json()["value"]["tpm_limit"] == 7
    assert etag_version(one) == 2

    stale = admin.post(item(key, "/reset"), params=params, json={}, headers={"If-Match": "1"})
    assert assert_problem(stale, 412)["current_version"] == 2
    every = admin.post(item(key, "/reset"), params=params, json={"fields": None})
    assert every.status_code == 200, every.text
    assert every.json()["value"] == read(admin, key, None)["value"]
    assert source(read(admin, key, staging), "tpm_limit") is None  # the default again

    base = admin.post(item(key, "/reset"), json={"fields": None})
    assert assert_problem(base, 422)["errors"][0]["path"] == "environment"
    history = admin.get(item(key, "/history"), params=params).json()
    assert [h["environment"] for h in history] == [staging] * 3
    assert history[0]["reason"] == "reset to base"


def test_an_item_hidden_in_staging_only(server: Server) -> None:
    admin = server.client("admin")
    staging, production = new_environment(admin), new_environment(admin, "prod")
    key = base_item(admin)
    params = {"environment": staging}
    hid = admin.delete(item(key), params=params, headers={"If-Match": "0"})
    assert hid.status_code == 200, hid.text
    assert hid.json()["change"]["action"] == "delete" and hid.json()["environment"] == staging

    gone = assert_problem(admin.get(item(key), params=params), 404)
    assert gone["hidden"] is True and gone["current_version"] == 1
    listed = admin.get(DOCS, params=params).json()
    assert listed["environment"] == staging
    assert key not in [d["key"] for d in listed["documents"]]
    assert key in [
        d["key"] for d in admin.get(DOCS, params={"environment": production}).json()["documents"]
    ]
    assert read(admin, key, production)["value"]["type"] == "anthropic"

    shown = admin.post(item(key, "/reset"), params=params, json={"fields": None})
    assert shown.status_code == 200, shown.text
    assert read(admin, key, staging)["value"]["type"] == "anthropic"


def test_an_item_of_staging_alone_is_listed_there_only(server: Server) -> None:
    admin = server.client("admin")
    staging = new_environment(admin)
    key = unique("p")
    made = admin.put(item(key), params={"environment": staging}, json=anthropic())
    assert made.status_code == 201, made.text
    assert made.json()["base_version"] == 0
    listed = admin.get(DOCS, params={"environment": staging, "after": key[:-1], "limit": 1})
    assert listed.json()["documents"][0]["key"] == key
    assert assert_problem(admin.get(item(key)), 404)
    counts = {
        n["namespace"]: n
        for n in admin.get("/api/v1/namespaces", params={"environment": staging}).json()
    }
    base = {n["namespace"]: n for n in admin.get("/api/v1/namespaces").json()}
    assert counts["model_provider"]["items"] >= base["model_provider"]["items"] + 1
    assert counts["model_provider"]["environment"] == staging


def test_compare_shows_fingerprints_and_items_on_one_side(server: Server) -> None:
    admin = server.client("admin")
    staging, production = new_environment(admin), new_environment(admin, "prod")
    key = base_item(admin)
    only = unique("p")
    params = {"environment": staging}
    secret = "sk-staging-" + unique("s")
    assert admin.patch(item(key), params=params, json={"api_key": secret}).is_success
    assert admin.put(item(only), params=params, json=anthropic()).status_code == 201

    answer = admin.get(
        "/api/v1/compare",
        params={"left": staging, "right": production, "namespace": "model_provider"},
    )
    assert answer.status_code == 200, answer.text
    assert secret not in answer.text and "sk-base-secret" not in answer.text
    body = answer.json()
    assert (body["left"], body["right"], body["everything"]) == (staging, production, False)
    fields = {(f["key"], f["path"]): f for f in body["fields"]}
    api_key = fields[(key, "api_key")]
    assert api_key["secret"] is True and api_key["same"] is False
    assert api_key["left"].startswith("fingerprint:") and api_key["right"].startswith(
        "fingerprint:"
    )
    assert api_key["left_source"] == f"database ({staging} v1)"
    assert api_key["right_source"] == "database (base v1)"
    missing = fields[(only, "")]
    assert missing["left_present"] is True and missing["right_present"] is False
    assert all(not f["same"] for f in body["fields"])

    everything = admin.get(
        "/api/v1/compare",
        params={"left": "base", "right": production, "namespace": "model_provider", "all": True},
    ).json()
    same = {(f["key"], f["path"]): f for f in everything["fields"]}[(key, "api_key")]
    assert same["same"] is True and same["left"] == same["right"]  # one key, one fingerprint
    assert everything["left"] == "base"
    unknown = assert_problem(
        admin.get("/api/v1/compare", params={"left": "nope", "right": "base"}), 404
    )
    assert production in unknown["known"]


def test_environments_are_created_listed_and_deleted(server: Server) -> None:
    admin, viewer = server.client("admin"), server.client("viewer")
    name = new_environment(admin)
    again = admin.post("/api/v1/environments", json={"name": name})
    assert assert_problem(again, 409)["environment"] == name
    bad = assert_problem(admin.post("/api/v1/environments", json={"name": "Not-Valid"}), 422)
    assert [e["path"] for e in bad["errors"]] == ["name"]
    reserved = assert_problem(admin.post("/api/v1/environments", json={"name": "base"}), 422)
    assert reserved["errors"][0]["path"] == "name"
    assert_problem(viewer.post("/api/v1/environments", json={"name": unique("x")}), 403)

    key = base_item(admin)
    assert admin.patch(item(key), params={"environment": name}, json={"rpm_limit": 3}).is_success
    listed = {e["name"]: e for e in viewer.get("/api/v1/environments").json()}
    assert listed[name]["documents"] == 1 and listed[name]["description"] == "stg"
    assert listed[name]["updated_by"] == "admin" and listed[name]["version"] == 1

    seq = admin.get("/api/v1/cluster").json()["database_seq"]
    full = assert_problem(admin.delete(f"/api/v1/environments/{name}"), 409)
    assert full["documents"] == 1
    assert_problem(server.client("editor").delete(f"/api/v1/environments/{name}"), 403)
    gone = admin.delete(f"/api/v1/environments/{name}", params={"force": True, "reason": "retire"})
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"name": name, "removed": 1}
    assert name not in {e["name"] for e in viewer.get("/api/v1/environments").json()}
    unknown = assert_problem(admin.get(item(key), params={"environment": name}), 404)
    assert unknown["environment"] == name and name not in unknown["known"]
    assert_problem(admin.delete(f"/api/v1/environments/{name}"), 404)

    async def audit() -> list[Any]:
        async with ConfigHub.connect(server.database_url, env=server.env, managers=[]) as hub:
            return await hub.changes_since(seq, environments=[name], with_values=False)

    removed = run(audit())
    assert [(r.namespace, r.key, str(r.action), r.actor, r.reason) for r in removed] == [
        ("model_provider", key, "delete", "admin", "retire")
    ]
