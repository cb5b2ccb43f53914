"""What a token limited in role or namespaces may learn from answers meant for others:
404s for namespaces, cross-manager validation messages and the cluster view."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from confman import ConfigHub
from confman.managers import ModelProviderConfigurationManager

from .conftest import Spawn, server_env
from .servers import Server, assert_problem, unique, wait_for

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


# --------------------------------------------------------------------------- the cluster view


async def _store_provider(database_url: str, env: dict[str, str], key: str) -> None:
    """Store a valid provider ``key``, as a process without the server's overrides."""
    plain = {k: v for k, v in env.items() if not k.startswith("CONFMAN_MODEL_PROVIDER__")}
    async with ConfigHub.connect(
        database_url, env=plain, env_files=(), managers=[ModelProviderConfigurationManager]
    ) as hub:
        body = {"type": "ollama", "base_url": "http://127.0.0.1:11434"}
        await hub.manager(ModelProviderConfigurationManager).create(key, body, actor="test")


def _mentions(view: dict[str, Any], namespace: str) -> list[str]:
    """Every place of a cluster view that tells something about ``namespace``."""
    found = []
    for instance in view["instances"]:
        if namespace in (instance.get("namespaces") or {}):
            found.append(f"{instance['instance_id']}: digest")
        found += [p for p in instance["problems"] if p.startswith(f"{namespace}/")]
    found += [d["detail"] for d in view["drift"] if namespace in d["detail"]]
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_fleet_view_shows_a_limited_token_only_its_namespaces(
    database_url: str, redis_url: str, cluster: str, spawn: Spawn
) -> None:
    key = unique("vis").replace("-", "_")  # the override's variable names it
    env = {**server_env(), f"CONFMAN_MODEL_PROVIDER__{key.upper()}__TIMEOUT_SECONDS": "-1"}
    server = spawn(database_url, "--redis-url", redis_url, "--cluster", cluster, env=env)
    await _store_provider(database_url, env, key)  # valid as stored; refused with the override

    def fleet_view(token: str) -> dict[str, Any] | None:
        answer = server.client(token).get("/api/v1/cluster")
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view if view["redis"] and view["instances"] else None

    def refused() -> dict[str, Any] | None:
        view = fleet_view("admin")
        problems = [p for i in (view or {}).get("instances", []) for p in i["problems"]]
        return view if any(p.startswith(f"model_provider/{key} ") for p in problems) else None

    admin = wait_for(refused, timeout=30, interval=0.2)
    # What there is to hide: the provider's problem (also as drift) and every digest.
    assert any(p.startswith(f"model_provider/{key} ") for p in admin["instances"][0]["problems"])
    assert any(d["kind"] == "problems" and key in d["detail"] for d in admin["drift"])
    assert {"cache", "model_provider", *HIDDEN} <= set(admin["instances"][0]["namespaces"])

    scoped = fleet_view("cache-editor")
    assert scoped is not None
    for namespace in ("model_provider", "router", "virtual_key", *HIDDEN):
        assert _mentions(scoped, namespace) == [], namespace
    assert set(scoped["instances"][0]["namespaces"]) == {"cache"}
    assert not any(d["kind"] == "problems" for d in scoped["drift"]), scoped["drift"]
    # Without the limit the provider shows, but the hidden namespaces stay an admin's.
    viewer = fleet_view("viewer")
    assert viewer is not None and _mentions(viewer, "model_provider")
    for namespace in HIDDEN:
        assert _mentions(viewer, namespace) == [], namespace


async def test_a_lone_instance_filters_the_same_way(database_url: str, spawn: Spawn) -> None:
    key = unique("vis").replace("-", "_")
    env = {**server_env(), f"CONFMAN_MODEL_PROVIDER__{key.upper()}__TIMEOUT_SECONDS": "-1"}
    server = spawn(database_url, env=env)
    await _store_provider(database_url, env, key)
    wait_for(
        lambda: _mentions(server.client("admin").get("/api/v1/cluster").json(), "model_provider")
    )
    for token, shown in (("admin", True), ("viewer", True), ("cache-editor", False)):
        view = server.client(token).get("/api/v1/cluster").json()
        assert view["redis"] is False
        assert bool(_mentions(view, "model_provider")) is shown, (token, view)


