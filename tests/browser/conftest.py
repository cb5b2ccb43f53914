"""A real ``confman serve`` process and Debian's Chromium driven by Playwright.

Playwright never downloads a browser here: it launches the system's ``chromium``, which
``scripts/services`` installs. Without one, these tests fail under ``CI=true`` and skip
(saying why) elsewhere, like the other services.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

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
