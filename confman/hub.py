"""`ConfigHub`: one per process. Owns the engine, the bus, the background tasks and the
managers; nothing else creates any of them.

Catch-up. Every change has a ``seq`` from the change log's primary key. The hub remembers
the highest seq it has read and, after start-up, on every notice gap and every
``catch_up_interval`` seconds, reads the rows after it. A plain ``seq > last`` is not
enough on PostgreSQL: ids are handed out at INSERT, but transactions commit in another
order, so a row with a lower id can appear after a higher one was read. The hub therefore
remembers every id it skipped over (a *gap*) and asks for those again until they appear
or ``gap_timeout`` passes (an id whose transaction rolled back never appears). Managers
apply a row only if its version is newer than what they hold, so reading a change twice
never emits it twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .bus import ChangeBus, ChangeNotice, LocalBus
from .exceptions import ConfmanError, NotFound, StoreUnavailable
from .secrets import KeyRing
from .sources import DotEnvSource, EnvironmentSource, OverrideSource
from .store import DEFAULT_DATABASE_URL, ConfigStore, LoggedChange, check_schema, create_engine
from .store.engine import normalize_url, sqlite_path

if TYPE_CHECKING:
    from .manager import ConfigurationManager, Problem

__all__ = ["ConfigHub", "HubStats", "registered_managers"]

M = TypeVar("M", bound="ConfigurationManager[Any]")
log = logging.getLogger("confman.hub")

ENTRY_POINT_GROUP = "confman.managers"


def registered_managers() -> list[type[ConfigurationManager[Any]]]:
    """Managers announced through the ``confman.managers`` entry-point group."""
    found: list[type[ConfigurationManager[Any]]] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except Exception:  # one broken plugin must not take the others down
            log.exception("cannot load manager entry point %s", ep.value)
    return found


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class HubStats:
    catch_up_runs: int = 0
    caught_up_changes: int = 0
    notices_received: int = 0
    publish_failures: int = 0
    store_errors: int = 0


class ConfigHub:
    """The process-wide owner of confman's resources. Use `ConfigHub.connect`."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        bus: ChangeBus,
        sources: Sequence[OverrideSource],
        keyring: KeyRing,
        instance_id: str,
        catch_up_interval: float,
        gap_timeout: float,
    ) -> None:
        self.engine = engine
        self.store = ConfigStore(engine)
        self.bus = bus
        self.sources = tuple(sources)
        self.keyring = keyring
        self.instance_id = instance_id
        self.stats = HubStats()
        self.catch_up_interval = catch_up_interval
        self.gap_timeout = gap_timeout
        self._managers: dict[type[Any], ConfigurationManager[Any]] = {}
        self._by_namespace: dict[str, ConfigurationManager[Any]] = {}
        self._seq = 0
        self._gaps: dict[int, float] = {}  # skipped seq -> give up at (monotonic)
        self._catch_up_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def connect(
        cls,
        database_url: str = DEFAULT_DATABASE_URL,
        *,
        env: Mapping[str, str] | None = None,
        env_files: Sequence[str | Path] = (".env", "local.env"),
        instance_id: str | None = None,
        managers: Iterable[type[ConfigurationManager[Any]]] | None = None,
        bus: ChangeBus | None = None,
        encryption_keys: Sequence[str] | None = None,
        catch_up_interval: float = 2.0,
        gap_timeout: float = 60.0,
        engine_options: Mapping[str, Any] | None = None,
    ) -> _Connection:
        """Open a hub: ``async with ConfigHub.connect(url) as hub: ...``.

        Args:
            database_url: SQLAlchemy URL; ``postgresql://`` and ``sqlite://`` get their
                async drivers. The schema must be at the migrations' head.
            env: the process environment to read overrides (and
                ``CONFMAN_ENCRYPTION_KEY``) from; ``os.environ`` when ``None``.
            env_files: env files in ascending precedence, relative to the working
                directory; missing files are skipped.
            instance_id: this instance's name in change records; unique by default.
            managers: managers to load at start (and the managers they require); by
                default every manager registered under the ``confman.managers`` entry
                points, confman's own included.
            bus: a `ChangeBus`; by default a `LocalBus` shared by the hubs of this
                process on the same database.
            encryption_keys: Fernet keys, newest first; by default from
                ``CONFMAN_ENCRYPTION_KEY``, or for SQLite a key file beside the database.
            catch_up_interval: seconds between change-log reads in the background.
            gap_timeout: how long a skipped change-log id is looked for again.
            engine_options: extra keyword arguments for SQLAlchemy's engine.
        """
        environment = dict(os.environ if env is None else env)
        sources: list[OverrideSource] = [DotEnvSource(p) for p in env_files]
        sources.append(EnvironmentSource(environment))
        db_file = sqlite_path(database_url)
        key_file = db_file.with_suffix(".key") if db_file is not None else None
        keyring = (
            KeyRing(encryption_keys, key_file=key_file)
            if encryption_keys is not None
            else KeyRing.from_environment(environment, key_file=key_file)
        )
        url = normalize_url(database_url)
        engine = create_engine(url, **dict(engine_options or {}))
        hub = cls(
            engine,
            bus=bus or LocalBus(url.render_as_string(hide_password=True)),
            sources=sources,
            keyring=keyring,
            instance_id=instance_id or _default_instance_id(),
            catch_up_interval=catch_up_interval,
            gap_timeout=gap_timeout,
        )
        return _Connection(hub, registered_managers() if managers is None else list(managers))

    async def _start(self, managers: Sequence[type[ConfigurationManager[Any]]]) -> None:
        try:
            await check_schema(self.engine)
        except (OSError, SQLAlchemyError) as e:
            raise StoreUnavailable(f"cannot open the database: {e}") from e
        # Read the high-water mark before loading documents, so that anything committed
        # while we load is read again by catch-up (and skipped if already applied).
        self._seq = await self.store.max_seq()
        # A transaction may still be committing below that mark: treat recent holes as gaps.
        low = max(0, self._seq - 1000)
        self._note_gaps(await self.store.seqs_between(low, self._seq), low=low, high=self._seq)
        for cls in managers:
            await self.load(cls)
        await self.bus.start(self._on_notice)
        self._spawn(self._catch_up_loop(), name="confman-catch-up")

    async def close(self) -> None:
        """Stop every background task and release the bus and the engine. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.bus.close()
        for manager in self._managers.values():
            manager._close()
        await self.engine.dispose()

    # ----------------------------------------------------------------- managers

    async def load(self, cls: type[M]) -> M:
        """Load ``cls`` (and what it requires) if it is not loaded yet; return it."""
        existing = self._managers.get(cls)
        if existing is not None:
            return existing  # type: ignore[return-value]
        for required in cls.requires:
            await self.load(required)
        if cls.namespace in self._by_namespace:
            other = type(self._by_namespace[cls.namespace]).__name__
            raise ConfmanError(f"namespace {cls.namespace!r} is already managed by {other}")
        manager = cls(self)
        await manager._load()
        self._managers[cls] = manager
        self._by_namespace[cls.namespace] = manager
        return manager

    def manager(self, cls: type[M]) -> M:
        """The loaded instance of ``cls`` for this hub.

        Raises:
            NotFound: ``cls`` was not loaded at connect (pass it in ``managers=`` or
                ``await hub.load(cls)``).
        """
        found = self._managers.get(cls)
        if found is None:
            raise NotFound(
                f"{cls.__name__} is not loaded on this hub; pass it to "
                f"ConfigHub.connect(managers=[...]) or `await hub.load({cls.__name__})`"
            )
        return found  # type: ignore[return-value]

    def managers(self) -> list[ConfigurationManager[Any]]:
        return list(self._managers.values())

    def by_namespace(self, namespace: str) -> ConfigurationManager[Any]:
        found = self._by_namespace.get(namespace)
        if found is None:
            known = ", ".join(sorted(self._by_namespace)) or "none"
            raise NotFound(f"unknown namespace {namespace!r}; known: {known}")
        return found

    def problems(self) -> list[Problem]:
        return [p for m in self._managers.values() for p in m.problems()]

    @property
    def applied_seq(self) -> int:
        """Every change with a seq up to this one has been applied (or was never there)."""
        return min([self._seq, *(s - 1 for s in self._gaps)])

    # ----------------------------------------------------------------- fan-out

    async def _publish(self, notice: ChangeNotice) -> None:
        try:
            await self.bus.publish(notice)
        except Exception:
            self.stats.publish_failures += 1
            log.exception("publishing %s failed; other instances will catch up", notice)

    def _on_notice(self, notice: ChangeNotice) -> None:
        if notice.origin == self.instance_id or self._closed:
            return
        self.stats.notices_received += 1
        manager = self._by_namespace.get(notice.namespace)
        if manager is not None:
            self._spawn(self._apply_notice(manager, notice), name="confman-notice")

    async def _apply_notice(self, manager: ConfigurationManager[Any], notice: ChangeNotice) -> None:
        try:
            await manager._on_notice(notice)
        except StoreUnavailable as e:
            self.stats.store_errors += 1
            log.warning(
                "cannot load %s/%s yet (%s); catch-up will", notice.namespace, notice.key, e
            )

    def _spawn(self, coro: Any, *, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------- catch-up

    async def catch_up(self) -> int:
        """Read the change log for everything missed; return how many rows were read."""
        async with self._catch_up_lock:
            self.stats.catch_up_runs += 1
            total = 0
            while True:
                batch = await self.store.changes_since(self._seq, also=list(self._gaps))
                if not batch:
                    break
                total += len(batch)
                await self._apply_batch(batch)
                if len(batch) < 1000:
                    break
            now = time.monotonic()
            for seq, deadline in list(self._gaps.items()):
                if deadline < now:
                    del self._gaps[seq]
            self.stats.caught_up_changes += total
            return total

    async def _apply_batch(self, batch: list[LoggedChange]) -> None:
        seen = [c.record.seq for c in batch]
        for seq in seen:
            self._gaps.pop(seq, None)
        high = max(seen)
        if high > self._seq:
            self._note_gaps([s for s in seen if s > self._seq], low=self._seq, high=high)
            self._seq = high
        by_namespace: dict[str, list[LoggedChange]] = {}
        for change in batch:
            by_namespace.setdefault(change.record.namespace, []).append(change)
        for namespace, changes in by_namespace.items():
            manager = self._by_namespace.get(namespace)
            if manager is not None:
                await manager._catch_up(changes)

    def _note_gaps(self, present: Iterable[int], *, low: int, high: int) -> None:
        have = set(present)
        deadline = time.monotonic() + self.gap_timeout
        for seq in range(low + 1, high + 1):
            if seq not in have:
                self._gaps.setdefault(seq, deadline)

    async def _catch_up_loop(self) -> None:
        delay = self.catch_up_interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.catch_up()
                delay = self.catch_up_interval
            except StoreUnavailable as e:
                self.stats.store_errors += 1
                delay = min(delay * 2, 30.0)
                log.warning("catch-up failed (%s); retrying in %.1fs", e, delay)
            except Exception:
                log.exception("catch-up failed unexpectedly; retrying")


class _Connection:
    """``async with ConfigHub.connect(...)`` or ``hub = await ConfigHub.connect(...)``."""

    def __init__(self, hub: ConfigHub, managers: Sequence[type[ConfigurationManager[Any]]]):
        self._hub = hub
        self._managers = managers

    async def _open(self) -> ConfigHub:
        try:
            await self._hub._start(self._managers)
        except BaseException:
            await self._hub.close()
            raise
        return self._hub

    def __await__(self) -> Any:
        return self._open().__await__()

    async def __aenter__(self) -> ConfigHub:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._hub.close()
