"""Fifty remote hubs in five OS processes follow 2,000 changes, made by a direct writer
and two remote writers, through a ``kill -9`` of the server and its restart on the same
port: every hub emits each key's versions in strictly increasing order, none twice, and
ends with the database's versions and values."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import httpx

from confman.managers import ModelProviderConfigurationManager

from ..cluster.helpers import workers
from ..support import connect
from .conftest import Spawn

MODULE = "tests.remote.fleet_worker"
KEYS = [f"fleet-{i}" for i in range(4)]
PROCESSES = 5
HUBS_PER_PROCESS = 10
DIRECT_WRITES = 800
REMOTE_WRITES = 600  # by each of two remote writers: 2,000 changes in all
KILL_AT = 900  # changes committed when the server is killed


def database_seq(url: str, token: str) -> int:
    try:
        answer = httpx.get(
            f"{url}/api/v1/cluster", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
    except httpx.HTTPError:
        return 0
    return int(answer.json()["database_seq"]) if answer.status_code == 200 else 0


async def test_fifty_remote_hubs_follow_2000_changes_through_a_server_kill(
    database_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    server = spawn(database_url)
    started = time.monotonic()
    with server.client("editor") as editor:
        for key in KEYS:
            answer = editor.put(
                f"/api/v1/namespaces/model_provider/documents/{key}",
                json={"type": "ollama", "base_url": "http://127.0.0.1:11434", "rpm_limit": 1},
            )
            assert answer.status_code == 201, answer.text
    listen = [
        {
            "role": "listen",
            "instance_id": f"listener{p}",
            "url": server.url,
            "token": server.tokens["viewer"],
            "hubs": HUBS_PER_PROCESS,
        }
        for p in range(PROCESSES)
    ]
    write = [
        {
            "role": "direct_write",
            "instance_id": "direct",
            "url": database_url,
            "env": {"CONFMAN_ENCRYPTION_KEY": server.env["CONFMAN_ENCRYPTION_KEY"]},
            "keys": KEYS,
            "writes": DIRECT_WRITES,
            "base": 100_000,
        },
        *(
            {
                "role": "remote_write",
                "instance_id": f"remote{w}",
                "url": server.url,
                "token": server.tokens["editor"],
                "keys": KEYS,
                "writes": REMOTE_WRITES,
                "base": 200_000 * (w + 1),
            }
            for w in range(2)
        ),
    ]
    with workers(listen, tmp_path, MODULE) as listeners:
        for w in listeners:
            await asyncio.to_thread(w.expect, "READY", 90)
        with workers(write, tmp_path, MODULE) as writers:
            for w in writers:
                await asyncio.to_thread(w.expect, "READY", 60)
            # Mid-run: kill -9 the server, then start it again on the same port.
            deadline = time.monotonic() + 120
            while database_seq(server.url, server.tokens["admin"]) < KILL_AT:
                assert time.monotonic() < deadline, "the writers made no progress"
                await asyncio.sleep(0.1)
            server.proc.kill()
            server.proc.wait(10)
            await asyncio.sleep(1.0)
            server = spawn(database_url, port=server.port, tokens=server.tokens)
            done = [await asyncio.to_thread(w.expect, "DONE", 180) for w in writers]
            written = [w.stop() for w in writers]
        assert [int(line.split()[1]) for line in done] == [
            DIRECT_WRITES,
            REMOTE_WRITES,
            REMOTE_WRITES,
        ]
        final_versions, final_values = await database_state(database_url, server.env)
        # At least every write that succeeded is a version (a write whose answer was lost
        # with the server may have been made again: more, never fewer).
        assert sum(final_versions.values()) >= len(KEYS) + DIRECT_WRITES + 2 * REMOTE_WRITES
        for w in listeners:
            w.send("EXPECT " + json.dumps(final_versions))
        for w in listeners:
            await asyncio.to_thread(w.expect, "CONVERGED", 120)
        results = [w.stop() for w in listeners]
    hubs = [hub for result in results for hub in result["hubs"]]
    assert len(hubs) == PROCESSES * HUBS_PER_PROCESS
    for hub in hubs:
        check_history(hub, final_versions, final_values)
        assert hub["drops"] >= 1 and hub["degraded_seen"], hub["instance_id"]  # the kill
        assert not hub["degraded"], hub["instance_id"]
    print(
        f"fleet: {time.monotonic() - started:.1f}s, versions {final_versions}, "
        f"writer retries {[w['failures'] for w in written]}, "
        f"resyncs {sum(h['resyncs'] for h in hubs)}"
    )


async def database_state(
    database_url: str, server_env: dict[str, str]
) -> tuple[dict[str, int], dict[str, int | None]]:
    """Each key's version and rpm_limit as the database holds them (a direct hub)."""
    env = {"CONFMAN_ENCRYPTION_KEY": server_env["CONFMAN_ENCRYPTION_KEY"]}
    async with connect(database_url, env, managers=[ModelProviderConfigurationManager]) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        return (
            {k: providers.version(k) for k in KEYS},
            {k: providers.get(k).rpm_limit for k in KEYS},
        )


def check_history(hub: dict[str, Any], versions: dict[str, int], values: dict[str, Any]) -> None:
    """One hub's emitted changes: per key strictly increasing (so no duplicates), and
    the state it ends with is the database's. Not that every version was emitted: the
    server does not stream every version while direct and remote writers race (a
    server-side bug: test_remote_stream.py's xfail race test)."""
    name = hub["instance_id"]
    for key in KEYS:
        seen: list[int] = hub["seen"].get(key, [])
        assert seen, f"{name} emitted nothing for {key}"
        bad = [(a, b) for a, b in itertools.pairwise(seen) if not a < b]
        assert not bad, f"{name} emitted {key} out of order or twice: {bad[:5]}"
        assert seen[-1] == versions[key], (name, key, seen[-3:], versions[key])
    assert hub["versions"] == versions, name
    assert hub["values"] == values, name
