"""The dashboard across environments: the selector, where each field comes from (base or
overlay, with its version), "override in this environment", "reset to base", the compare
view (secrets as fingerprints only), the event stream and the cluster view of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from confman import ConfigHub
from confman.api import ApiTokenManager

from ..api.servers import Server, start_server, wait_for
from ..support import run
from .conftest import Pages

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

SHOTS = os.environ.get("CONFMAN_SCREENSHOTS")  # as in test_dashboard.py
CACHE = "/api/v1/namespaces/cache/documents/default"
PROVIDER = "/api/v1/namespaces/model_provider/documents/openai-main"


def _log_in(pages: Pages, server: Server, token: str) -> Any:
    page = pages()
    page.goto(server.url)
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("login-button").click()
    expect(page.get_by_test_id("ns-cache")).to_be_visible()
    return page


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def _ttl(server: Server, environment: str) -> tuple[int, int]:
    """(default_ttl_seconds, the environment's own version) as the API reads them."""
    found = server.client("ops").get(CACHE, params={"environment": environment})
    found.raise_for_status()
    return found.json()["value"]["default_ttl_seconds"], found.json()["version"]


def _setup(server: Server) -> None:
    """staging and production over a base cache (ttl 120) and provider; production
    overrides the provider's secret."""
    admin = server.client("ops")
    for name in ("staging", "production"):
        created = admin.post("/api/v1/environments", json={"name": name, "description": name})
        assert created.status_code == 201, created.text
    server.cli("set", "cache", "default_ttl_seconds=120", "--actor", "setup")
    server.cli(
        "set", "model_provider", "openai-main", "type=openai", "api_key=sk-base-not-real",
        "--actor", "setup",
    )  # fmt: skip
    # The CLI's writes reach the server through the change log: wait for both.
    wait_for(lambda: _ttl(server, "base") == (120, 1), timeout=30, interval=0.2)
    wait_for(lambda: admin.get(PROVIDER).status_code == 200, timeout=30, interval=0.2)
    secret = admin.patch(
        PROVIDER, params={"environment": "production"}, json={"api_key": "sk-prod-not-real"}
    )
    assert secret.status_code == 200, secret.text


def test_select_override_reset_and_compare(pages: Pages, server: Server) -> None:
    _setup(server)
    page = _log_in(pages, server, server.tokens["ops"])
    watcher = _log_in(pages, server, server.tokens["ops"])  # follows production's stream

    # The selector: the base first, then the registered environments.
    select = page.get_by_test_id("env-select")
    values = select.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert values == ["base", "production", "staging"]
    expect(select).to_have_value("base")
    watcher.get_by_test_id("env-select").select_option("production")
    expect(watcher.get_by_test_id("stream-state")).to_have_text("live")

    # In staging, every field of the cache inherits from base v1.
    select.select_option("staging")
    page.get_by_test_id("ns-cache").click()
    expect(page.get_by_test_id("doc-environment")).to_have_text("staging")
    expect(page.get_by_test_id("doc-base-version")).to_have_text("base v1")
    origin = page.get_by_test_id("origin-default_ttl_seconds")
    expect(origin).to_have_text("base v1")
    expect(origin).to_have_attribute("data-origin", "base")
    expect(page.get_by_test_id("reset-default_ttl_seconds")).to_have_count(0)

    # Override in staging: the edit goes to staging's overlay, the base keeps its value.
    page.get_by_test_id("override-default_ttl_seconds").click()
    field = page.get_by_test_id("field-default_ttl_seconds")
    expect(field).to_be_focused()
    expect(page.get_by_test_id("tab-edit")).to_have_attribute("aria-selected", "true")
    field.fill("30")
    page.get_by_test_id("save-button").click()
    expect(page.get_by_test_id("doc-version")).to_contain_text("1")
    assert _ttl(server, "staging") == (30, 1)
    assert _ttl(server, "base") == (120, 1)
    assert _ttl(server, "production")[0] == 120
    page.get_by_test_id("tab-value").click()
    expect(origin).to_have_attribute("data-origin", "overlay")
    expect(origin).to_contain_text("staging v1")
    # A field no document stores stays the model default, still overridable.
    expect(page.get_by_test_id("source-max_entries")).to_have_attribute("data-origin", "")
    expect(page.get_by_test_id("override-max_entries")).to_be_visible()
    _shot(page, "environment-document")

    # The stream of staging carries the change, with its environment; production's does not.
    feed = page.get_by_test_id("live-feed").get_by_test_id("feed-item")
    expect(feed.filter(has_text="cache").first).to_have_attribute("data-environment", "staging")
    server.client("ops").patch(
        CACHE, params={"environment": "production"}, json={"max_entries": 7000}
    ).raise_for_status()
    watched = watcher.get_by_test_id("live-feed").get_by_test_id("feed-item")
    expect(watched.filter(has_text="cache")).to_have_count(1)
    expect(watched.first).to_have_attribute("data-environment", "production")

    # The choice outlives a reload.
    page.reload()
    expect(page.get_by_test_id("env-select")).to_have_value("staging")
    expect(page.get_by_test_id("origin-default_ttl_seconds")).to_contain_text("staging v1")

    # Compare base with staging: the overridden field differs, highlighted.
    page.get_by_test_id("compare-link").click()
    page.get_by_test_id("compare-left").select_option("base")
    page.get_by_test_id("compare-right").select_option("staging")
    rows = page.get_by_test_id("compare-row")
    ttl_row = rows.and_(page.locator('[data-path="default_ttl_seconds"]'))
    expect(ttl_row).to_have_count(1)
    expect(ttl_row).to_have_class("compare-row differs")
    expect(ttl_row).to_contain_text("120")
    expect(ttl_row).to_contain_text("30")
    expect(ttl_row).to_contain_text("staging v1")
    expect(page.get_by_test_id("compare-summary")).to_contain_text("difference")
    _shot(page, "compare")

    # Staging against production: the secret differs, shown as fingerprints only.
    page.get_by_test_id("compare-left").select_option("staging")
    page.get_by_test_id("compare-right").select_option("production")
    key_row = rows.and_(page.locator('[data-path="api_key"]'))
    expect(key_row).to_have_count(1)
    expect(key_row.get_by_test_id("fingerprint")).to_have_count(2)
    expect(key_row.get_by_test_id("fingerprint").first).to_contain_text("fingerprint:")
    content = page.content()
    assert "sk-base-not-real" not in content and "sk-prod-not-real" not in content
    # Identical fields on request, not highlighted.
    page.get_by_test_id("compare-all").check()
    expect(rows.and_(page.locator('[data-same="true"]')).first).to_have_class("compare-row same")

    # Reset to base: staging inherits the base's value again.
    page.get_by_test_id("ns-cache").click()
    page.get_by_test_id("reset-default_ttl_seconds").click()
    expect(page.get_by_test_id("origin-default_ttl_seconds")).to_have_attribute(
        "data-origin", "base"
    )
    expect(page.get_by_test_id("origin-default_ttl_seconds")).to_have_text("base v1")
    assert _ttl(server, "staging")[0] == 120

    # The cluster view says which environment this instance serves.
    page.get_by_test_id("cluster-link").click()
    expect(page.get_by_test_id("cluster-environment")).to_contain_text("base")
    expect(page.get_by_test_id("cluster-instance-environment").first).to_have_text("base")


def test_a_token_limited_to_staging_sees_and_writes_staging_only(
    pages: Pages, server: Server
) -> None:
    _setup(server)
    made = server.client("ops").post(
        "/api/v1/tokens", json={"name": "stager", "role": "editor", "environments": ["staging"]}
    )
    assert made.status_code in (200, 201), made.text
    page = _log_in(pages, server, made.json()["token"])

    # Only staging is offered, and picked: nothing asks for an environment it may not use.
    select = page.get_by_test_id("env-select")
    values = select.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert values == ["staging"]
    expect(select).to_have_value("staging")
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    page.get_by_test_id("ns-cache").click()
    expect(page.get_by_test_id("doc-environment")).to_have_text("staging")
    page.get_by_test_id("override-default_ttl_seconds").click()
    page.get_by_test_id("field-default_ttl_seconds").fill("15")
    page.get_by_test_id("save-button").click()
    origin = page.get_by_test_id("origin-default_ttl_seconds")
    expect(origin).to_have_attribute("data-origin", "overlay")
    assert _ttl(server, "staging")[0] == 15
    assert _ttl(server, "base")[0] == 120


def test_a_server_in_staging_opens_on_staging(pages: Pages, server: Server, tmp_path: Path) -> None:
    _setup(server)

    async def staging_token() -> str:
        # Tokens do not inherit: a server in staging authenticates staging's tokens.
        async with ConfigHub.connect(
            server.database_url, env=server.env, environment="staging", managers=[ApiTokenManager]
        ) as hub:
            issued = await hub.manager(ApiTokenManager).create_token("stage-ops", "admin")
            return issued.plaintext

    token = run(staging_token())
    staged = start_server(
        server.database_url, server.env, tmp_path, {"ops": token}, "--environment", "staging",
        name="staging",
    )  # fmt: skip
    try:
        # No choice remembered in this browser: the server's own environment comes first.
        page = _log_in(pages, staged, token)
        expect(page.get_by_test_id("env-select")).to_have_value("staging")
        page.get_by_test_id("ns-cache").click()
        expect(page.get_by_test_id("doc-environment")).to_have_text("staging")
        page.get_by_test_id("cluster-link").click()
        expect(page.get_by_test_id("cluster-environment")).to_contain_text("staging")
        pages.close()  # before the server stops: its event streams would log errors
    finally:
        staged.stop()
