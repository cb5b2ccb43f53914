"""One OS process of the remote fleet test (tests/remote/test_fleet.py).

Run as ``python -m tests.remote.fleet_worker '<json config>'`` from the repository root.
It prints ``READY`` once its hubs are up and ``DONE <ok>`` (writers) or ``CONVERGED``
(listeners); it obeys ``EXPECT <json {key: version}>`` (listeners: wait until every hub
holds these versions, then say ``CONVERGED``) and ``STOP`` (or EOF) on stdin. On stop it
writes what it saw to ``config["out"]`` as JSON.

Config keys: ``role`` (``listen``, ``remote_write``, ``direct_write``), ``url`` (the
server, or the database for ``direct_write``), ``token``, ``env`` (for a direct hub: the
encryption key), ``hubs`` (listeners: how many RemoteHubs in this process), ``keys``,
``writes`` and ``base`` (writers: that many writes, round-robin over ``keys``, each setting
``rpm_limit`` to ``base + i``), ``instance_id``, ``out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from typing import Any

from confman import ConcurrencyConflict, ConfigChange, ConfigHub, StoreUnavailable
from confman.managers import ModelProviderConfigurationManager
from confman.remote import RemoteHub

NS = "model_provider"
MANAGERS = [ModelProviderConfigurationManager]


def say(*parts: object) -> None:
    print(*parts, flush=True)


def stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.strip())
    loop.call_soon_threadsafe(queue.put_nowait, "STOP")


def remote(config: dict[str, Any], instance_id: str) -> Any:
    return RemoteHub.connect(
        config["url"],
        token=config["token"],
        env={},
        env_files=[],
        managers=MANAGERS,
        instance_id=instance_id,
        reconnect_delay=(0.2, 2.0),
        timeout=10.0,
    )


class Recorder:
    """Every ConfigChange one hub emitted, per key, in order."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}
        self.degraded_seen = False

    def __call__(self, change: ConfigChange[Any]) -> None:
        self.seen.setdefault(change.key, []).append(change.version)


async def listen(config: dict[str, Any], commands: asyncio.Queue[str]) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        hubs = []
        recorders = []
        for i in range(int(config["hubs"])):
            hub = await stack.enter_async_context(remote(config, f"{config['instance_id']}-{i}"))
            recorder = Recorder()
            hub.manager(ModelProviderConfigurationManager).changes.subscribe(recorder)
            hubs.append(hub)
            recorders.append(recorder)

        async def watch_degraded() -> None:
            while True:
                for hub, recorder in zip(hubs, recorders, strict=True):
                    if hub.degraded:
                        recorder.degraded_seen = True
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_degraded())
        say("READY")
        while (line := await commands.get()) != "STOP":
            if line.startswith("EXPECT "):
                expected: dict[str, int] = json.loads(line[len("EXPECT ") :])
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    if all(
                        hub.manager(ModelProviderConfigurationManager).version(key) == version
                        for hub in hubs
                        for key, version in expected.items()
                    ):
                        break
                    await asyncio.sleep(0.05)
                say("CONVERGED")
        watcher.cancel()
        result = []
        for hub, recorder in zip(hubs, recorders, strict=True):
            providers = hub.manager(ModelProviderConfigurationManager)
            keys = [k for k, _ in providers.items()]
            result.append(
                {
                    "instance_id": hub.instance_id,
                    "seen": recorder.seen,
                    "versions": {k: providers.version(k) for k in keys},
                    "values": {k: providers.get(k).rpm_limit for k in keys},
                    "degraded_seen": recorder.degraded_seen,
                    "degraded": hub.degraded,
                    "drops": hub.remote_stats.drops,
                    "resyncs": hub.remote_stats.resyncs,
                    "connects": hub.remote_stats.connects,
                }
            )
        return {"hubs": result}


async def write(config: dict[str, Any], commands: asyncio.Queue[str]) -> dict[str, Any]:
    if config["role"] == "direct_write":
        connection = ConfigHub.connect(
            config["url"], env=config.get("env", {}), env_files=[], managers=MANAGERS
        )
    else:
        connection = remote(config, config["instance_id"])
    ok = failures = 0
    async with connection as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        say("READY")
        keys: list[str] = config["keys"]
        for i in range(int(config["writes"])):
            key = keys[i % len(keys)]
            patch = {"rpm_limit": int(config["base"]) + i}
            while True:
                try:
                    await providers.update(patch, key=key, retries=50, actor=config["instance_id"])
                    ok += 1
                    break
                except (StoreUnavailable, ConcurrencyConflict):
                    # The server is away (killed and restarted by the test): try again.
                    failures += 1
                    await asyncio.sleep(0.1)
        say("DONE", ok)
        while await commands.get() != "STOP":
            pass
    return {"ok": ok, "failures": failures}


async def main(config: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()
    threading.Thread(target=stdin_lines, args=(loop, commands), daemon=True).start()
    if config["role"] == "listen":
        result = await listen(config, commands)
    else:
        result = await write(config, commands)
    return {"instance_id": config["instance_id"], **result}


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    outcome = asyncio.run(main(settings))
    with open(settings["out"], "w") as f:
        json.dump(outcome, f)
