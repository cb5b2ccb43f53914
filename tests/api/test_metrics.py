"""``/metrics``: the documented families exist and move as requests and changes happen."""

from __future__ import annotations

import importlib.util
import secrets

import httpx

from .servers import Server, assert_problem, metric, metric_samples, unique, wait_for

DOC_ROUTE = "/api/v1/namespaces/{namespace}/documents/{key}"
CACHE = "/api/v1/namespaces/cache/documents/default"


def scrape(server: Server) -> str:
    answer = httpx.get(f"{server.url}/metrics", timeout=10)  # no token
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def test_documented_families_are_exposed(sqlite_server: Server) -> None:
    names = {name for name, _ in metric_samples(scrape(sqlite_server))}
    for family in (
        "confman_writes_total",
        "confman_conflicts_total",
        "confman_validation_failures_total",
        "confman_notifications_total",
        "confman_subscriber_errors_total",
        "confman_cache_hit_ratio",
        "confman_http_requests_total",
        "confman_event_reads_total",
    ):
        assert family in names, family


def test_write_conflict_and_refusal_counters_move(sqlite_server: Server) -> None:
    editor = sqlite_server.client("editor")
    version = editor.get(CACHE).json()["version"]
    before = scrape(sqlite_server)

    assert editor.patch(CACHE, json={"max_entries": 123}).status_code == 200
    assert_problem(
        editor.patch(CACHE, json={"max_entries": 1}, headers={"If-Match": str(version)}), 412
    )
    assert_problem(editor.patch(CACHE, json={"max_entries": -1}), 422)
    assert_problem(sqlite_server.client(None).get(CACHE), 401)
    after = scrape(sqlite_server)

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert moved("confman_writes_total", namespace="cache") == 1
    assert moved("confman_notifications_total", namespace="cache") == 1
    assert moved("confman_conflicts_total", namespace="cache") == 1
    assert moved("confman_validation_failures_total", namespace="cache") >= 1
    assert moved("confman_writes_total", namespace="router") == 0
    for status in ("200", "412", "422"):
        assert (
            moved("confman_http_requests_total", method="PATCH", route=DOC_ROUTE, status=status)
            == 1
        )
    assert moved("confman_http_requests_total", method="GET", route=DOC_ROUTE, status="401") == 1
    # The previous scrape is counted too, under its route.
    assert moved("confman_http_requests_total", method="GET", route="/metrics", status="200") >= 1


def test_routes_are_labelled_by_template_not_by_raw_path(sqlite_server: Server) -> None:
    key = unique("label")
    admin = sqlite_server.client("admin")
    assert_problem(admin.get(f"/api/v1/namespaces/model_provider/documents/{key}"), 404)
    assert admin.get(f"/no/such/{key}").status_code == 404
    text = scrape(sqlite_server)
    assert key not in text
    routes = {
        dict(labels).get("route")
        for name, labels in metric_samples(text)
        if name == "confman_http_requests_total"
    }
    assert DOC_ROUTE in routes


def test_propagation_lag_of_a_change_from_another_process(sqlite_server: Server) -> None:
    editor = sqlite_server.client("editor")
    count = "confman_propagation_lag_seconds_count"
    before = scrape(sqlite_server)
    # A change this server commits itself is not a propagation.
    assert editor.patch(CACHE, json={"max_entries": 5}).status_code == 200
    assert metric(scrape(sqlite_server), count, namespace="cache") == metric(
        before, count, namespace="cache"
    )

    sqlite_server.cli("set", "cache", "max_entries=77", "--actor", "elsewhere")
    wait_for(lambda: editor.get(CACHE).json()["value"]["max_entries"] == 77, timeout=10)
    after = scrape(sqlite_server)
    assert metric(after, count, namespace="cache") == metric(before, count, namespace="cache") + 1
    lag = metric(after, "confman_propagation_lag_seconds_sum", namespace="cache") - metric(
        before, "confman_propagation_lag_seconds_sum", namespace="cache"
    )
    assert 0 <= lag < 10, lag  # the server polls the change log every 2 s
    assert (
        metric(after, "confman_propagation_lag_seconds_bucket", namespace="cache", le="10.0") >= 1
    )


def test_virtual_key_cache_hit_ratio_moves(sqlite_server: Server) -> None:
    viewer = sqlite_server.client("viewer")
    unknown = "/api/v1/namespaces/virtual_key/documents/" + secrets.token_hex(32)

    def figures() -> tuple[float, float, float, float]:
        text = scrape(sqlite_server)
        known = metric(text, "confman_cache_hits_total", namespace="virtual_key", kind="known")
        negative = metric(text, "confman_cache_hits_total", namespace="virtual_key", kind="unknown")
        misses = metric(text, "confman_cache_misses_total", namespace="virtual_key")
        ratio = metric(text, "confman_cache_hit_ratio", namespace="virtual_key")
        lookups = known + negative + misses
        assert ratio == ((known + negative) / lookups if lookups else 0.0)
        return known, negative, misses, ratio

    start = figures()
    assert_problem(viewer.get(unknown), 404)  # a miss: read from the database
    first = figures()
    assert first[2] == start[2] + 1 and first[1] == start[1]
    assert_problem(viewer.get(unknown), 404)  # now answered from the negative cache
    second = figures()
    assert second[1] == first[1] + 1 and second[2] == first[2]
    assert second[3] > first[3]


def test_metrics_show_no_values(sqlite_server: Server) -> None:
    marker = f"m{secrets.token_hex(8)}:"
    editor = sqlite_server.client("editor")
    assert editor.patch(CACHE, json={"key_prefix": marker}).status_code == 200
    assert marker not in scrape(sqlite_server)


def test_made_up_methods_share_one_label(sqlite_server: Server) -> None:
    client = sqlite_server.client(None)
    statuses = [client.request(method, "/healthz").status_code for method in ("XYZZY1", "XYZZY2")]
    text = client.get("/metrics").text
    assert "XYZZY" not in text
    if importlib.util.find_spec("httptools") is not None:
        # uvicorn parses with httptools when it is installed (the api extra), and that
        # parser refuses a method it does not know before the app runs: nothing counted.
        assert statuses == [400, 400]
    else:  # h11 passes any method on; the app counts them all under one label
        assert 'method="OTHER"' in text