def test_value_drift_of_an_unseen_namespace_is_withheld() -> None:
    # Two instances with different effective values are hard to make on purpose; the
    # filter the route applies is checked on the entries the fleet reports instead.
    from confman.api.models import ClusterView
    from confman.api.operations import _visible_cluster
    from confman.api.tokens import Principal, Role

    same = "same stored versions as its peers, different effective values"
    view = ClusterView(
        instance_id="a",
        redis=True,
        is_leader=False,
        applied_seq=3,
        database_seq=3,
        leader="a",
        fencing_token=1,
        instances=[{"instance_id": "a", "problems": [], "namespaces": {}}],
        drift=[
            {"instance_id": "a", "kind": "values", "detail": f"router: {same}"},
            {"instance_id": "a", "kind": "values", "detail": f"cache: {same}"},
            {"instance_id": "a", "kind": "values", "detail": f"api_token: {same}"},
            {"instance_id": "a", "kind": "lagging", "detail": "applied up to seq 2"},
        ],
    )
    shown = _visible_cluster(Principal("c", Role.EDITOR, frozenset({"cache"})), view)
    assert [d["detail"].split(":")[0] for d in shown.drift] == ["cache", "applied up to seq 2"]
    shown = _visible_cluster(Principal("v", Role.VIEWER), view)
    assert len(shown.drift) == 3  # all but api_token
    assert len(_visible_cluster(Principal("root", Role.ADMIN), view).drift) == 4


# --------------------------------------------------------------------------- validation messages

PROVIDER = "/api/v1/namespaces/model_provider/documents/{key}"
ROUTER = "/api/v1/namespaces/router/documents/default"


def _token(server: Server, role: str, namespaces: list[str] | None) -> httpx.Client:
    body = {"name": unique("vis"), "role": role, "namespaces": namespaces}
    made = server.client("admin").post("/api/v1/tokens", json=body)
    assert made.status_code == 201, made.text
    return server.bearer(made.json()["token"])


def _provider(server: Server, **fields: Any) -> str:
    key = unique("vis")
    body = {"type": "ollama", "base_url": "http://127.0.0.1:11434", **fields}
    answer = server.client("admin").put(PROVIDER.format(key=key), json=body)
    assert answer.status_code == 201, answer.text
    return key


def _route(client: httpx.Client, provider: str, model: str, **params: str) -> dict[str, Any]:
    """A router patch deploying ``model`` on ``provider``; the 422 it must get."""
    alias = {"deployments": [{"provider": provider, "model": model}]}
    answer = client.patch(ROUTER, json={"aliases": {"vis": alias}}, params=params)
    return assert_problem(answer, 422)


def test_a_router_editor_is_not_told_what_the_providers_hold(sqlite_server: Server) -> None:
    disabled = _provider(sqlite_server, enabled=False)
    narrow = _provider(sqlite_server, models=["small"])
    missing = unique("vis")
    cases = {missing: "big", disabled: "big", narrow: "big"}
    router_only = _token(sqlite_server, "editor", ["router"])
    told = []
    for dry_run in ("true", "false"):
        for provider, model in cases.items():
            body = _route(router_only, provider, model, dry_run=dry_run)
            told.append(json.dumps(body, sort_keys=True).replace(provider, "<provider>"))
            assert body["errors"] == [
                {
                    "path": "aliases.vis.deployments.0.provider",
                    "message": f"model provider {provider!r} with model 'big' is not available "
                    "to this router",
                }
            ]
            assert provider in body["detail"]
    # Missing, disabled or lacking the model: one and the same answer.
    assert len(set(told)) == 1, told
    assert not any(word in told[0] for word in ("disabled", "offer", "no model provider"))

    # A token that may read the providers, and the library, get the precise reason.
    for reader in (
        sqlite_server.client("editor"),
        _token(sqlite_server, "editor", ["router", "model_provider"]),
    ):
        precise = [_route(reader, p, m, dry_run="true")["errors"][0] for p, m in cases.items()]
        assert precise == [
            {
                "path": "aliases.vis.deployments.0.provider",
                "message": f"no model provider {missing!r}",
            },
            {
                "path": "aliases.vis.deployments.0.provider",
                "message": f"model provider {disabled!r} is disabled",
            },
            {
                "path": "aliases.vis.deployments.0.model",
                "message": f"model provider {narrow!r} does not offer 'big'",
            },
        ]


def test_a_provider_editor_is_not_told_the_routers_aliases(sqlite_server: Server) -> None:
    used = _provider(sqlite_server)
    alias = unique("vis-alias")
    deployment = {"provider": used, "model": "any"}
    routed = sqlite_server.client("admin").patch(
        ROUTER, json={"aliases": {alias: {"deployments": [deployment]}}}
    )
    assert routed.status_code == 200, routed.text
    path = PROVIDER.format(key=used)
    provider_only = _token(sqlite_server, "editor", ["model_provider"])
    for change in ({"enabled": False}, {"models": ["other"]}):
        withheld = assert_problem(provider_only.patch(path, json=change), 422)
        precise = assert_problem(sqlite_server.client("editor").patch(path, json=change), 422)
        assert alias in json.dumps(precise) and alias not in json.dumps(withheld)
        assert [e["path"] for e in withheld["errors"]] == [e["path"] for e in precise["errors"]]
        assert "router" in withheld["errors"][0]["message"]
    deleted = provider_only.delete(path, headers={"If-Match": "1"}, params={"dry_run": "true"})
    assert alias not in json.dumps(assert_problem(deleted, 422))
