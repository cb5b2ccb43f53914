"""A real ``confman serve`` process and Debian's Chromium driven by Playwright.

Playwright never downloads a browser here: it launches the system's ``chromium``, which
``scripts/services`` installs. Without one, these tests fail under ``CI=true`` and skip
(saying why) elsewhere, like the other services.

Tests open pages through the ``pages`` fixture: every page it opens is watched, and a test
fails on any console error or uncaught exception of any of them (a CSP violation is one).
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confman.secrets import generate_key

from ..api.servers import Server, clean_env, create_tokens, start_server
from ..support import IN_CI

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = [
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--no-first-run",
    # This machine's network is closed: without these Chromium keeps dialling out.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Chromium is not installed; run scripts/test, which installs it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _chromium()
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(tmp_path: Path, sqlite_template: Path) -> Iterator[Server]:
    database = tmp_path / "confman.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite+aiosqlite:///{database}"
    # One override, so the views show a field pinned by the environment.
    env = clean_env(CONFMAN_ENCRYPTION_KEY=generate_key(), CONFMAN_CACHE__MAX_ITEM_BYTES="2097152")
    tokens = create_tokens(url, env, tmp_path, {"ops": ("admin", None), "reader": ("viewer", None)})
    running = start_server(url, env, tmp_path, tokens)
    try:
        yield running
    finally:
        running.stop()


VIEWPORT = {"width": 1280, "height": 800}
# How Chromium logs an HTTP error answer to a request of the page (not the page's own error).
FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


class Pages:
    """Opens pages, each in its own context, and collects every console error they log.

    A test fails on any console error (a CSP violation, a failed load, ``console.error``)
    or uncaught exception, except HTTP error answers it declared with `expect_status`:
    Chromium logs those too, and a refused write is sometimes what a test provokes.
    """

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.errors: list[str] = []
        self.expected: list[tuple[int, str]] = []
        self.contexts: list[Any] = []

    def __call__(self, viewport: dict[str, int] | None = None) -> Any:
        context = self.browser.new_context(viewport=viewport or VIEWPORT)
        self.contexts.append(context)
        context.on("console", self._console)
        context.on("weberror", lambda e: self.errors.append(f"uncaught: {e.error}"))
        return context.new_page()

    def expect_status(self, status: int, url_part: str) -> None:
        """HTTP ``status`` answers to URLs containing ``url_part`` are expected, not errors."""
        self.expected.append((status, url_part))

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        failed = FAILED_LOAD.match(message.text)
        url = str(message.location.get("url", ""))
        if failed and any(
            int(failed.group(1)) == status and part in url for status, part in self.expected
        ):
            return
        self.errors.append(f"console error: {message.text} ({url})")

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@contextlib.contextmanager
def watched_pages(browser: Any) -> Iterator[Pages]:
    """`Pages` that fail the test, on leaving, if any page logged an error. Enter it after
    the server the pages talk to, so the server outlives every page (a server stopping
    first breaks the pages' event streams, which logs console errors)."""
    opened = Pages(browser)
    try:
        yield opened
    finally:
        opened.close()
    assert not opened.errors, "the dashboard logged errors:\n" + "\n".join(opened.errors)


@pytest.fixture
def pages(browser: Any, server: Server) -> Iterator[Pages]:
    """`watched_pages` on the ``server`` fixture's server."""
    with watched_pages(browser) as opened:
        yield opened
