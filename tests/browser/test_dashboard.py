"""The dashboard in headless Chromium: log in, edit, see a refusal, save, watch, roll back.

Set ``CONFMAN_SCREENSHOTS=docs/img`` to also save the screenshots shown in the README
(``CONFMAN_SCREENSHOTS=docs/img scripts/test tests/browser``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ..api.servers import Server
from .conftest import Pages

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

SHOTS = os.environ.get("CONFMAN_SCREENSHOTS")


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def _log_in(pages: Pages, server: Server, token: str) -> Any:
    page = pages()
    page.goto(server.url)
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("login-button").click()
    expect(page.get_by_test_id("ns-cache")).to_be_visible()
    return page


def _stored_ttl(server: Server) -> tuple[int, int]:
    found = server.client("ops").get("/api/v1/namespaces/cache/documents/default")
    found.raise_for_status()
    return found.json()["value"]["default_ttl_seconds"], found.json()["version"]


def test_edit_refuse_save_watch_and_roll_back(pages: Pages, server: Server) -> None:
    admin = server.tokens["ops"]
    server.cli("set", "cache", "default_ttl_seconds=120", "--actor", "setup")
    server.cli(
        "set", "model_provider", "openai-main", "type=openai", "api_key=sk-test-not-real",
        "--actor", "setup",
    )  # fmt: skip

    page = _log_in(pages, server, admin)
    watcher = _log_in(pages, server, admin)  # a second operator, watching the feed

    page.get_by_test_id("ns-cache").click()
    page.get_by_test_id("tab-value").click()
    expect(page.get_by_test_id("doc-version")).to_contain_text("1")
    _shot(page, "document")

    # A value the model refuses: the error is shown next to the field, nothing is stored.
    page.get_by_test_id("tab-edit").click()
    pages.expect_status(422, "/documents/default?dry_run=true")
    page.get_by_test_id("field-default_ttl_seconds").fill("-5")
    page.get_by_test_id("preview-button").click()
    expect(page.get_by_test_id("error-default_ttl_seconds")).to_contain_text("greater than 0")
    assert _stored_ttl(server) == (120, 1)

    # A valid value: the diff preview first, then the save.
    page.get_by_test_id("field-default_ttl_seconds").fill("45")
    page.get_by_test_id("preview-button").click()
    expect(page.get_by_test_id("diff-preview")).to_contain_text("default_ttl_seconds")
    expect(page.get_by_test_id("diff-preview")).to_contain_text("45")
    page.get_by_test_id("diff-preview").scroll_into_view_if_needed()
    _shot(page, "edit-preview")
    page.get_by_test_id("save-button").click()
    expect(page.get_by_test_id("doc-version")).to_contain_text("2")
    assert _stored_ttl(server) == (45, 2)

    # The other page learns of it live, without a reload.
    feed = watcher.get_by_test_id("live-feed")
    expect(feed.get_by_test_id("feed-item").filter(has_text="cache")).not_to_have_count(0)
    # So it does of a change made by another process (the command line).
    server.cli("set", "cache", "max_entries=5000", "--actor", "cli-user")
    expect(feed).to_contain_text("cli-user")
    _shot(watcher, "live-feed")

    # Roll back to version 1 from the history.
    page.get_by_test_id("tab-history").click()
    expect(page.get_by_test_id("history-item")).to_have_count(3)
    _shot(page, "history")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("rollback-1").click()
    expect(page.get_by_test_id("doc-version")).to_contain_text("4")
    assert _stored_ttl(server) == (120, 4)

    # Secrets are masked in the page as everywhere.
    page.get_by_test_id("ns-model_provider").click()
    page.get_by_test_id("key-openai-main").click()
    page.get_by_test_id("tab-value").click()
    expect(page.locator("body")).to_contain_text("**********#")
    assert "sk-test-not-real" not in page.content()

    page.get_by_test_id("cluster-link").click()
    expect(page.locator("body")).to_contain_text("applied")
    _shot(page, "cluster")


def test_viewer_cannot_save_and_bad_token_is_refused(pages: Pages, server: Server) -> None:
    page = pages()
    pages.expect_status(401, "/api/v1/whoami")
    page.goto(server.url)
    page.get_by_test_id("token-input").fill("cmt_not-a-token")
    page.get_by_test_id("login-button").click()
    expect(page.get_by_role("alert")).to_contain_text("not recognised")
    expect(page.get_by_test_id("ns-cache")).to_have_count(0)

    viewer = _log_in(pages, server, server.tokens["reader"])
    viewer.get_by_test_id("ns-cache").click()
    viewer.get_by_test_id("tab-edit").click()
    expect(viewer.get_by_test_id("save-button")).to_be_disabled()
