"""``/api/v1/cluster``: a lone instance, and two servers sharing PostgreSQL and Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import Spawn
from .servers import EventStream, Server, event_data, metric, unique, wait_for


def test_a_lone_instance(sqlite_server: Server) -> None:
    view = sqlite_server.client("viewer").get("/api/v1/cluster")
    assert view.status_code == 200, view.text
    body = view.json()
    assert body["redis"] is False and body["is_leader"] is False
    assert body["leader"] is None and body["fencing_token"] is None
    assert [i["instance_id"] for i in body["instances"]] == [body["instance_id"]]
    assert body["instances"][0]["degraded"] is False
    assert body["applied_seq"] <= body["database_seq"] and body["drift"] == []


def cluster_of(server: Server) -> dict[str, Any]:
    answer = server.client("viewer").get("/api/v1/cluster")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_servers_share_changes_through_redis(
    database_url: str, redis_url: str, cluster: str, spawn: Spawn
) -> None:
    fleet = ("--redis-url", redis_url, "--cluster", cluster)
    first = spawn(database_url, *fleet)
    second = spawn(database_url, *fleet, tokens=first.tokens)

    def both_listed() -> dict[str, Any] | None:
        view = cluster_of(first)
        ready = view["redis"] and len(view["instances"]) == 2 and view["leader"] is not None
        return view if ready else None

    view = wait_for(both_listed, timeout=30, interval=0.2)
    ids = {cluster_of(first)["instance_id"], cluster_of(second)["instance_id"]}
    assert len(ids) == 2
    assert {i["instance_id"] for i in view["instances"]} == ids
    assert view["leader"] in ids and isinstance(view["fencing_token"], int)
    views = [cluster_of(first), cluster_of(second)]
    assert [v["is_leader"] for v in views].count(True) == 1
    assert {v["leader"] for v in views} == {view["leader"]}
    (leader,) = [v["instance_id"] for v in views if v["is_leader"]]
    assert leader == view["leader"]

    # A change on the first reaches the second's stream through Redis, at once.
    key = unique("fleet")
    path = f"/api/v1/namespaces/model_provider/documents/{key}"
    notices = "confman_hub_notices_received_total"
    async with (
        first.aclient("editor") as editor,
        second.aclient("viewer") as viewer,
        EventStream(viewer) as stream,
    ):
        before = metric((await viewer.get("/metrics")).text, notices)
        body = {"type": "ollama", "base_url": "http://127.0.0.1:11434"}
        assert (await editor.put(path, json=body)).status_code == 201
        assert event_data(await stream.next())["key"] == key
        started = time.monotonic()
        answer = await editor.patch(path, json={"rpm_limit": 5})
        assert answer.status_code == 200, answer.text
        data = event_data(await stream.next())
        elapsed = time.monotonic() - started
        assert (data["key"], data["seq"]) == (key, answer.json()["change"]["seq"])
        assert elapsed < 1.5, elapsed  # the change-log poll alone takes up to 2 s
        after = metric((await viewer.get("/metrics")).text, notices)
        assert after >= before + 2  # it came as a Redis notice, not from the poll
        read = await viewer.get(path)
        assert read.json()["version"] == 2 and read.json()["value"]["rpm_limit"] == 5
