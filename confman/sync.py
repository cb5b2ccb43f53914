"""A blocking facade over `ConfigHub` for synchronous applications (docs/sync.md).

Why: Flask, Django, Celery workers and scripts have no event loop, and a hub lives on
one (catch-up, bus and database work are asyncio tasks). `connect` starts a private
loop on a daemon thread (``confman-sync``), opens the hub there with
`ConfigHub.connect` (same arguments) and returns a `SyncHub`.

Reads (``current``, ``get``, ``keys``, ``version``, ``explain``, ...) are the async
manager's memory reads, made in the caller's thread: they never wait for the loop. The
loop thread publishes a value by one attribute or dict-slot assignment (atomic in
CPython), so a reader sees the old value or the new one, never a mix. Everything else
runs on the loop through ``run_coroutine_threadsafe`` and blocks, with a deadline
(`CallTimeout`, a `ConfmanError` and a `TimeoutError`); the coroutine's exceptions are
raised unchanged in the caller's thread. A blocking call made on the loop thread would
wait for itself: it raises `ConfmanError`. Subscribers run on one subscriber thread per
hub (or a given executor), never on the loop.

Fork: only the forking thread survives ``os.fork``, so a child has a copy of the hub but
no loop thread. Every call in the child, reads included (they would serve a frozen copy
forever), raises `ConfmanError` telling to connect again there (gunicorn: ``post_fork``;
Celery prefork: ``worker_process_init``); ``close`` only drops references.

Why one module past 500 lines: `SyncManager` mirrors each of the manager's coroutine
methods with its own typed blocking signature, so that mypy checks a sync caller's
arguments; splitting the mirror from the hub it calls through would only scatter it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel
from reactivex import Observable, abc

from .change import ChangeRecord, ConfigChange, FieldSource
from .changeset import ChangeSet
from .environments import Environment
from .exceptions import ConfmanError
from .hub import ConfigHub
from .manager import DEFAULT_KEY, ConfigurationManager, Problem, Resolved

__all__ = ["CallTimeout", "Subscription", "SyncHub", "SyncManager", "connect"]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")
X = TypeVar("X")

DEFAULT_START_TIMEOUT = 30.0
DEFAULT_CALL_TIMEOUT = 30.0
DEFAULT_CLOSE_TIMEOUT = 30.0
LOOP_THREAD_NAME = "confman-sync"
SUBSCRIBER_THREAD_NAME = "confman-sync-subscriber"

_live: weakref.WeakSet[SyncHub] = weakref.WeakSet()


class CallTimeout(ConfmanError, TimeoutError):
    """A blocking call did not finish within its timeout; it was cancelled."""


def _after_fork_in_child() -> None:
    for hub in list(_live):
        hub._forked, hub._ok = True, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_at_exit() -> None:
    """A hub left open is closed at exit (its loop thread is a daemon: without this
    it would be stopped mid-work, connections unreleased)."""
    for hub in list(_live):
        with contextlib.suppress(Exception):
            hub.close(timeout=5)


def connect(
    *args: Any,
    start_timeout: float = DEFAULT_START_TIMEOUT,
    call_timeout: float = DEFAULT_CALL_TIMEOUT,
    executor: Executor | None = None,
    **kwargs: Any,
) -> SyncHub:
    """Open a hub on a private event loop thread; block until it has started.

    ``args`` and ``kwargs`` go to `ConfigHub.connect` as they are. ``call_timeout`` is
    every blocking call's default deadline; ``executor`` runs subscribers instead of the
    hub's own subscriber thread.

    Raises:
        CallTimeout: the hub did not start within ``start_timeout`` seconds.
        Whatever `ConfigHub.connect` raises (`StoreUnavailable`, `UnknownEnvironment`...).
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_loop, args=(loop,), name=LOOP_THREAD_NAME, daemon=True)
    thread.start()

    async def start() -> ConfigHub:
        return cast(ConfigHub, await ConfigHub.connect(*args, **kwargs))

    future = asyncio.run_coroutine_threadsafe(start(), loop)
    try:
        hub = future.result(start_timeout)
    except BaseException as e:
        timed_out = isinstance(e, TimeoutError) and not future.done()
        future.cancel()
        _stop_loop(loop, thread, DEFAULT_CLOSE_TIMEOUT)
        if timed_out:
            raise CallTimeout(f"the hub did not start within {start_timeout}s") from None
        raise
    return SyncHub(hub, loop, thread, call_timeout=call_timeout, executor=executor)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread, timeout: float) -> None:
    with contextlib.suppress(RuntimeError):  # closed already
        loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)
    if thread.is_alive():
        log.warning("the confman-sync loop thread did not stop within %gs", timeout)


