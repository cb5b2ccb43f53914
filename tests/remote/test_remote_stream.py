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
from ..api.servers import Server, unique
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


async def test_a_change_the_server_learns_late_is_still_streamed(
    database_url: str, spawn: Spawn
) -> None:
    """A direct writer commits version 2 (the server learns of it only from its change-log
    poll); at once a write through the server's API, If-Match 2, makes version 3. The
    stream must carry version 2 too: a hub that resumed from an applied mark past it
    would otherwise never see it (the mark says every change up to it was sent)."""
    server = spawn(database_url)
    key = unique("late")
    with server.client("editor") as editor:
        assert editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 1}).status_code == 201
    env = {"CONFMAN_ENCRYPTION_KEY": server.env["CONFMAN_ENCRYPTION_KEY"]}
    async with hub_of(server, "viewer") as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        await hub.wait_streaming(10)
        seen: list[ConfigChange[Any]] = []
        providers.changes.subscribe(seen.append)
        async with connect(database_url, env, managers=MANAGERS) as direct:
            await direct.manager(ModelProviderConfigurationManager).update(
                {"rpm_limit": 2}, key=key
            )
        with server.client("editor") as editor:
            answer = editor.put(
                f"/api/v1/layers/model_provider/{key}",
                json={"data": {**OLLAMA, "rpm_limit": 3}, "action": "update"},
                headers={"If-Match": '"2"'},
            )
            assert answer.status_code == 200, answer.text
        await until(lambda: providers.version(key) == 3, 10, "version 3")
        await asyncio.sleep(3.0)  # the server's change-log poll (2 s) has run since
        assert [c.version for c in seen] == [2, 3], [c.version for c in seen]
