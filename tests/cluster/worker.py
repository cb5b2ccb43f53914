"""A confman instance in its own OS process, driven by the multi-process tests.

Run as ``python -m tests.cluster.worker '<json config>'`` from the repository root. It
prints one line per event on stdout (``READY``, ``CONVERGED``, ``DONE ...``, ``LEADER
...``) and obeys lines on stdin (``STOP``; EOF means stop too). On stop it writes what it
saw to ``config["out"]`` as JSON.

Config keys: ``db``, ``redis`` (optional), ``mqtt`` (a broker URL, for ``bus="mqtt"``),
``cluster``, ``instance_id``, ``env`` (override variables), ``role`` (``listen``,
``increment``, ``crash_after_commit``, ``write``), ``bus`` (``redis``, ``postgres``,
``mqtt``, ``drop_half``, ``no_publish``, ``local``), ``drop_received`` (deliver only every
Nth notice received; 0: none), ``hub`` (extra `ConfigHub.connect` options, such as
``environment``), ``expect`` (``{"ns/key": version}`` of the instance's own documents,
its environment's where it has one, to announce ``CONVERGED``), ``expect_base`` (the
same for the base's documents), ``increments``, ``key``, ``write`` (role ``write``:
``{"keys", "rounds", "field", "prefix"}``: ``rounds`` times, every key at once, set
counters' ``field`` to ``<prefix><round>`` (``value``: the round) in the instance's own
environment), ``sets`` (role ``sets``: ``{"keys", "rounds"}``: ``rounds`` change sets, each
setting every key's ``value`` to the round; ``crash_in`` (optional): in that round, die by
SIGKILL while the set's transaction is being committed), ``snapshot`` (keys whose values
are recorded together at every emission, in ``snapshots``).

Besides ``seen`` (per ``ns/key``, the versions emitted) the result has ``seen_by_layer``
(per ``<environment>|ns/key``, '' for the base: the versions emitted of that
environment's document), ``versions`` (the same keys: the version held) and ``values``
(per ``ns/key``, the effective value as JSON, secrets masked).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from confman import ChangeBus, ChangeNotice, ConfigChange, ConfigHub
from confman.bus import NoticeHandler
from confman.bus.redis import RedisBus
from confman.cluster import ClusterOptions
from confman.manager import OWN

from .models import MANAGERS, CountersManager

log = logging.getLogger("confman.test.worker")


class DroppingBus(RedisBus):
    """Publishes only every other notice (``drop_half``) or none (``no_publish``)."""

    def __init__(self, url: str, *, prefix: str, keep_every: int) -> None:
        super().__init__(url, prefix=prefix)
        self.keep_every = keep_every
        self.count = 0

    async def publish(self, notice: ChangeNotice) -> None:
        self.count += 1
        if self.keep_every and self.count % self.keep_every == 0:
            await super().publish(notice)


def drop_received(bus: ChangeBus, keep_every: int) -> None:
    """Make ``bus`` hand the hub only every ``keep_every``-th notice it receives (none
    for 0): notices lost on the way, whatever the transport."""
    start = bus.start
    received = 0

    async def filtered_start(handler: NoticeHandler) -> None:
        def filtered(notice: ChangeNotice) -> None:
            nonlocal received
            received += 1
            if keep_every and received % keep_every == 0:
                handler(notice)

        await start(filtered)

    bus.start = filtered_start  # type: ignore[method-assign]


def transport_bus(mode: str, config: dict[str, Any]) -> ChangeBus:
    if mode == "postgres":
        from confman.bus.postgres import PostgresBus

        return PostgresBus(config["db"], prefix=config["cluster"])
    if mode == "mqtt":
        from confman.bus.mqtt import MqttBus

        return MqttBus(config["mqtt"], prefix=f"confman/{config['cluster']}")
    return RedisBus(config["redis"], prefix=config["cluster"])


def say(*parts: object) -> None:
    print(*parts, flush=True)


def stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.strip())
    loop.call_soon_threadsafe(queue.put_nowait, "STOP")


async def write_rounds(hub: ConfigHub, plan: dict[str, Any]) -> None:
    """Role ``write``: ``rounds`` times, change every key at once, in the instance's own
    environment (its overlay; the base without one)."""
    counters = hub.manager(CountersManager)
    field, prefix = plan["field"], plan.get("prefix", "")
    for i in range(1, int(plan["rounds"]) + 1):
        patch = {field: i if field == "value" else f"{prefix}{i}"}
        await asyncio.gather(
            *(counters.update(patch, key=key, retries=100) for key in plan["keys"])
        )


async def set_rounds(hub: ConfigHub, plan: dict[str, Any]) -> None:
    """Role ``sets``: each round one change set that sets every key's value to it."""
    counters = hub.manager(CountersManager)
    crash_in = plan.get("crash_in")
    for i in range(1, int(plan["rounds"]) + 1):
        cs = hub.change_set(actor="sets", reason=f"round {i}")
        for key in plan["keys"]:
            if key in counters:
                cs.update(counters, {"value": i}, key=key)
            else:
                cs.create(counters, key, {"value": i})
        if i == crash_in:

            async def crash(writes: Any, write_all: Any = hub.store.write_all) -> Any:
                task = asyncio.ensure_future(write_all(writes))
                await asyncio.sleep(0.002)  # the transaction is on its way
                os.kill(os.getpid(), 9)
                return await task

            hub.store.write_all = crash  # type: ignore[method-assign]
        await cs.commit()


def layer_versions(hub: ConfigHub) -> dict[str, int]:
    """``<environment>|ns/key`` → version held, for the base and the own environment."""
    held: dict[str, int] = {}
    for m in hub.managers():
        for k, _ in m.items():
            held[f"|{m.namespace}/{k}"] = m.version(k, environment=None)
            if hub.environment is not None:
                held[f"{hub.environment}|{m.namespace}/{k}"] = m.version(k)
    return held


