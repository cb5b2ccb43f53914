"""Change sets in the dashboard: a set written elsewhere is one entry in the live feed
(its members grouped) and in a document's history (every member on demand), and the
compare view's Promote button previews the set, commits it, and leaves no difference."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from confman import ConfigHub
from confman.managers import CacheConfigurationManager as Cache
from confman.managers import ModelProviderConfigurationManager as Providers

from ..api.servers import Server, wait_for
from ..support import run
from .conftest import Pages

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

SHOTS = os.environ.get("CONFMAN_SCREENSHOTS")  # as in test_dashboard.py
CACHE = "/api/v1/namespaces/cache/documents/default"
PROVIDER = {"type": "openai", "api_key": "sk-set-not-real", "models": ["gpt-4o"]}


def _log_in(pages: Pages, server: Server, token: str) -> Any:
    page = pages()
    page.goto(server.url)
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("login-button").click()
    expect(page.get_by_test_id("ns-cache")).to_be_visible()
    expect(page.get_by_test_id("stream-state")).to_have_text("live")
    return page


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def _ttl(server: Server, environment: str) -> int:
    found = server.client("ops").get(CACHE, params={"environment": environment})
    found.raise_for_status()
    ttl: int = found.json()["value"]["default_ttl_seconds"]
    return ttl


def _write_set(server: Server) -> str:
    """The cache and a new provider in the base, as one set, by another process's hub."""

    async def write() -> str:
        async with ConfigHub.connect(
            server.database_url, env=server.env, managers=[Cache, Providers]
        ) as hub:
            async with hub.change_set(actor="release", reason="cache and p1 together") as cs:
                cs.update(Cache, {"default_ttl_seconds": 90}, environment=None)
                cs.create(Providers, "p1", PROVIDER, environment=None)
            return cs.id

    return run(write())


def test_a_set_is_one_entry_in_the_feed_and_in_history(pages: Pages, server: Server) -> None:
    page = _log_in(pages, server, server.tokens["ops"])
    set_id = _write_set(server)

    # The feed: one entry for the set, both members in it.
    feed = page.get_by_test_id("live-feed").get_by_test_id("feed-item")
    entry = feed.and_(page.locator(f'[data-change-set="{set_id}"]'))
    expect(entry).to_have_count(1)
    members = entry.get_by_test_id("feed-member")
    expect(members).to_have_count(2)
    expect(entry.get_by_test_id("feed-set-count")).to_have_text("2 changes")
    expect(entry).to_contain_text("cache and p1 together")
    assert sorted(members.evaluate_all("els => els.map(e => e.dataset.namespace)")) == [
        "cache",
        "model_provider",
    ]
    expect(feed).to_have_count(1)  # nothing else shown for the set's members
    _shot(page, "change-set-feed")

    # History of the cache: the set is one entry; expanding it lists every member.
    wait_for(lambda: _ttl(server, "base") == 90, timeout=30, interval=0.2)
    page.goto(f"{server.url}/#/ns/cache/default/history")
    items = page.get_by_test_id("history-item")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-change-set", set_id)
    expect(items.first.get_by_test_id("set-badge")).to_have_text("change set")
    expect(items.first).to_contain_text("cache and p1 together")
    expect(items.first.get_by_test_id("set-record")).to_have_count(1)
    items.first.get_by_test_id("set-toggle").click()
    listed = items.first.get_by_test_id("set-member")
    expect(listed).to_have_count(2)
    expect(items.first.get_by_test_id("set-count")).to_have_text("2 changes, committed together")
    expect(listed.and_(page.locator('[data-namespace="model_provider"]'))).to_contain_text("p1")
    expect(listed.and_(page.locator('[data-namespace="cache"]'))).to_contain_text("90")
    content = page.content()
    assert "sk-set-not-real" not in content  # a member's secret is masked in its diff
    _shot(page, "change-set-history")

    # A single write stays an entry of its own.
    server.client("ops").patch(CACHE, json={"max_entries": 7000}).raise_for_status()
    page.get_by_test_id("tab-value").click()
    page.get_by_test_id("tab-history").click()
    page.get_by_role("button", name="Refresh").click()
    expect(items).to_have_count(2)
    expect(items.first).not_to_have_attribute("data-change-set", set_id)


def test_promote_from_the_compare_view(pages: Pages, server: Server) -> None:
    admin = server.client("ops")
    for name in ("staging", "production"):
        created = admin.post("/api/v1/environments", json={"name": name, "description": name})
        assert created.status_code == 201, created.text
    staged = admin.patch(CACHE, params={"environment": "staging"}, json={"default_ttl_seconds": 30})
    assert staged.status_code == 200, staged.text

    # A viewer sees the comparison but no Promote button.
    viewer = _log_in(pages, server, server.tokens["reader"])
    viewer.goto(f"{server.url}/#/compare/staging/production")
    expect(viewer.get_by_test_id("compare-summary")).to_contain_text("difference")
    expect(viewer.get_by_test_id("promote-button")).to_have_count(0)

    page = _log_in(pages, server, server.tokens["ops"])
    page.goto(f"{server.url}/#/compare/base/staging")
    button = page.get_by_test_id("promote-button")
    expect(button).to_be_disabled()  # the base is never promoted into or from
    page.goto(f"{server.url}/#/compare/staging/production")
    summary = page.get_by_test_id("compare-summary")
    expect(summary).to_contain_text("1 difference")
    expect(button).to_be_enabled()
    expect(button).to_have_text("Promote staging → production")

    # The preview: what production's overlays would get, nothing written yet.
    button.click()
    preview = page.get_by_test_id("promote-preview")
    member = preview.get_by_test_id("promote-member")
    expect(member).to_have_count(1)
    expect(member).to_have_attribute("data-namespace", "cache")
    expect(member).to_contain_text("default_ttl_seconds")
    expect(member).to_contain_text("30")
    assert _ttl(server, "production") != 30
    _shot(page, "promote-preview")

    # Confirm: one set of action promote; the comparison refreshes with nothing left.
    page.get_by_test_id("promote-reason").fill("ship the shorter ttl")
    page.get_by_test_id("promote-confirm").click()
    expect(summary).to_have_text("No differences between staging and production.")
    expect(preview).to_be_hidden()
    expect(page.get_by_test_id("status")).to_contain_text("Promoted staging into production")
    assert _ttl(server, "production") == 30
    assert _ttl(server, "base") != 30  # the base is not touched
    history = admin.get(f"{CACHE}/history", params={"environment": "production"}).json()
    newest = history[0] if isinstance(history, list) else history["history"][0]
    assert newest["action"] == "promote" and newest["change_set"]
    assert newest["reason"] == "ship the shorter ttl"

    # Promoting again has nothing to do, and says so.
    button.click()
    expect(preview.get_by_test_id("promote-nothing")).to_be_visible()
    preview.get_by_test_id("promote-cancel").click()
    expect(preview).to_be_hidden()
    _shot(page, "promote-done")
