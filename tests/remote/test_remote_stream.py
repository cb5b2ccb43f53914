"""The remote hub's stream beyond the plain case: events whose document is too large to
carry (read on their own, from the right layer), rollbacks to another layer's version,
and a server that goes silent without closing anything."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from confman import ConfigChange
from confman.managers import ModelProviderConfigurationManager
from confman.remote import RemoteHub

from ..api.conftest import server_env
from ..api.servers import EventStream, Server, event_data, unique
from ..support import connect
from .conftest import Spawn
from .support import until

MANAGERS = [ModelProviderConfigurationManager]
PATH = "/api/v1/namespaces/model_provider/documents/{}"
OLLAMA = {"type": "ollama", "base_url": "http://127.0.0.1:11434"}


def hub_of(server: Server, token: str, **options: Any) -> Any:
    options.setdefault("env", {})
    options.setdefault("env_files", [])
    return RemoteHub.connect(server.url, token=server.tokens[token], managers=MANAGERS, **options)


def new_environment(server: Server) -> str:
    name = unique("prod")
    with server.client("admin") as admin:
        answer = admin.post("/api/v1/environments", json={"name": name, "description": "t"})
        assert answer.status_code == 201, answer.text
    return name


async def test_large_documents_are_fetched_from_the_layer_their_event_names(
    database_url: str, spawn: Spawn
) -> None:
    """An environment's hub: a large base change and a large overlay change each come
    without their document (``data_omitted``); each is read from its own layer."""
    server = spawn(database_url, env={**server_env(), "CONFMAN_STREAM_MAX_EVENT_DATA": "300"})
    production = new_environment(server)
    key = unique("big")
    prod = {"environment": production}
    with server.client("editor") as editor:
        assert editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 1}).status_code == 201
        for limit in (50, 51, 52):  # the overlay's versions 1..3
            answer = editor.patch(PATH.format(key), params=prod, json={"rpm_limit": limit})
            assert answer.status_code == 200, answer.text
    async with hub_of(server, "viewer", environment=production) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        await hub.wait_streaming(10)
        assert providers.get(key).rpm_limit == 52
        seen: list[ConfigChange[Any]] = []
        providers.changes.subscribe(seen.append)
        base_models = [f"base-model-{i:02d}" for i in range(20)]
        with server.client("editor") as editor:
            answer = editor.patch(PATH.format(key), json={"models": base_models})
            assert answer.status_code == 200, answer.text  # the base's version 2
        await until(lambda: len(seen) >= 1, 10, "the base change")
        await asyncio.sleep(0.3)
        assert hub.remote_stats.fetched >= 1, hub.remote_stats  # it was read on its own
        assert providers.get(key).models == base_models, providers.get(key)
        assert providers.get(key).rpm_limit == 52
        overlay_models = [f"prod-model-{i:02d}" for i in range(20)]
        with server.client("editor") as editor:
            answer = editor.patch(PATH.format(key), params=prod, json={"models": overlay_models})
            assert answer.status_code == 200, answer.text  # the overlay's version 4
        await until(lambda: providers.get(key).models == overlay_models, 10, "the overlay")
        assert hub.remote_stats.fetched >= 2, hub.remote_stats
        assert not hub.degraded


async def test_a_rollback_of_the_base_from_an_environment_hub(
    database_url: str, spawn: Spawn
) -> None:
    """An admin's hub in an environment rolls the base back to one of its versions."""
    server = spawn(database_url)
    production = new_environment(server)
    key = unique("rb")
    prod = {"environment": production}
    with server.client("editor") as editor:
        assert editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 1}).status_code == 201
        assert editor.patch(PATH.format(key), json={"rpm_limit": 2}).status_code == 200
        assert editor.patch(PATH.format(key), params=prod, json={"tpm_limit": 70}).is_success
        assert editor.patch(PATH.format(key), params=prod, json={"tpm_limit": 71}).is_success
    async with hub_of(server, "admin", environment=production) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        change = await providers.rollback(key, to_version=1, environment=None)
        assert change.version == 3
    with server.client("viewer") as viewer:
        base = viewer.get(PATH.format(key), params={"environment": "base"})
        assert base.status_code == 200, base.text
        assert base.json()["value"]["rpm_limit"] == 1  # the base's version 1
        assert base.json()["value"]["tpm_limit"] is None  # not the overlay's