async def main(config: dict[str, Any]) -> None:
    options: dict[str, Any] = dict(config.get("hub", {}))
    redis_url = config.get("redis")
    bus_mode = config.get("bus", "redis" if redis_url else "local")
    if bus_mode in ("drop_half", "no_publish"):
        options["bus"] = DroppingBus(
            redis_url, prefix=config["cluster"], keep_every=2 if bus_mode == "drop_half" else 0
        )
    elif bus_mode in ("redis", "postgres", "mqtt"):
        if bus_mode == "redis":
            options["redis_url"] = redis_url
        options["bus"] = transport_bus(bus_mode, config)
    if "drop_received" in config:
        drop_received(options["bus"], int(config["drop_received"]))
    if "cluster_options" in config:
        options["cluster_options"] = ClusterOptions(**config["cluster_options"])
    env = dict(config.get("env", {}))
    env.setdefault("CONFMAN_ENCRYPTION_KEY", config["key_material"])
    seen: dict[str, list[int]] = {}
    seen_by_layer: dict[str, list[int]] = {}
    expect: dict[str, int] = dict(config.get("expect", {}))
    expect_base: dict[str, int] = dict(config.get("expect_base", {}))
    commands: asyncio.Queue[str] = asyncio.Queue()
    threading.Thread(
        target=stdin_lines, args=(asyncio.get_running_loop(), commands), daemon=True
    ).start()

    latencies: list[float] = []
    snapshot_keys: list[str] = list(config.get("snapshot", []))
    snapshots: list[list[int]] = []
    hub_ref: list[ConfigHub] = []

    def record(change: ConfigChange[Any]) -> None:
        if snapshot_keys and change.key in snapshot_keys:
            counters = hub_ref[0].manager(CountersManager)
            snapshots.append([getattr(counters.find(k), "value", 0) for k in snapshot_keys])
        seen.setdefault(f"{change.namespace}/{change.key}", []).append(change.version)
        layer = f"{change.environment or ''}|{change.namespace}/{change.key}"
        seen_by_layer.setdefault(layer, []).append(change.version)
        latencies.append(time.time() - change.at.timestamp())

    def held(hub: ConfigHub, name: str, environment: Any = OWN) -> int:
        namespace, key = name.split("/", 1)
        return hub.by_namespace(namespace).version(key, environment=environment)

    async def watch_convergence(hub: ConfigHub) -> None:
        while expect or expect_base:
            if all(held(hub, k) >= v for k, v in expect.items()) and all(
                held(hub, k, None) >= v for k, v in expect_base.items()
            ):
                say("CONVERGED")
                return
            await asyncio.sleep(0.05)

    async with ConfigHub.connect(
        config["db"],
        env=env,
        env_files=(),
        managers=MANAGERS,
        instance_id=config["instance_id"],
        cluster=config["cluster"],
        **options,
    ) as hub:
        hub_ref.append(hub)
        for manager in hub.managers():
            manager.changes.subscribe(record)
        result: dict[str, Any] = {"instance_id": hub.instance_id, "pid": os.getpid()}
        hub.leadership.subscribe(lambda leading: say("LEADER", leading, hub.fencing_token))
        say("READY", hub.instance_id)
        watcher = asyncio.create_task(watch_convergence(hub))
        role = config.get("role", "listen")
        if role == "crash_after_commit":

            async def die(notice: ChangeNotice) -> None:
                os._exit(17)  # committed, never published

            hub._publish = die  # type: ignore[method-assign]
            await hub.manager(CountersManager).update({"value": 1}, key=config["key"])
        if role == "increment":
            counters = hub.manager(CountersManager)
            ok = failed = 0
            key = config.get("key", "shared")
            for _ in range(int(config["increments"])):
                try:
                    await counters.update(
                        lambda c: c.model_copy(update={"value": c.value + 1}),
                        key=key,
                        retries=1000,
                    )
                    ok += 1
                except Exception as e:
                    failed += 1
                    log.warning("increment failed: %s", e)
            result.update(ok=ok, failed=failed)
            say("DONE", ok, failed)
        if role == "write":
            await write_rounds(hub, config["write"])
            say("DONE")
        if role == "sets":
            await set_rounds(hub, config["sets"])
            say("DONE")
        while True:
            command = await commands.get()
            if command == "STOP":
                break
            if command == "STATUS":
                status = {
                    "applied_seq": hub.applied_seq,
                    "seq": hub._seq,
                    "gaps": sorted(hub._gaps),
                    "final": {
                        f"{m.namespace}/{k}": m.version(k)
                        for m in hub.managers()
                        for k, _ in m.items()
                    },
                    "catch_up_runs": hub.stats.catch_up_runs,
                    "tasks": len(hub._tasks),
                }
                say("STATUS", json.dumps(status))
        watcher.cancel()
        result["seen"] = seen
        result["seen_by_layer"] = seen_by_layer
        result["versions"] = layer_versions(hub)
        result["values"] = {
            f"{m.namespace}/{k}": v.model_dump(mode="json")
            for m in hub.managers()
            for k, v in m.items()
        }
        result["latencies"] = latencies
        result["snapshots"] = snapshots
        result["stats"] = {
            "catch_up_runs": hub.stats.catch_up_runs,
            "caught_up_changes": hub.stats.caught_up_changes,
            "notices_received": hub.stats.notices_received,
        }
        result["final"] = {
            f"{m.namespace}/{k}": m.version(k) for m in hub.managers() for k, _ in m.items()
        }
    Path(config["out"]).write_text(json.dumps(result))  # noqa: ASYNC240 - at exit
    say("STOPPED")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(json.loads(sys.argv[1])))
