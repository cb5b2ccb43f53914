"""The dashboard as an operator uses it: unsaved edits, where the preview and notifications
appear, what the form says about each field, the top bar and the cluster view."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confman.secrets import generate_key

from ..api.servers import Server, clean_env, create_tokens, start_server, wait_for
from .conftest import Pages, watched_pages

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

NARROW = {"width": 1000, "height": 760}


def _log_in(pages: Pages, server: Server, token: str, viewport: Any = None) -> Any:
    page = pages(viewport)
    page.goto(server.url)
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("login-button").click()
    expect(page.get_by_test_id("ns-cache")).to_be_visible()
    return page


def _provider(server: Server, key: str = "openai-main") -> None:
    """Store a provider through the CLI and wait until the server has applied it (from the
    change log: pages that open it at once must not find a 404)."""
    server.cli(
        "set", "model_provider", key, "type=openai", "api_key=sk-test-not-real", "--actor", "setup"
    )  # fmt: skip
    path = f"/api/v1/namespaces/model_provider/documents/{key}"
    wait_for(lambda: server.client("ops").get(path).status_code == 200, timeout=30, interval=0.2)


def _edit(page: Any, ns: str, key: str = "default") -> None:
    page.goto(f"{page.url.split('#')[0]}#/ns/{ns}/{key}/edit")
    expect(page.get_by_test_id("save-button")).to_be_visible()


def _boxes_overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


# --------------------------------------------------------------------------- unsaved edits


def test_leaving_unsaved_edits_asks_first(pages: Pages, server: Server) -> None:
    page = _log_in(pages, server, server.tokens["ops"])
    _edit(page, "cache")
    field = page.get_by_test_id("field-default_ttl_seconds")
    field.click()  # a user gesture: browsers ask on closing only a page the user touched
    field.fill("45")
    edit_url = page.url
    dialog = page.get_by_test_id("confirm-dialog")

    # The sidebar, the top bar's links and buttons: each asks; "stay" keeps the edits.
    for leave in (
        page.get_by_test_id("ns-model_provider"),
        page.get_by_test_id("home-link"),
        page.get_by_test_id("cluster-link"),
    ):
        leave.click()
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("unsaved")
        page.get_by_test_id("confirm-cancel").click()
        expect(dialog).to_be_hidden()
        assert page.url == edit_url
        expect(field).to_have_value("45")

    # Another tab of the same document is not leaving: the form (and its edits) stays.
    page.get_by_test_id("tab-value").click()
    expect(dialog).to_be_hidden()
    page.get_by_test_id("tab-edit").click()
    expect(field).to_have_value("45")

    # Closing the tab: the browser's own "leave site?" question.
    asked: list[str] = []
    page.on("dialog", lambda d: (asked.append(d.type), d.dismiss()))
    page.close(run_before_unload=True)
    expect(field).to_have_value("45")  # still open
    assert asked == ["beforeunload"]

    # Leaving on purpose: the edits are dropped, and nothing was stored.
    page.get_by_test_id("ns-model_provider").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page).to_have_url(re.compile(r"#/ns/model_provider$"))
    found = server.client("ops").get("/api/v1/namespaces/cache/documents/default")
    assert found.json()["version"] == 0

    # Nothing to lose: no question, on either path.
    _edit(page, "cache")
    page.get_by_test_id("home-link").click()
    expect(page.get_by_test_id("home-link")).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/$"))
    expect(dialog).to_be_hidden()
    page.close(run_before_unload=True)
    assert asked == ["beforeunload"]


def test_a_new_item_half_filled_asks_before_leaving(pages: Pages, server: Server) -> None:
    page = _log_in(pages, server, server.tokens["ops"])
    page.goto(f"{server.url}/#/ns/model_provider/+new")
    page.get_by_test_id("new-item-key").fill("half-done")
    page.get_by_test_id("field-type").select_option("ollama")
    page.get_by_test_id("ns-cache").click()
    expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
    page.get_by_test_id("confirm-cancel").click()
    expect(page.get_by_test_id("field-type")).to_have_value('"ollama"')


# --------------------------------------------------------------------------- the preview


@pytest.mark.parametrize("viewport", [None, NARROW], ids=["wide", "narrow"])
def test_the_preview_appears_where_the_operator_is_looking(
    pages: Pages, server: Server, viewport: Any
) -> None:
    _provider(server)
    page = _log_in(pages, server, server.tokens["ops"], viewport)
    _edit(page, "model_provider", "openai-main")
    page.get_by_test_id("field-rpm_limit").fill("90")
    page.get_by_test_id("preview-button").click()
    preview = page.get_by_test_id("diff-preview")
    expect(preview).to_contain_text("rpm_limit")
    # Wholly on screen, and not under the sticky action bar.
    expect(preview).to_be_in_viewport(ratio=1)
    box, bar = preview.bounding_box(), page.locator(".action-bar").bounding_box()
    assert box is not None and bar is not None
    assert not _boxes_overlap(box, bar), (box, bar)


# --------------------------------------------------------------------------- notifications


@pytest.mark.parametrize("viewport", [None, NARROW], ids=["wide", "narrow"])
def test_notifications_stay_on_their_page_and_off_the_feed(
    pages: Pages, server: Server, viewport: Any
) -> None:
    page = _log_in(pages, server, server.tokens["ops"], viewport)
    _edit(page, "cache")
    page.get_by_test_id("field-default_ttl_seconds").fill("45")
    page.get_by_test_id("save-button").click()
    toast = page.get_by_test_id("status")
    expect(toast).to_contain_text("Saved")
    expect(page.get_by_test_id("feed-item")).not_to_have_count(0)

    # It covers neither the feed (its newest entry, its Clear button) nor the sidebar.
    box = toast.bounding_box()
    assert box is not None
    for other in ("#feed-panel", "#sidebar", ".action-bar"):
        other_box = page.locator(other).bounding_box()
        assert other_box is not None
        assert not _boxes_overlap(box, other_box), (other, box, other_box)
    page.locator("#feed-clear").click()  # not intercepted by the notification
    expect(page.get_by_test_id("feed-item")).to_have_count(0)

    # It belongs to the page it was shown on.
    page.get_by_test_id("ns-model_provider").click()
    expect(toast).to_be_hidden()


def test_a_notification_shown_for_the_next_page_stays(pages: Pages, server: Server) -> None:
    page = _log_in(pages, server, server.tokens["ops"])
    page.goto(f"{server.url}/#/ns/model_provider/+new")
    page.get_by_test_id("new-item-key").fill("local")
    page.get_by_test_id("field-type").select_option("ollama")
    page.get_by_test_id("field-base_url").fill("http://127.0.0.1:11434")
    page.get_by_test_id("save-button").click()
    expect(page).to_have_url(re.compile(r"#/ns/model_provider/local/value$"))
    expect(page.get_by_test_id("status")).to_contain_text("Created model_provider/local")


# --------------------------------------------------------------------------- the form


def _head(page: Any, path: str) -> Any:
    return page.locator(f'.field[data-path="{path}"] .field-head')


def test_conditionally_required_fields_say_when(pages: Pages, server: Server) -> None:
    _provider(server)
    page = _log_in(pages, server, server.tokens["ops"])
    page.goto(f"{server.url}/#/ns/model_provider/+new")
    api_key = _head(page, "api_key")
    expect(api_key).to_contain_text("required for type openai")
    page.get_by_test_id("field-type").select_option("openai")
    expect(api_key.locator(".req")).to_be_visible()
    page.get_by_test_id("field-type").select_option("ollama")
    expect(api_key.locator(".req")).to_be_hidden()
    expect(_head(page, "base_url").locator(".req")).to_be_visible()
    expect(api_key).not_to_contain_text("optional")

    # The same in the edit form of a stored item.
    page.goto(f"{server.url}/#/ns/model_provider/openai-main/edit")
    page.get_by_test_id("confirm-ok").click()  # leave the half-filled new item
    expect(api_key.locator(".req")).to_be_visible()
    expect(_head(page, "aws_region")).to_contain_text("required for type bedrock")


def test_field_help_renders_code_and_names_no_internals(pages: Pages, server: Server) -> None:
    page = _log_in(pages, server, server.tokens["ops"])
    for ns, key in (("cache", "default"), ("model_provider", "+new"), ("router", "default")):
        page.goto(f"{server.url}/#/ns/{ns}/{key}" + ("" if key == "+new" else "/edit"))
        expect(page.get_by_test_id("save-button")).to_be_visible()
        helps = page.locator(".help")
        expect(helps).not_to_have_count(0)
        texts = helps.all_inner_texts()
        assert not [t for t in texts if "`" in t], texts
        assert not [t for t in texts if re.search(r"\b(None|True|False)\b", t)], texts
    page.goto(f"{server.url}/#/ns/cache/default/edit")
    backend = page.locator('.field[data-path="backend"] .help')
    expect(backend.locator("code")).to_have_text(["memory", "redis"])
    enabled = page.locator('.field[data-path="enabled"] .help')
    expect(enabled).not_to_contain_text("ttl_for")


BROKEN_WORDS = """(selector) => {
  // Names (field names, dotted paths) whose words, the parts between "_", "." and "-",
  // do not each lie on one line.
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    const text = el.textContent;
    const nodes = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) nodes.push(n);
    const at = (offset) => {
      for (const n of nodes) {
        if (offset <= n.textContent.length) return [n, offset];
        offset -= n.textContent.length;
      }
      return [nodes[nodes.length - 1], nodes[nodes.length - 1].textContent.length];
    };
    let offset = 0;
    for (const word of text.split(/[_.-]/)) {
      if (word.length > 1) {
        const range = document.createRange();
        range.setStart(...at(offset));
        range.setEnd(...at(offset + word.length));
        const tops = new Set([...range.getClientRects()].filter((r) => r.width > 0)
          .map((r) => Math.round(r.top)));
        if (tops.size > 1) out.push(`${text} (${word})`);
      }
      offset += word.length + 1;
    }
  }
  return out;
}"""


@pytest.mark.parametrize("viewport", [None, NARROW], ids=["wide", "narrow"])
def test_field_names_break_only_between_words(pages: Pages, server: Server, viewport: Any) -> None:
    _provider(server)
    page = _log_in(pages, server, server.tokens["ops"], viewport)
    for ns, key in (("cache", "default"), ("router", "default"), ("model_provider", "openai-main")):
        page.goto(f"{server.url}/#/ns/{ns}/{key}/value")
        expect(page.get_by_test_id("sources-table")).to_be_visible()
        assert page.evaluate(BROKEN_WORDS, ".sources-table td.path code") == [], ns
        page.get_by_test_id("tab-edit").click()
        expect(page.get_by_test_id("save-button")).to_be_visible()
        assert page.evaluate(BROKEN_WORDS, ".field-name") == [], ns
    # And in a diff: the preview's field column.
    page.get_by_test_id("field-connect_timeout_seconds").fill("5")
    page.get_by_test_id("preview-button").click()
    expect(page.get_by_test_id("diff-preview")).to_contain_text("connect")
    assert page.evaluate(BROKEN_WORDS, ".diff-table td.path code") == []


# --------------------------------------------------------------------------- top bar


def test_the_top_bar_names_the_token_and_its_role_once(pages: Pages, server: Server) -> None:
    made = server.client("ops").post(
        "/api/v1/tokens", json={"name": "admin", "role": "admin", "namespaces": None}
    )
    assert made.status_code == 201, made.text
    page = _log_in(pages, server, made.json()["token"])
    who = page.get_by_test_id("whoami")
    expect(who).to_have_attribute("title", re.compile("admin"))
    assert " ".join(who.inner_text().split()) == "admin"

    other = _log_in(pages, server, server.tokens["reader"])
    who = other.get_by_test_id("whoami")
    assert " ".join(who.inner_text().split()) == "reader viewer"


# --------------------------------------------------------------------------- cluster


@pytest.fixture
def fleet_server(
    tmp_path: Path, sqlite_template: Path, redis_url: str, cluster: str
) -> Iterator[Server]:
    """A server with Redis (a cluster of one)."""
    database = tmp_path / "fleet.db"
    database.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite+aiosqlite:///{database}"
    env = clean_env(CONFMAN_ENCRYPTION_KEY=generate_key())
    tokens = create_tokens(url, env, tmp_path, {"ops": ("admin", None)})
    running = start_server(
        url, env, tmp_path, tokens, "--redis-url", redis_url, "--cluster", cluster, name="fleet"
    )
    try:
        yield running
    finally:
        running.stop()


def _check_cluster_view(page: Any, server: Server) -> None:
    page.get_by_test_id("cluster-link").click()
    row = page.get_by_test_id("cluster-instance").filter(has=page.locator(".badge.this"))
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"{socket.gethostname()} · {server.proc.pid}")
    # environment, host · PID, up since
    expect(row.locator("td").nth(1)).to_have_text("base")
    for cell in (2, 3):
        expect(row.locator("td").nth(cell)).not_to_contain_text("—")
    expect(row.locator("td").nth(3).locator("time")).to_have_count(1)


def test_the_cluster_view_shows_this_instance_without_redis(pages: Pages, server: Server) -> None:
    _check_cluster_view(_log_in(pages, server, server.tokens["ops"]), server)


def test_the_cluster_view_shows_this_instance_with_redis(
    browser: Any, fleet_server: Server
) -> None:
    with watched_pages(browser) as fleet_pages:
        _check_cluster_view(
            _log_in(fleet_pages, fleet_server, fleet_server.tokens["ops"]), fleet_server
        )


def test_a_service_token_is_offered_nothing_it_cannot_do(pages: Pages, server: Server) -> None:
    made = server.client("ops").post("/api/v1/tokens", json={"name": "svc", "role": "service"})
    assert made.status_code == 201, made.text
    page = _log_in(pages, server, made.json()["token"])
    assert " ".join(page.get_by_test_id("whoami").inner_text().split()) == "svc service"
    page.goto(f"{page.url.split('#')[0]}#/ns/model_provider")
    expect(page.locator(".collection .badge.readonly")).to_be_visible()  # rendered, then:
    expect(page.get_by_test_id("new-item-button")).to_have_count(0)
    page.goto(f"{page.url.split('#')[0]}#/ns/cache/default/edit")
    expect(page.get_by_test_id("save-button")).to_be_disabled()
    expect(page.locator(".badge.readonly")).to_have_attribute(
        "title", "Your token has the service role."
    )
    expect(page.locator(".form-intro")).to_contain_text("Read-only")
