"""confman.sync: a hub on its own loop thread, blocking calls, memory reads, subscribers
off the loop, and what a forked child may do."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.serving import make_server

import confman.sync
from confman import (
    ConcurrencyConflict,
    ConfigChange,
    ConfmanError,
    LocalBus,
    NotFound,
    StoreUnavailable,
    UnknownEnvironment,
    ValidationFailed,
)
from confman.sync import CallTimeout, SyncHub
from tests.models import ALL, Counter, CounterManager, Flags, FlagsManager, ItemsManager

from .support import own_database

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with own_database("sqlite", request, tmp_path) as url:
        yield url


def _connect(url: str, env: dict[str, str], **options: Any) -> SyncHub:
    options.setdefault("call_timeout", 10)
    return confman.sync.connect(url, env=env, env_files=(), managers=ALL, **options)


@pytest.fixture
def sync_hub(sqlite_url: str, hub_env: dict[str, str]) -> Iterator[SyncHub]:
    with _connect(sqlite_url, hub_env) as hub:
        yield hub


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == confman.sync.LOOP_THREAD_NAME]


def test_start_and_close(sqlite_url: str, hub_env: dict[str, str]) -> None:
    before = len(_loop_threads())
    hub = _connect(sqlite_url, hub_env)
    assert hub.thread.name == "confman-sync" and hub.thread.daemon and hub.thread.is_alive()
    assert hub.manager(FlagsManager).current == Flags()
    hub.close()
    assert not hub.thread.is_alive() and hub.loop.is_closed()
    assert len(_loop_threads()) == before
    hub.close()  # idempotent
    with pytest.raises(ConfmanError, match="closed"):
        hub.manager(FlagsManager).current  # noqa: B018


def test_start_errors_propagate_unchanged(sqlite_url: str, hub_env: dict[str, str]) -> None:
    before = len(_loop_threads())
    with pytest.raises(StoreUnavailable, match="cannot open the database"):
        confman.sync.connect("postgresql://postgres@127.0.0.1:1/nothing", env={}, managers=[])
    with pytest.raises(UnknownEnvironment):
        _connect(sqlite_url, hub_env, environment="nowhere")
    assert len(_loop_threads()) == before  # each failed start stopped its thread


class _SlowBus(LocalBus):
    async def start(self, handler: Any) -> None:
        await asyncio.sleep(10)


def test_a_start_past_its_timeout(sqlite_url: str, hub_env: dict[str, str]) -> None:
    before = len(_loop_threads())
    started = time.perf_counter()
    with pytest.raises(CallTimeout, match="did not start"):
        _connect(sqlite_url, hub_env, bus=_SlowBus("slow"), start_timeout=0.3)
    assert time.perf_counter() - started < 5
    assert len(_loop_threads()) == before


def test_a_hub_left_open_is_closed_at_exit(sqlite_url: str, hub_env: dict[str, str]) -> None:
    script = (  # its own exit hook, registered first, runs after confman.sync's
        "import atexit, sys\n"
        "left = {}\n"
        "atexit.register(lambda: print(left['hub']._closed, left['sync'].thread.is_alive()))\n"
        "import confman.sync\n"
        "from tests.models import FlagsManager\n"
        "sync = confman.sync.connect(sys.argv[1], env={'CONFMAN_ENCRYPTION_KEY': sys.argv[2]},"
        " env_files=(), managers=[FlagsManager])\n"
        "sync.manager(FlagsManager).update({'name': 'left open'})\n"
        "left.update(hub=sync.hub, sync=sync)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, sqlite_url, hub_env["CONFMAN_ENCRYPTION_KEY"]],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]  # the hub closed, its thread stopped


def test_reads_never_wait_for_the_loop(sync_hub: SyncHub) -> None:
    flags = sync_hub.manager(FlagsManager)
    flags.update({"name": "seen"})
    blocking = threading.Event()

    async def block_the_loop() -> None:
        blocking.set()
        time.sleep(1.0)  # noqa: ASYNC251 - on purpose: the loop thread does nothing else

    blocker = threading.Thread(target=sync_hub.call, args=(block_the_loop(),))
    blocker.start()
    assert blocking.wait(5)
    started = time.perf_counter()
    for _ in range(200):
        assert flags.current.name == "seen"
        assert flags.get().name == "seen" and flags.version() == 1
        assert "default" in flags and flags.keys() == ["default"]
        assert flags.explain() and flags.problems() == []
        assert flags.validate({"ratio": 0.1}).ratio == 0.1
    assert time.perf_counter() - started < 0.5
    assert blocker.is_alive()  # the loop was busy all along
    blocker.join()


def test_blocking_writes_and_their_exceptions(database_url: str, hub_env: dict[str, str]) -> None:
    with _connect(database_url, hub_env) as hub:
        flags = hub.manager(FlagsManager)
        change = flags.update({"enabled": True}, actor="ops", reason="launch")
        assert isinstance(change, ConfigChange) and change.version == 1
        assert flags.current.enabled  # applied before the call returned
        with pytest.raises(ConcurrencyConflict):
            flags.update({"ratio": 0.2}, expected_version=0)
        with pytest.raises(ValidationFailed) as refused:
            flags.update({"ratio": 5})
        assert "ratio" in str(refused.value)
        assert flags.version() == 1 and flags.current.ratio == 0.5
        assert [r.actor for r in flags.history()] == ["ops"]
        assert flags.rollback(to_version=1).unchanged
        items = hub.manager(ItemsManager)
        items.create("a", {"title": "A"})
        assert items.get("a").title == "A" and items.fetch("a") == items.get("a")
        assert items.preview({"weight": 3}, key="a") is not None
        with pytest.raises(NotFound):
            items.update({"weight": 2}, key="missing")
        items.delete("a")
        assert "a" not in items and items.find("a") is None


def test_a_call_past_its_timeout_is_cancelled(sync_hub: SyncHub) -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.perf_counter()
    with pytest.raises(CallTimeout) as timed_out:
        sync_hub.call(slow(), timeout=0.2)
    assert isinstance(timed_out.value, TimeoutError)
    assert isinstance(timed_out.value, ConfmanError)
    assert time.perf_counter() - started < 2
    assert cancelled.wait(2)
    assert sync_hub.manager(CounterManager).update({"value": 1}).version == 1  # still serving

    async def own_timeout() -> None:
        raise TimeoutError("the coroutine's own")

    with pytest.raises(TimeoutError, match="own") as own:
        sync_hub.call(own_timeout())
    assert not isinstance(own.value, CallTimeout)


def test_a_blocking_call_on_the_loop_thread_is_refused(sync_hub: SyncHub) -> None:
    flags = sync_hub.manager(FlagsManager)

    async def inside() -> Any:
        return flags.history()

    with pytest.raises(ConfmanError, match="event loop thread"):
        sync_hub.call(inside(), timeout=5)
    seen: list[BaseException] = []

    def on_loop(change: ConfigChange[Flags]) -> None:
        try:
            flags.update({"ratio": 0.3})
        except ConfmanError as e:
            seen.append(e)

    flags.manager.changes.subscribe(on_loop)  # an async subscriber: runs on the loop
    flags.update({"ratio": 0.1})
    assert len(seen) == 1 and "event loop thread" in str(seen[0])
    assert flags.current.ratio == 0.1


def _wait(condition: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_subscribers_run_on_the_subscriber_thread(sync_hub: SyncHub) -> None:
    flags = sync_hub.manager(FlagsManager)
    seen: list[tuple[int, str]] = []
    other: list[object] = []
    sub = flags.subscribe(lambda c: seen.append((c.version, threading.current_thread().name)))
    flags.subscribe(other.append, key="elsewhere")
    values: list[tuple[str, str]] = []
    flags.observe().subscribe(lambda v: values.append((v.name, threading.current_thread().name)))
    for n in range(1, 4):
        flags.update({"name": f"n{n}"})
    _wait(lambda: len(seen) == 3 and len(values) == 4)
    assert [v for v, _ in seen] == [1, 2, 3]  # in order
    names = {name for _, name in seen} | {name for _, name in values}
    assert len(names) == 1
    (name,) = names
    assert name.startswith(confman.sync.SUBSCRIBER_THREAD_NAME) and name != sync_hub.thread.name
    assert [v for v, _ in values] == ["basic", "n1", "n2", "n3"]
    assert other == []
    sub.dispose()
    flags.update({"name": "after"})
    _wait(lambda: len(values) == 5)
    assert len(seen) == 3


def test_subscribers_on_a_given_executor_and_slow_ones_do_not_stall(sync_hub: SyncHub) -> None:
    counter = sync_hub.manager(CounterManager)
    seen: list[str] = []
    release = threading.Event()

    def slow(change: ConfigChange[Counter]) -> None:
        release.wait(5)
        seen.append(threading.current_thread().name)

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine")
    with pool, counter.subscribe(slow, executor=pool):
        counter.update({"value": 1})
        started = time.perf_counter()
        counter.update({"value": 2})  # the first delivery still waits: no matter
        assert time.perf_counter() - started < 1
        release.set()
        _wait(lambda: len(seen) == 2)
    assert all(name.startswith("mine") for name in seen)


def test_one_executor_for_the_whole_hub(sqlite_url: str, hub_env: dict[str, str]) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="app")
    with pool, _connect(sqlite_url, hub_env, executor=pool) as hub:
        flags = hub.manager(FlagsManager)
        names: list[str] = []
        flags.changes.subscribe(lambda c: names.append(threading.current_thread().name))
        flags.update({"name": "x"})
        _wait(lambda: len(names) == 1)
        other = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="other")
        with other:
            flags.observe(executor=other).subscribe(
                lambda v: names.append(threading.current_thread().name)
            )
            _wait(lambda: len(names) == 2)
    assert names[0].startswith("app") and names[1].startswith("other")


def test_change_set_and_hub_calls(sync_hub: SyncHub) -> None:
    with sync_hub.change_set(actor="ops", reason="together") as cs:
        cs.update(FlagsManager, {"enabled": True})
        cs.update(CounterManager, {"value": 7})
    assert len(cs.changes) == 2
    assert sync_hub.manager(FlagsManager).current.enabled
    assert sync_hub.manager(CounterManager).current.value == 7
    assert sync_hub.environments() == []
    sync_hub.check_ready()
    assert sync_hub.catch_up() >= 0
    assert sync_hub.run(lambda hub: hub.compare(None, None)) is not None


def test_a_forked_child_is_told_to_connect_again(
    sync_hub: SyncHub, sqlite_url: str, hub_env: dict[str, str]
) -> None:
    flags = sync_hub.manager(FlagsManager)
    flags.update({"name": "parent"})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        outcome: dict[str, Any] = {}
        try:
            calls: list[tuple[str, Callable[[], object]]] = [
                ("read", lambda: flags.current),
                ("write", lambda: flags.update({"name": "child"})),
                ("manager", lambda: sync_hub.manager(FlagsManager)),
            ]
            for name, call in calls:
                try:
                    call()
                    outcome[name] = "no error"
                except ConfmanError as e:
                    outcome[name] = str(e)
            sync_hub.close()
            outcome["closed"] = "yes"
            with _connect(sqlite_url, hub_env) as again:  # what the message says to do
                fresh = again.manager(FlagsManager)
                outcome["again"] = [fresh.current.name, fresh.update({"name": "child"}).version]
        except BaseException as e:
            outcome["crash"] = repr(e)
        finally:
            os.write(write, json.dumps(outcome).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        outcome = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert outcome.pop("closed") == "yes", outcome
    assert outcome.pop("again") == ["parent", 2], outcome
    for message in outcome.values():
        assert "fork" in message and "connect() again in the child" in message
    sync_hub.catch_up()  # the parent is unaffected, and hears of the child's write
    assert flags.current.name == "child" and flags.version() == 2
    assert flags.update({"name": "still"}).version == 3


def test_under_a_threaded_wsgi_server(database_url: str, hub_env: dict[str, str]) -> None:
    writes = 20
    with _connect(database_url, hub_env) as hub:
        counter = hub.manager(CounterManager)

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            body = json.dumps({"value": counter.current.value}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]

        server = make_server("127.0.0.1", 0, app, threaded=True)
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        url = f"http://127.0.0.1:{server.server_port}/"
        done = threading.Event()
        reading = threading.Semaphore(0)

        def client() -> list[int]:
            seen: list[int] = []
            with httpx.Client(timeout=5) as http:
                while not done.is_set() or len(seen) < 5:
                    seen.append(http.get(url).json()["value"])
                    if len(seen) == 1:
                        reading.release()
            return seen

        try:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                clients = [pool.submit(client) for _ in range(4)]
                try:
                    for _ in clients:  # every client reads before the first write
                        assert reading.acquire(timeout=10)
                    for n in range(1, writes + 1):
                        counter.update({"value": n})
                finally:
                    done.set()
                results = [c.result(timeout=30) for c in clients]
            final = httpx.get(url).json()["value"]
        finally:
            server.shutdown()
            serving.join(5)
    for seen in results:
        assert seen[0] == 0 and all(0 <= v <= writes for v in seen)
        assert seen == sorted(seen), "a client saw a value go backwards"
    assert final == writes