async def test_a_silent_server_is_noticed_and_followed_again(
    database_url: str, spawn: Spawn
) -> None:
    """The server stops (SIGSTOP: connections stay open, nothing comes): after
    ``stream_timeout`` of silence the hub is degraded, serving its values; once the
    server runs again the hub streams and catches up. Pings keep a quiet stream up."""
    env = {**server_env(), "CONFMAN_STREAM_PING_INTERVAL": "0.3"}
    server = spawn(database_url, env=env)
    key = unique("silent")
    with server.client("editor") as editor:
        assert editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 1}).status_code == 201
    options = {"stream_timeout": 1.5, "timeout": 2.0, "reconnect_delay": (0.05, 0.5)}
    async with hub_of(server, "viewer", **options) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        await hub.wait_streaming(10)
        await asyncio.sleep(3.0)  # quiet but pinged: still streaming
        assert not hub.degraded and hub.remote_stats.drops == 0, hub.remote_stats
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            await until(lambda: hub.degraded, 10, "the silence to be noticed")
            assert time.monotonic() - stopped < 5
            assert providers.get(key).rpm_limit == 1
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        with server.client("editor") as editor:
            assert editor.patch(PATH.format(key), json={"rpm_limit": 2}).status_code == 200
        await hub.wait_streaming(20)
        await until(lambda: providers.get(key).rpm_limit == 2, 10, "the change after")
        assert not hub.degraded


async def test_every_version_committed_elsewhere_is_streamed(
    database_url: str, spawn: Spawn
) -> None:
    """Right after the server's change-log poll, a direct writer commits versions 2 and 3
    (the server has not seen them) and at once a write through the server's API, If-Match
    3, makes version 4: the server catches up before that write, so the stream carries
    2 and 3 too and a hub following it emits 2, 3, 4. (With the writers racing it does
    not: see the next test.)"""
    server = spawn(database_url)
    key, other = unique("late"), unique("tick")
    with server.client("editor") as editor:
        for k in (key, other):
            assert editor.put(PATH.format(k), json={**OLLAMA, "rpm_limit": 1}).status_code == 201
    env = {"CONFMAN_ENCRYPTION_KEY": server.env["CONFMAN_ENCRYPTION_KEY"]}
    async with (
        hub_of(server, "viewer") as hub,
        connect(database_url, env, managers=MANAGERS) as direct,
        server.aclient("editor") as editor,
    ):
        providers = hub.manager(ModelProviderConfigurationManager)
        writer = direct.manager(ModelProviderConfigurationManager)
        await hub.wait_streaming(10)
        seen: list[ConfigChange[Any]] = []
        providers.changes.subscribe(seen.append)
        # Wait for the server's poll to find a change of another key: the next poll is
        # then about 2 s away, far more than what follows takes.
        await writer.update({"rpm_limit": 2}, key=other)
        await until(lambda: providers.version(other) == 2, 10, "the poll", interval=0.005)
        await writer.update({"rpm_limit": 2}, key=key)
        await writer.update({"rpm_limit": 3}, key=key)
        answer = await editor.put(
            f"/api/v1/layers/model_provider/{key}",
            json={"data": {**OLLAMA, "rpm_limit": 4}, "action": "update"},
            headers={"If-Match": '"3"'},
        )
        assert answer.status_code == 200, answer.text
        await until(lambda: providers.version(key) == 4, 10, "version 4")
        await asyncio.sleep(3.0)  # the server's change-log poll has run since
        assert [c.version for c in seen if c.key == key] == [2, 3, 4]


