"""A benchmark process: ``python -m benchmarks.worker '<json config>'`` (from the repo root).

Roles (``config["role"]``):

``writers``
    B3: ``tasks`` asyncio tasks on one hub, each incrementing a counter ``increments``
    times with ``update(fn, retries=...)``; prints ``READY``, waits for ``GO`` on stdin,
    prints ``DONE <json>`` (commits, conflicts, seconds).
``listen``
    B4/B8: a hub (``transport``: the Redis bus by default, ``postgres`` or ``mqtt``)
    whose manager prints ``CHG <version> <perf_counter_ns>`` for every `ConfigChange`
    it emits; prints ``READY`` once subscribed.
``proto-listen``
    B4's prototype receiver on its transport (Redis SUBSCRIBE, PostgreSQL LISTEN, or an
    MQTT subscription): for each notice re-read the change-log row with asyncpg (or
    aiosqlite), validate it with the model, and print ``CHG <version> <perf_counter_ns>``.
``etcd-watch``
    E2's peer receiver: an etcd watch on one key (JSON gateway, `benchmarks.etcd`); for
    each put it decodes the value with the same pydantic model and prints
    ``CHG <mod_revision> <perf_counter_ns>``; ``READY`` once the watch is created.

``serve``, ``load``, ``sse``, ``patch``
    the HTTP figures' server, load generators and SSE clients (`benchmarks.http_roles`).
``remote-serve``, ``broadcast``, ``remote-listen``, ``fanout``
    the remote-mode figures' servers, remote hub and SSE clients (`benchmarks.remote_roles`).

Every role stops on ``STOP`` (or EOF) on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from typing import Any


def say(*parts: object) -> None:
    print(*parts, flush=True)


def stdin_queue(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str]:
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "STOP")

    threading.Thread(target=read, daemon=True).start()
    return lines


async def wait_for_line(lines: asyncio.Queue[str], wanted: str) -> str:
    while True:
        line = await lines.get()
        if line == wanted or line == "STOP":
            return line


def hub_options(config: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "env": {},
        "env_files": (),
        "encryption_keys": [config["key"]],
        "instance_id": config["name"],
    }
    transport = config.get("transport", "redis")
    if transport == "postgres":
        options["bus"] = "postgres"
        options["cluster"] = config["cluster"]
    elif transport == "mqtt":
        from confman.bus.mqtt import MqttBus

        options["bus"] = MqttBus(config["mqtt"], prefix=f"confman/{config['cluster']}")
        options["cluster"] = config["cluster"]
    elif config.get("redis"):
        options["redis_url"] = config["redis"]
        options["cluster"] = config["cluster"]
    options.update(config.get("hub", {}))
    return options


async def writers(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    from confman import ConcurrencyConflict, ConfigHub

    from .models import Counter, CountersManager

    def increment(c: Counter) -> Counter:
        return Counter(value=c.value + 1)

    async with ConfigHub.connect(
        config["db"], managers=[CountersManager], **hub_options(config)
    ) as hub:
        counters = hub.manager(CountersManager)
        keys: list[str] = config["keys"]
        failed = 0

        async def task(key: str) -> None:
            nonlocal failed
            for _ in range(config["increments"]):
                try:
                    await counters.update(increment, key=key, retries=10_000, actor=hub.instance_id)
                except ConcurrencyConflict:
                    failed += 1

        say("READY")
        if await wait_for_line(lines, "GO") == "STOP":
            return
        began = time.perf_counter()
        await asyncio.gather(*(task(k) for k in keys))
        took = time.perf_counter() - began
        say(
            "DONE "
            + json.dumps(
                {
                    "commits": counters.stats.writes,
                    "seconds": took,
                    "conflicts": counters.stats.conflicts,
                    "failed": failed,
                }
            )
        )
        await wait_for_line(lines, "STOP")


async def listen(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    from confman import ConfigHub
    from confman.managers.cache import CacheConfigurationManager

    clock = time.perf_counter_ns
    async with ConfigHub.connect(
        config["db"], managers=[CacheConfigurationManager], **hub_options(config)
    ) as hub:
        cache = hub.manager(CacheConfigurationManager)
        cache.changes.subscribe(lambda c: say(f"CHG {c.version} {clock()}"))
        bus = hub.bus
        wait = getattr(bus, "wait_connected", None)
        if wait is not None:
            await wait(10)
        say("READY")
        await wait_for_line(lines, "STOP")


async def proto_listen(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    from confman.managers.cache import CacheConfig

    from .raw import open_writer

    clock = time.perf_counter_ns
    reader = await open_writer(config["db"])
    notices: asyncio.Queue[bytes | str] = asyncio.Queue(maxsize=10_000)
    transport = config.get("transport", "redis")

    async def handle(raw: bytes | str) -> None:
        notice = json.loads(raw)
        data = await reader.read_change(notice["namespace"], notice["key"], notice["version"])
        CacheConfig.model_validate(data)
        say(f"CHG {notice['version']} {clock()}")

    async with contextlib.AsyncExitStack() as stack:
        if transport == "postgres":
            import asyncpg  # type: ignore[import-untyped]

            conn = await asyncpg.connect(config["db"].replace("+asyncpg", ""))
            stack.push_async_callback(conn.close)
            await conn.add_listener(config["channel"], lambda *a: notices.put_nowait(a[3]))
        elif transport == "mqtt":
            import aiomqtt

            host, port = config["mqtt"].split("//", 1)[1].rsplit(":", 1)
            client = await stack.enter_async_context(aiomqtt.Client(host, int(port)))
            await client.subscribe(config["channel"], qos=1)

            async def pump_mqtt() -> None:
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    await handle(message.payload)

            pump = asyncio.create_task(pump_mqtt())
            stack.callback(pump.cancel)
        else:
            from redis.asyncio import Redis

            redis_client: Redis = Redis.from_url(config["redis"])
            stack.push_async_callback(redis_client.aclose)
            pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(config["channel"])
            stack.push_async_callback(pubsub.aclose)

            async def pump_redis() -> None:
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await handle(message["data"])

            pump = asyncio.create_task(pump_redis())
            stack.callback(pump.cancel)

        async def receive() -> None:  # PostgreSQL: its callback queues the notices
            while True:
                await handle(await notices.get())

        task = asyncio.create_task(receive())
        say("READY")
        await wait_for_line(lines, "STOP")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await reader.close()


async def etcd_watch(config: dict[str, Any], lines: asyncio.Queue[str]) -> None:
    from confman.managers.cache import CacheConfig

    from .etcd import EtcdClient, event_value

    clock = time.perf_counter_ns
    client = EtcdClient(config["etcd"], connections=1)
    ready = asyncio.Event()

    async def receive() -> None:
        async with client.watch(config["etcd_key"]) as batches:
            ready.set()
            async for batch in batches:
                for event in batch:
                    _, value, revision = event_value(event)
                    CacheConfig.model_validate_json(value)
                    say(f"CHG {revision} {clock()}")

    task = asyncio.create_task(receive())
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():  # the watch failed (or ended) before it was created
        task.result()
        raise SystemExit("etcd watch ended")
    if not ready.is_set():
        raise SystemExit("etcd watch not created within 30 s")
    say("READY")
    await wait_for_line(lines, "STOP")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()


async def main(config: dict[str, Any]) -> None:
    lines = stdin_queue(asyncio.get_running_loop())
    role = config["role"]
    if role == "writers":
        await writers(config, lines)
    elif role == "listen":
        await listen(config, lines)
    elif role == "proto-listen":
        await proto_listen(config, lines)
    elif role == "etcd-watch":
        await etcd_watch(config, lines)
    elif role in ("serve", "load", "sse", "patch"):
        from . import http_roles

        await getattr(http_roles, role)(config, lines)
    elif role in ("remote-serve", "broadcast", "remote-listen", "fanout"):
        from . import remote_roles

        await getattr(remote_roles, role.replace("-", "_"))(config, lines)
    else:
        raise SystemExit(f"unknown role {role!r}")


def _loop_factory(config: dict[str, Any]) -> Any:
    """The HTTP servers run on the event loop `confman serve` runs on (uvloop when
    installed), the bare route and R2's broadcaster included: "the same uvicorn settings";
    and so do R2's SSE clients, on both sides alike."""
    if config["role"] not in ("serve", "remote-serve", "broadcast", "fanout"):
        return None
    from confman.api.serve import event_loop_factory

    return event_loop_factory()


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
        runner.run(main(config))