class Subscription(abc.DisposableBase):
    """What ``subscribe`` returns: ``dispose()`` (or ``close()``, or ``with``) ends it.
    A delivery queued before that but not yet started is dropped."""

    def __init__(self) -> None:
        self.disposed = False
        self._inner: abc.DisposableBase | None = None

    def dispose(self) -> None:
        self.disposed = True
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.dispose()

    close = dispose

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.dispose()


class SyncHub:
    """A started `ConfigHub` and the thread its loop runs on. Build one with `connect`."""

    def __init__(
        self,
        hub: ConfigHub,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        executor: Executor | None = None,
    ) -> None:
        self._hub: ConfigHub | None = hub
        self.loop = loop
        self.thread = thread
        self.call_timeout = call_timeout
        self._own_executor = executor is None
        self.executor: Executor = executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=SUBSCRIBER_THREAD_NAME
        )
        self._managers: dict[type[Any], SyncManager[Any]] = {}
        self._pid = os.getpid()
        self._forked = False
        self._closed = False
        self._ok = True  # neither closed nor forked: what every read checks
        self._closing = threading.Lock()
        _live.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "forked" if self._forked else "open"
        return f"<SyncHub {state} pid={self._pid}>"

    # ----------------------------------------------------------------- checks

    def _usable(self) -> ConfigHub:
        if self._ok and self._hub is not None:
            return self._hub
        if self._forked:  # set at fork (a flag, not getpid(): reads check it too)
            raise ConfmanError(
                f"this SyncHub was started in process {self._pid}; process {os.getpid()} "
                "is a fork of it and has no copy of its event loop thread. Call "
                "confman.sync.connect() again in the child (gunicorn: in post_fork; "
                "Celery prefork: in worker_process_init)"
            )
        if self._closed or self._hub is None:
            raise ConfmanError("this SyncHub is closed")
        return self._hub

    @property
    def hub(self) -> ConfigHub:
        """The async hub (use it only on `loop`, e.g. inside `run`)."""
        return self._usable()

    # ----------------------------------------------------------------- calls

    def call(self, coro: Awaitable[R], *, timeout: float | None = None) -> R:
        """Run ``coro`` on the hub's loop; block until done or ``timeout`` (seconds;
        ``call_timeout`` by default). Its exception is raised unchanged here.

        Raises:
            CallTimeout: not done in time (it is cancelled).
            ConfmanError: called on the loop thread (it would deadlock), after close,
                or in a forked child.
        """
        try:
            self._usable()
            if threading.get_ident() == self.thread.ident:
                raise ConfmanError(
                    "a blocking confman.sync call on the hub's own event loop thread (from "
                    "an async subscriber?) would wait for itself forever: await the async "
                    "manager's method there instead"
                )
        except BaseException:
            if isinstance(coro, Coroutine):
                coro.close()  # never awaited, and says nothing about it
            raise
        wait = self.call_timeout if timeout is None else timeout
        future = asyncio.run_coroutine_threadsafe(_awaited(coro), self.loop)
        try:
            return future.result(wait)
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError, or it just finished
                return future.result()
            future.cancel()
            raise CallTimeout(f"the call did not finish within {wait}s; cancelled") from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting
            raise

    def run(self, fn: Callable[[ConfigHub], Awaitable[R]], *, timeout: float | None = None) -> R:
        """``fn(hub)`` awaited on the loop: anything of the async API, e.g.
        ``sync_hub.run(lambda hub: hub.promote("staging", "production"))``."""

        async def go() -> R:
            return await fn(self._usable())

        return self.call(go(), timeout=timeout)

    def manager(self, cls: type[ConfigurationManager[T]]) -> SyncManager[T]:
        """The blocking view of the loaded ``cls`` (`NotFound` if not loaded)."""
        found = self._managers.get(cls)
        if found is None:
            found = self._managers[cls] = SyncManager(self, self._usable().manager(cls))
        else:
            self._usable()
        return found

    def load(
        self, cls: type[ConfigurationManager[T]], *, timeout: float | None = None
    ) -> SyncManager[T]:
        """Load ``cls`` on the running hub (`ConfigHub.load`) and return its view."""
        self.run(lambda hub: hub.load(cls), timeout=timeout)
        return self.manager(cls)

    def environments(self, *, timeout: float | None = None) -> list[Environment]:
        return self.run(lambda hub: hub.environments(), timeout=timeout)

    def catch_up(self, *, timeout: float | None = None) -> int:
        return self.run(lambda hub: hub.catch_up(), timeout=timeout)

    def check_ready(self, *, timeout: float | None = None) -> None:
        self.run(lambda hub: hub.check_ready(), timeout=timeout)

    def problems(self) -> list[Problem]:
        return self._usable().problems()

    @contextlib.contextmanager
    def change_set(
        self, *, actor: str | None = None, reason: str | None = None, timeout: float | None = None
    ) -> Iterator[ChangeSet]:
        """``with sync_hub.change_set(actor=...) as cs: cs.update(Manager, {...})``:
        members are collected in this thread and committed, blocking, at the end
        (`ChangeSet.commit`); the changes are in ``cs.changes`` after it."""
        cs = self._usable().change_set(actor=actor, reason=reason)
        yield cs
        self.call(cs.commit(), timeout=timeout)

    # ----------------------------------------------------------------- delivery

    def _deliver(
        self, executor: Executor | None, fn: Callable[[X], object], value: X, sub: Subscription
    ) -> None:
        """Run ``fn(value)`` on the subscriber thread (or ``executor``), guarded."""

        def run() -> None:
            if sub.disposed:
                return
            try:
                fn(value)
            except Exception:
                log.exception("a confman.sync subscriber raised; it stays subscribed")

        with contextlib.suppress(RuntimeError):  # shut down: the hub is closing
            (executor or self.executor).submit(run)

    # ----------------------------------------------------------------- lifecycle

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Close the hub, stop its loop and join the thread (within ``timeout``).
        Idempotent; in a forked child it only drops references."""
        if self._closed:
            return
        if self._forked:
            self._closed, self._ok, self._hub, self._managers = True, False, None, {}
            return
        if threading.get_ident() == self.thread.ident:
            raise ConfmanError("close a SyncHub from another thread than its event loop's")
        with self._closing:
            if self._closed:
                return
            deadline = time.monotonic() + timeout
            try:
                self.call(self._usable().close(), timeout=timeout)
            except Exception:
                log.exception("closing the hub failed; stopping its loop all the same")
            finally:
                self._closed, self._ok, self._hub = True, False, None
                _stop_loop(self.loop, self.thread, max(0.1, deadline - time.monotonic()))
                if self._own_executor:
                    self.executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> SyncHub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _awaited(awaitable: Awaitable[R]) -> R:
    return await awaitable


class SyncManager(Generic[T]):
    """The blocking view of one `ConfigurationManager[T]`; get it from `SyncHub.manager`.

    Reads are the async manager's memory reads, in the caller's thread. Blocking calls
    take the async method's arguments plus ``timeout`` (see `SyncHub.call`).
    """

    def __init__(self, sync_hub: SyncHub, manager: ConfigurationManager[T]) -> None:
        self.sync_hub = sync_hub
        self._manager = manager

    def __repr__(self) -> str:
        return f"<SyncManager {self._manager.namespace!r}>"

    @property
    def manager(self) -> ConfigurationManager[T]:
        """The async manager (its coroutines belong on the hub's loop)."""
        if not self.sync_hub._ok:
            self.sync_hub._usable()  # raises: closed, or in a forked child
        return self._manager

    # ----------------------------------------------------------------- reads (memory)

    @property
    def current(self) -> T:
        """The effective value of a singleton; a memory read."""
        if not self.sync_hub._ok:
            self.sync_hub._usable()
        return self._manager.current

    def get(self, key: str = DEFAULT_KEY) -> T:
        return self.manager.get(key)

    def find(self, key: str) -> T | None:
        return self.manager.find(key)

    def keys(self) -> list[str]:
        return [k for k, _ in self.items()]

    def items(self) -> list[tuple[str, T]]:
        """A list, taken at once (the loop thread may add keys meanwhile)."""
        for _ in range(9):
            with contextlib.suppress(RuntimeError):  # a key added while copying: again
                return list(self.manager.items())
        return list(self.manager.items())

    def __contains__(self, key: object) -> bool:
        return key in self.manager

    def version(self, key: str = DEFAULT_KEY, **options: Any) -> int:
        return self.manager.version(key, **options)

    def explain(self, key: str = DEFAULT_KEY) -> list[FieldSource]:
        return self.manager.explain(key)

    def problems(self) -> list[Problem]:
        return self.manager.problems()

    def validate(self, change: Mapping[str, Any] | T | Callable[[T], T], **options: Any) -> T:
        """`ConfigurationManager.validate`: a preview from memory, in this thread."""
        return self.manager.validate(change, **options)

    # ----------------------------------------------------------------- blocking calls

    def update(
        self, change: Mapping[str, Any] | T | Callable[[T], T], *, timeout: float | None = None,
        **options: Any,
    ) -> ConfigChange[T]:  # fmt: skip
        """`ConfigurationManager.update`; a function ``change`` runs on the loop thread."""
        return self.sync_hub.call(self.manager.update(change, **options), timeout=timeout)

    def create(
        self, key: str, value: Mapping[str, Any] | T, *, timeout: float | None = None,
        **options: Any,
    ) -> ConfigChange[T]:  # fmt: skip
        return self.sync_hub.call(self.manager.create(key, value, **options), timeout=timeout)

    def delete(self, key: str = DEFAULT_KEY, *, timeout: float | None = None, **options: Any
               ) -> ConfigChange[T]:  # fmt: skip
        return self.sync_hub.call(self.manager.delete(key, **options), timeout=timeout)

    def rollback(self, key: str = DEFAULT_KEY, *, timeout: float | None = None, **options: Any
                 ) -> ConfigChange[T]:  # fmt: skip
        return self.sync_hub.call(self.manager.rollback(key, **options), timeout=timeout)

    def reset(self, key: str = DEFAULT_KEY, *, timeout: float | None = None, **options: Any
              ) -> ConfigChange[T]:  # fmt: skip
        return self.sync_hub.call(self.manager.reset(key, **options), timeout=timeout)

    def history(self, key: str = DEFAULT_KEY, *, timeout: float | None = None, **options: Any
                ) -> list[ChangeRecord]:  # fmt: skip
        return self.sync_hub.call(self.manager.history(key, **options), timeout=timeout)

    def fetch(self, key: str, *, timeout: float | None = None) -> T | None:
        return self.sync_hub.call(self.manager.fetch(key), timeout=timeout)

    def resolve(self, key: str = DEFAULT_KEY, *, timeout: float | None = None, **options: Any
                ) -> Resolved[T]:  # fmt: skip
        return self.sync_hub.call(self.manager.resolve(key, **options), timeout=timeout)

    def preview(
        self, change: Mapping[str, Any] | T | Callable[[T], T] | None, *,
        timeout: float | None = None, **options: Any,
    ) -> T | None:  # fmt: skip
        return self.sync_hub.call(self.manager.preview(change, **options), timeout=timeout)

    def validate_rollback(
        self, key: str = DEFAULT_KEY, *, timeout: float | None = None, **options: Any
    ) -> T | None:
        return self.sync_hub.call(self.manager.validate_rollback(key, **options), timeout=timeout)

    # ----------------------------------------------------------------- subscribers

    def subscribe(
        self,
        callback: Callable[[ConfigChange[T]], object],
        *,
        key: str | None = None,
        executor: Executor | None = None,
    ) -> Subscription:
        """Call ``callback(change)`` for every change this instance applies (``key``'s
        only, when given) on the hub's subscriber thread, in order, or on ``executor``
        (in order if it has one worker). An exception is logged; it stays subscribed."""
        sub = Subscription()

        def on_change(change: ConfigChange[T]) -> None:
            if key is None or change.key == key:
                self.sync_hub._deliver(executor, callback, change, sub)

        sub._inner = self.manager.changes.subscribe(on_next=on_change)
        return sub

    def _hop(self, source: Observable[X], executor: Executor | None) -> Observable[X]:
        """``source`` with every notification moved to the subscriber thread."""

        def subscribe(
            observer: abc.ObserverBase[X], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            sub, deliver = Subscription(), self.sync_hub._deliver
            sub._inner = source.subscribe(
                on_next=lambda v: deliver(executor, observer.on_next, v, sub),
                on_error=lambda e: deliver(executor, observer.on_error, e, sub),
                on_completed=lambda: deliver(executor, lambda _: observer.on_completed(), 0, sub),
            )
            return sub

        return Observable(subscribe)

    @property
    def changes(self) -> Observable[ConfigChange[T]]:
        """`ConfigurationManager.changes` on the subscriber thread (`subscribe` takes an
        executor)."""
        return self._hop(self.manager.changes, None)

    def observe(self, key: str = DEFAULT_KEY, *, executor: Executor | None = None) -> Observable[T]:
        """`ConfigurationManager.observe`, delivered on the subscriber thread."""
        return self._hop(self.manager.observe(key), executor)

    def select(
        self, fn: Callable[[T], R], key: str = DEFAULT_KEY, *, executor: Executor | None = None
    ) -> Observable[R]:
        """`ConfigurationManager.select` (``fn`` runs on the loop), delivered on the
        subscriber thread."""
        return self._hop(self.manager.select(fn, key), executor)
