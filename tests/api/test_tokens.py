"""API tokens: made through the API or the CLI, working at once, revoked everywhere."""

from __future__ import annotations

import asyncio
import hashlib

import httpx

from .servers import EventStream, Server, assert_problem, unique, wait_for


def test_a_token_made_through_the_api_works_at_once_and_revoking_ends_it(
    sqlite_server: Server,
) -> None:
    admin = sqlite_server.client("admin")
    name = unique("bot")
    created = admin.post(
        "/api/v1/tokens", json={"name": name, "role": "editor", "namespaces": ["cache"]}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert token.startswith("cmt_") and len(token) > 40
    assert (body["name"], body["role"], body["namespaces"]) == (name, "editor", ["cache"])

    bot = sqlite_server.bearer(token)
    me = bot.get("/api/v1/whoami")  # at once: no wait for any propagation
    assert me.status_code == 200, me.text
    assert me.json() == {
        "name": name,
        "role": "editor",
        "namespaces": ["cache"],
        "environments": None,  # not limited to environments: all of them
    }
    write = bot.patch("/api/v1/namespaces/cache/documents/default", json={"max_entries": 42})
    assert write.status_code == 200, write.text
    assert_problem(bot.patch("/api/v1/namespaces/router/documents/default", json={}), 403)

    # The value is shown once: never listed, not even as its hash.
    listed = admin.get("/api/v1/tokens")
    assert listed.status_code == 200
    assert name in [t["name"] for t in listed.json()]
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert token not in listed.text and digest not in listed.text
    assert all("token" not in t and "token_sha256" not in t for t in listed.json())

    # A second token of that name: refused.
    again = admin.post("/api/v1/tokens", json={"name": name, "role": "viewer"})
    assert_problem(again, 412)
    assert bot.get("/api/v1/whoami").status_code == 200  # and the first still works

    revoked = admin.delete(f"/api/v1/tokens/{name}")
    assert revoked.status_code == 204 and revoked.content == b""
    gone = bot.get("/api/v1/whoami")
    assert_problem(gone, 401)
    assert gone.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert name not in [t["name"] for t in admin.get("/api/v1/tokens").json()]
    assert_problem(admin.delete(f"/api/v1/tokens/{name}"), 404)


def test_refused_token_requests(sqlite_server: Server) -> None:
    admin = sqlite_server.client("admin")
    for body in [
        {"name": "has space", "role": "viewer"},
        {"name": "", "role": "viewer"},
        {"name": unique("x"), "role": "root"},
        {"name": unique("x")},
    ]:
        assert_problem(admin.post("/api/v1/tokens", json=body), 422)


def test_cli_tokens_list_shows_no_value_and_cli_changes_reach_the_server(
    sqlite_server: Server,
) -> None:
    name = unique("cli")
    made = sqlite_server.cli("tokens", "create", "--name", name, "--role", "viewer")
    token = made.stdout.strip()
    assert token.startswith("cmt_") and token not in made.stderr

    listed = sqlite_server.cli("tokens", "list")
    assert name in listed.stdout and "admin" in listed.stdout
    digest = hashlib.sha256(token.encode()).hexdigest()
    for secret in (token, digest, *sqlite_server.tokens.values()):
        assert secret not in listed.stdout and secret not in listed.stderr
        for known in sqlite_server.tokens.values():
            assert hashlib.sha256(known.encode()).hexdigest() not in listed.stdout

    # Made by another process: the server learns of it from the change log.
    bot = sqlite_server.bearer(token)
    wait_for(lambda: bot.get("/api/v1/whoami").status_code == 200, timeout=10)
    assert bot.get("/api/v1/whoami").json()["role"] == "viewer"

    sqlite_server.cli("tokens", "revoke", name)
    wait_for(lambda: bot.get("/api/v1/whoami").status_code == 401, timeout=10)
    assert name not in sqlite_server.cli("tokens", "list").stdout


def test_a_token_for_an_unknown_namespace_is_refused(sqlite_server: Server) -> None:
    """``confman tokens create --namespaces nope`` is refused; the API must refuse too.

    Found: the API stores any string as a grant (a typo makes a token that can do
    nothing, silently), and on PostgreSQL a grant with a NUL character is a 500.
    """
    admin = sqlite_server.client("admin")
    name = unique("typo")
    made = admin.post(
        "/api/v1/tokens", json={"name": name, "role": "editor", "namespaces": ["cahce"]}
    )
    problem = assert_problem(made, 422)
    assert any(e["path"].startswith("namespaces") for e in problem.get("errors", [])), problem
    assert name not in [t["name"] for t in admin.get("/api/v1/tokens").json()]


async def test_revoking_a_token_ends_its_open_stream(sqlite_server: Server) -> None:
    admin = sqlite_server.client("admin")
    name = unique("watcher")
    token = admin.post("/api/v1/tokens", json={"name": name, "role": "viewer"}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=sqlite_server.url, headers=headers, timeout=30) as client,
        EventStream(client) as stream,
    ):
        assert not stream.ended.is_set()
        assert admin.delete(f"/api/v1/tokens/{name}").status_code == 204
        await asyncio.wait_for(stream.ended.wait(), 10)  # the server closed it
    assert_problem(sqlite_server.bearer(token).get("/api/v1/events"), 401)


def test_an_admin_token_cannot_be_limited(sqlite_server: Server) -> None:
    made = sqlite_server.client("admin").post(
        "/api/v1/tokens", json={"name": unique("a"), "role": "admin", "namespaces": ["cache"]}
    )
    assert_problem(made, 422)
    refused = sqlite_server.cli(
        "tokens", "create", "--name", unique("a"), "--role", "admin", "--namespaces", "cache",
        code=4,
    )  # fmt: skip
    assert "admin token has every namespace" in refused.stderr