async def test_racing_direct_and_remote_writers_reach_a_hub_in_order(
    database_url: str, spawn: Spawn
) -> None:
    """A direct writer and a writer through the server change one key at once. The hub
    emits exactly what the server streams, in order, up to the last version. (Like any
    instance, the server may jump over versions committed close together: its manager
    applies the newest it is told of; a replay from the change log lists every one.)"""
    server = spawn(database_url)
    key = unique("race")
    with server.client("editor") as editor:
        assert editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 1}).status_code == 201
    env = {"CONFMAN_ENCRYPTION_KEY": server.env["CONFMAN_ENCRYPTION_KEY"]}
    rounds = 150
    async with (
        hub_of(server, "viewer") as hub,
        hub_of(server, "editor") as remote_writer,
        connect(database_url, env, managers=MANAGERS) as direct_writer,
        server.aclient("viewer") as raw_client,
        EventStream(raw_client, namespaces=["model_provider"]) as raw,
    ):
        providers = hub.manager(ModelProviderConfigurationManager)
        await hub.wait_streaming(10)
        seen: list[ConfigChange[Any]] = []
        providers.changes.subscribe(seen.append)

        async def write(writer: Any, base: int) -> None:
            manager = writer.manager(ModelProviderConfigurationManager)
            for i in range(rounds):
                await manager.update({"rpm_limit": base + i}, key=key, retries=100)

        await asyncio.gather(write(direct_writer, 1000), write(remote_writer, 5000))
        final = 1 + 2 * rounds
        await until(lambda: providers.version(key) == final, 30, "the last version")
        await asyncio.sleep(2.5)  # the server's change-log poll has run since
        on_the_wire = {
            event_data(e)["version"] for e in await raw.drain(0.5) if e.event == "change"
        }
    versions = [c.version for c in seen]
    assert versions == sorted(set(versions))  # per key strictly increasing, no duplicate
    assert versions[-1] == final
    # The hub emitted what the server sent, all of it and nothing else.
    assert set(versions) == on_the_wire


async def test_a_change_set_is_applied_whole_live_and_on_a_resume(server: Server) -> None:
    """Every emission of a change set's members sees all of them new, whether the set
    came live or was replayed from the change log after a reconnect."""
    from ..api.servers import TcpProxy

    keys = [unique("set") for _ in range(3)]
    with server.client("editor") as editor:
        for key in keys:
            answer = editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 1})
            assert answer.status_code == 201, answer.text

    def change_set(limit: int) -> None:
        members = [
            {"op": "update", "namespace": "model_provider", "key": k, "value": {"rpm_limit": limit}}
            for k in keys
        ]
        with server.client("editor") as editor:
            answer = editor.post("/api/v1/change-sets", json={"members": members})
            assert answer.status_code in (200, 201), answer.text

    proxy = TcpProxy("127.0.0.1", server.port)
    try:
        async with RemoteHub.connect(
            f"http://127.0.0.1:{proxy.port}", token=server.tokens["viewer"], managers=MANAGERS,
            env={}, env_files=[], reconnect_delay=(0.05, 0.5),
        ) as hub:  # fmt: skip
            providers = hub.manager(ModelProviderConfigurationManager)
            await hub.wait_streaming(10)
            states: list[tuple[int | None, ...]] = []
            providers.changes.subscribe(
                lambda _c: states.append(tuple(providers.get(k).rpm_limit for k in keys))
            )
            change_set(2)  # live
            await until(lambda: len(states) == 3, 10, "the live set")
            proxy.cut()
            await until(lambda: hub.degraded, 10, "the cut")
            change_set(3)  # while cut off: replayed on the resume
            proxy.restore()
            await until(lambda: len(states) == 6, 20, "the replayed set")
            await asyncio.sleep(0.3)
    finally:
        proxy.close()
    assert states == [(2, 2, 2)] * 3 + [(3, 3, 3)] * 3, states
