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

Environments and change sets: the hub keeps the list of environments (a base namespace
of its own, read at start and whenever it changes), lets each manager decide which
notices and rows concern it, and applies a change set's rows whole (`_holding`): a
member's notice wakes catch-up, which reads the whole set.

Remote mode (`confman.remote.RemoteHub`) is a subclass: the same managers over another
backend (`confman.backend`), with the stream in place of bus and catch-up.

Why one long module: start-up, catch-up with its gap tracking, notice coalescing, change
sets applied whole and snapshotting all order their work on the same seq cursor and
locks. The backend seam exists now (managers see ``hub.backend`` only); the planned split
of the cursor (a pure ``ChangeLogCursor``, ``shared/STYLE.md`` item 5) is the next move.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import ssl
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from .backend import DocumentBackend
from .bus import ChangeBus, ChangeNotice, CommitNotifyingBus, LocalBus, ReconnectingBus
from .change import BASE, ChangeRecord
from .environments import (
    ENVIRONMENT_VARIABLE,
    ENVIRONMENTS_NAMESPACE,
    Environment,
    UnknownEnvironment,
    check_environment_name,
    list_environments,
)
from .exceptions import ConfmanError, NotFound, StoreUnavailable
from .gcpause import full_collections_paused
from .limits import DEFAULT_LIMITS, Limits
from .retention import DatabaseRetention
from .sealed import seal, unseal
from .secrets import KeyRing
from .sources import DotEnvSource, EnvironmentSource, OverrideSource
from .store import DEFAULT_DATABASE_URL, ConfigStore, LoggedChange, StoredDocument, create_engine
from .store.engine import DEFAULT_DATABASE_TIMEOUT, normalize_url, sqlite_path

if TYPE_CHECKING:
    from reactivex import Observable

    from .change import ConfigChange
    from .changeset import ChangeSet
    from .cluster import ClusterNode, ClusterOptions, ClusterStatus, FleetReport, InstanceState
    from .compare import Comparison
    from .manager import ConfigurationManager, Problem
    from .snapshot import Snapshot

__all__ = ["ConfigHub", "HubStats", "registered_managers"]

M = TypeVar("M", bound="ConfigurationManager[Any]")
log = logging.getLogger("confman.hub")

ENTRY_POINT_GROUP = "confman.managers"

#: Seconds `ConfigHub.check_ready` (``/readyz``) waits for the database: short, so that a
#: silent database makes an instance unready within seconds. See docs/concepts.md.
DEFAULT_READINESS_TIMEOUT = 2.0
DATABASE_TIMEOUT_VARIABLE = "CONFMAN_DATABASE_TIMEOUT"
READINESS_TIMEOUT_VARIABLE = "CONFMAN_READINESS_TIMEOUT"


def _seconds(
    given: float | None, environment: Mapping[str, str], variable: str, default: float
) -> float:
    """``given``, else the environment's ``variable``, else ``default``: positive seconds."""
    source, raw = (
        ("argument", given) if given is not None else (variable, environment.get(variable))
    )
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        name = variable.removeprefix("CONFMAN_").lower()
        raise ConfmanError(f"{name} ({source}): must be a positive number of seconds, got {raw!r}")
    return value


def registered_managers() -> list[type[ConfigurationManager[Any]]]:
    """Managers announced through the ``confman.managers`` entry-point group."""
    found: list[type[ConfigurationManager[Any]]] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except Exception:  # one broken plugin must not take the others down
            log.exception("cannot load manager entry point %s", ep.value)
    return found


#: The transports ``ConfigHub.connect(bus=...)`` builds by name.
BUS_NAMES = ("local", "redis", "postgres", "mqtt")


def _build_bus(
    name: str | None,
    *,
    database_url: str,
    redis_url: str | None,
    cluster: str,
    environment: Mapping[str, str],
) -> ChangeBus:
    """The bus named ``name``; without a name, Redis with a ``redis_url``, else local."""
    if name is None:
        name = "local" if redis_url is None else "redis"
    if name == "local":
        return LocalBus(make_url(database_url).render_as_string(hide_password=True))
    if name == "redis":
        if redis_url is None:
            raise ConfmanError('bus="redis" needs redis_url="redis://..."')
        from .bus.redis import RedisBus  # the optional ``redis`` extra

        return RedisBus(redis_url, prefix=cluster)
    if name == "postgres":
        from .bus.postgres import PostgresBus  # the optional ``postgres`` extra

        return PostgresBus(database_url, prefix=cluster)
    if name == "mqtt":
        from .bus.mqtt import MqttBus  # the optional ``mqtt`` extra

        return MqttBus.from_environment(environment, prefix=cluster)
    raise ConfmanError(f"unknown bus {name!r}; one of {', '.join(BUS_NAMES)}, or a ChangeBus")


_live_hubs: weakref.WeakSet[ConfigHub] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A hub does not survive ``os.fork``: its connections, tasks and bus belong to the
    parent. Say so loudly; every database call of the copy raises the same message."""
    for hub in list(_live_hubs):
        if not hub._closed:
            hub._forked_from = hub._pid
            log.error(
                "process %d was forked from %d after its ConfigHub %s started: the copy "
                "receives no changes and refuses database work. Create the hub after "
                "forking (per worker), not before (e.g. gunicorn --preload).",
                os.getpid(),
                hub._pid,
                hub.instance_id,
            )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def local_layers(
    variables: Mapping[str, str],
    environment: str | None,
    env_files: Sequence[str | Path] | None,
) -> tuple[str | None, list[OverrideSource]]:
    """The environment an instance runs in (checked) and its local override sources:
    the env files (by default ``.env``, ``.env.<environment>``, ``local.env``), then the
    variables. The same in direct and remote mode."""
    stage = environment if environment is not None else variables.get(ENVIRONMENT_VARIABLE)
    stage = check_environment_name(stage) if stage else None
    if env_files is None:
        env_files = (".env", *((f".env.{stage}",) if stage else ()), "local.env")
    sources: list[OverrideSource] = [DotEnvSource(p) for p in env_files]
    sources.append(EnvironmentSource(variables))
    return stage, sources


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class HubStats:
    catch_up_runs: int = 0
    caught_up_changes: int = 0
    notices_received: int = 0
    sealed_applied: int = 0  # notices applied from the change they carried (no read)
    sealed_refused: int = 0  # sealed changes that did not open: read from the database
    publish_failures: int = 0
    store_errors: int = 0


class ConfigHub:
    """The process-wide owner of confman's resources. Use `ConfigHub.connect`."""

    #: Whether the backend puts back a secret sent masked as it was shown (a remote
    #: hub's server does, for tokens that read secrets masked); if not, a masked value
    #: written is refused as one pasted back by mistake.
    restores_masked_secrets: bool = False

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
        database_timeout: float = DEFAULT_DATABASE_TIMEOUT,
        readiness_timeout: float = DEFAULT_READINESS_TIMEOUT,
    ) -> None:
        self.engine = engine
        self.store = ConfigStore(engine, timeout=database_timeout)
        #: What managers load from and write to (`confman.backend`): here the database.
        self.backend: DocumentBackend = self.store
        self.readiness_timeout = readiness_timeout
        self.bus = bus
        if isinstance(bus, CommitNotifyingBus):
            # The database sends each write's notice at its commit: no publish after it.
            self.store.notify_on_commit(bus.notify_channel)
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
        self._pending_notices: dict[tuple[str, str, str], ChangeNotice] = {}
        self._late_gaps: dict[int, float] = {}  # expired gaps, still looked for now and then
        # Seqs applied outside catch-up (own writes, notices), above the catch-up cursor:
        # they count toward `applied_seq` once every seq below them is accounted for.
        self._applied_ahead: set[int] = set()
        self._catch_up_lock = asyncio.Lock()
        self._catch_up_now = asyncio.Event()  # the database answers again: don't wait
        self.store.on_recovered = self._catch_up_now.set
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._pid = os.getpid()
        self._forked_from: int | None = None  # set in a child forked after start
        _live_hubs.add(self)
        self.cluster_name = "confman"
        self.limits: Limits = DEFAULT_LIMITS  # document size and depth, for every write
        self.snapshot_path: Path | None = None
        self.snapshot_interval = 1.0
        self._snapshot: Snapshot | None = None  # set while degraded (database unreachable)
        self._snapshot_lock = asyncio.Lock()
        self.started_at = time.time()
        #: The environment this instance runs in (None: the base alone). Set before any
        #: manager is made: each reads it to know which documents it holds.
        self.environment: str | None = None
        #: The environments the registry lists, as last read (start-up, catch-up, and
        #: again whenever a name is not among them).
        self.known_environments: frozenset[str] = frozenset()
        # While a change set is applied here: its members' changes, emitted once every
        # member is in memory (see `_holding`).
        self._held_changes: list[tuple[ConfigurationManager[Any], ConfigChange[Any]]] | None = None
        self._held_applied: list[int] | None = None  # their seqs, counted once emitted
        self._cluster: ClusterNode | None = None  # with a redis_url: fleet membership
        self._retention: DatabaseRetention | None = None  # without: database-owned retention
        self._idle_leadership: Any = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def connect(
        cls,
        database_url: str = DEFAULT_DATABASE_URL,
        *,
        env: Mapping[str, str] | None = None,
        env_files: Sequence[str | Path] | None = None,
        environment: str | None = None,
        instance_id: str | None = None,
        managers: Iterable[type[ConfigurationManager[Any]]] | None = None,
        bus: ChangeBus | str | None = None,
        encryption_keys: Sequence[str] | None = None,
        catch_up_interval: float = 2.0,
        gap_timeout: float = 60.0,
        engine_options: Mapping[str, Any] | None = None,
        redis_url: str | None = None,
        cluster: str = "confman",
        cluster_options: ClusterOptions | None = None,
        snapshot_path: str | os.PathLike[str] | None = None,
        database_timeout: float | None = None,
        readiness_timeout: float | None = None,
        limits: Limits | None = None,
        token: str | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
    ) -> _Connection:
        """Open a hub: ``async with ConfigHub.connect(url) as hub: ...``.

        Args:
            database_url: SQLAlchemy URL; ``postgresql://`` and ``sqlite://`` get their
                async drivers. The schema must be at the migrations' head. Or the
                ``https://`` (``http://``) URL of a ``confman serve`` server: the hub is
                then a `confman.remote.RemoteHub`, with the same managers, reading
                through the server (docs/modes.md).
            env: the process environment to read overrides (and
                ``CONFMAN_ENCRYPTION_KEY``) from; ``os.environ`` when ``None``.
            env_files: env files in ascending precedence, relative to the working
                directory; missing files are skipped. By default ``.env``, then
                ``.env.<environment>`` (with an environment), then ``local.env``.
            environment: the environment this instance runs in (``production``, say):
                it applies the base and that environment's overlays, nothing of any
                other. By default ``CONFMAN_ENVIRONMENT`` from ``env``; without either,
                the base alone (as before environments existed). It must exist (see
                `create_environment`): a typo is an error, never a new environment.
            instance_id: this instance's name in change records; unique by default.
            managers: managers to load at start (and the managers they require); by
                default every manager registered under the ``confman.managers`` entry
                points, confman's own included.
            bus: a `ChangeBus`, or the name of one: ``"postgres"`` (LISTEN/NOTIFY on
                this PostgreSQL database, no other server), ``"mqtt"`` (an MQTT broker,
                configured by ``CONFMAN_MQTT_*`` in ``env``), ``"redis"`` (needs
                ``redis_url``) or ``"local"``. By default `RedisBus` with a
                ``redis_url``, else a `LocalBus` shared by the hubs of this process on
                the same database. See docs/cluster.md.
            encryption_keys: Fernet keys, newest first; by default from
                ``CONFMAN_ENCRYPTION_KEY``, or for SQLite a key file beside the database.
            catch_up_interval: seconds between change-log reads in the background.
            gap_timeout: how long a skipped change-log id is looked for again.
            engine_options: extra keyword arguments for SQLAlchemy's engine.
            redis_url: a ``redis://`` URL: notices fan out to every instance through
                a `RedisBus` (unless ``bus`` is given). See docs/cluster.md.
            cluster: the fleet's name; prefixes every Redis channel and key, so fleets
                (and test runs) sharing a Redis never see each other.
            cluster_options: leader lease, heartbeats, retention (`ClusterOptions`).
                Without ``redis_url`` only the retention settings apply: the instances
                sharing the database take turns through a lease row in it (see
                `confman.retention`); ``leader_election=False`` keeps this one out.
            snapshot_path: this instance's last-known-good snapshot file (secrets stay
                encrypted). Kept up to date; if the database is unreachable at start,
                the hub serves it and reports ``degraded`` until the database is back.
            database_timeout: seconds any database operation may take (connect, pool
                checkout, each statement, commit, and each operation as a whole); past
                it the operation fails with `StoreUnavailable`. By default
                ``CONFMAN_DATABASE_TIMEOUT`` from ``env``, else 10.
            readiness_timeout: seconds `check_ready` (``/readyz``) waits for the
                database. By default ``CONFMAN_READINESS_TIMEOUT`` from ``env``, else 2.
            limits: how large and how deeply nested a document may be (`Limits`);
                every write and ``validate`` refuses one past them.
            token: remote mode only: the server's bearer token (by default
                ``CONFMAN_TOKEN`` from ``env``).
            verify: remote mode only: verify the server's certificate (default), or
                the path of a CA bundle to verify it with.

        Raises:
            ConfmanError: a timeout that is not a positive number of seconds; an option
                of direct mode given with a server URL.
        """
        if database_url.startswith(("http://", "https://")):
            direct_only = {
                "bus": bus, "redis_url": redis_url, "cluster_options": cluster_options,
                "engine_options": engine_options,
            }  # fmt: skip
            given = [name for name, value in direct_only.items() if value is not None]
            if given:
                raise ConfmanError(
                    f"{', '.join(given)}: options of direct mode; a hub over a server "
                    "(an http(s) URL) takes none of them"
                )
            try:  # the one place the hub names its remote sibling
                from .remote import RemoteHub
            except ImportError as e:
                raise ConfmanError(
                    f"a server URL needs remote mode, which needs {e.name}: "
                    "pip install 'confman[remote]'"
                ) from e

            return RemoteHub.connect(
                database_url, token=token, environment=environment, env=env,
                env_files=env_files, managers=managers, instance_id=instance_id,
                snapshot_path=snapshot_path, encryption_keys=encryption_keys, verify=verify,
                timeout=database_timeout or 10.0, limits=limits,
            )  # fmt: skip
        variables = dict(os.environ if env is None else env)
        stage, sources = local_layers(variables, environment, env_files)
        db_file = sqlite_path(database_url)
        key_file = db_file.with_suffix(".key") if db_file is not None else None
        keyring = (
            KeyRing(encryption_keys, key_file=key_file)
            if encryption_keys is not None
            else KeyRing.from_environment(variables, key_file=key_file)
        )
        timeout = _seconds(
            database_timeout, variables, DATABASE_TIMEOUT_VARIABLE, DEFAULT_DATABASE_TIMEOUT
        )
        ready_timeout = _seconds(
            readiness_timeout, variables, READINESS_TIMEOUT_VARIABLE, DEFAULT_READINESS_TIMEOUT
        )
        url = normalize_url(database_url)
        engine = create_engine(url, timeout=timeout, **dict(engine_options or {}))
        if bus is None or isinstance(bus, str):
            bus = _build_bus(
                bus,
                database_url=url.render_as_string(hide_password=False),
                redis_url=redis_url,
                cluster=cluster,
                environment=variables,
            )
        hub = cls(
            engine,
            bus=bus,
            sources=sources,
            keyring=keyring,
            instance_id=instance_id or _default_instance_id(),
            catch_up_interval=catch_up_interval,
            gap_timeout=gap_timeout,
            database_timeout=timeout,
            readiness_timeout=ready_timeout,
        )
        hub.cluster_name = cluster
        hub.environment = stage
        hub.limits = limits or DEFAULT_LIMITS
        hub.snapshot_path = Path(snapshot_path) if snapshot_path is not None else None
        node: dict[str, Any] = {
            "prefix": cluster,
            "instance_id": hub.instance_id,
            "store": hub.store,
            "describe": hub._describe,
            "options": cluster_options,
        }
        if redis_url is not None:
            from .cluster import ClusterNode

            hub._cluster = ClusterNode.with_redis(redis_url, **node)
        elif engine.dialect.name == "postgresql" and not isinstance(bus, LocalBus):
            # A fleet bus without Redis: PostgreSQL elects and keeps the fleet's state.
            from .cluster import ClusterNode

            hub._cluster = ClusterNode.with_postgres(
                url.render_as_string(hide_password=False), **node
            )
        elif cluster_options is None or cluster_options.leader_election:
            hub._retention = DatabaseRetention.from_options(
                hub.store, cluster, hub.instance_id, cluster_options
            )
        return _Connection(hub, registered_managers() if managers is None else list(managers))

    async def _start(self, managers: Sequence[type[ConfigurationManager[Any]]]) -> None:
        try:
            await self._open_store()
        except StoreUnavailable as e:
            snapshot = self._read_snapshot()
            if snapshot is None:
                raise
            # Serve the last known good values; catch-up reconnects in the background.
            log.error(
                "database unreachable (%s); serving the snapshot %s of %s (seq %d), degraded",
                e,
                self.snapshot_path,
                snapshot.written_at.isoformat(),
                snapshot.applied_seq,
            )
            self._snapshot = snapshot
            self._seq = snapshot.applied_seq
        with full_collections_paused():  # see confman.gcpause
            for cls in managers:
                await self.load(cls)
        if isinstance(self.bus, ReconnectingBus):
            self.bus.set_reconnect_handler(self._on_bus_reconnect)
        await self.bus.start(self._on_notice)
        self._spawn(self._catch_up_loop(), name="confman-catch-up")
        if self._cluster is not None:
            await self._cluster.start()
        if self._retention is not None:
            self._spawn(self._retention.run_forever(), name="confman-retention")
        if self.snapshot_path is not None:
            self._spawn(self._snapshot_loop(), name="confman-snapshot")

    async def _open_store(self) -> None:
        try:
            await self.store.check_schema()
        except (OSError, SQLAlchemyError, StoreUnavailable) as e:
            raise StoreUnavailable(f"cannot open the database: {e}") from e
        # Read the high-water mark before loading documents, so that anything committed
        # while we load is read again by catch-up (and skipped if already applied).
        self._seq = await self.store.max_seq()
        # A transaction may still be committing below that mark: treat recent holes as gaps.
        low = max(0, self._seq - 1000)
        self._note_gaps(await self.store.seqs_between(low, self._seq), low=low, high=self._seq)
        await self._read_environments()
        if self.environment is not None and self.environment not in self.known_environments:
            raise UnknownEnvironment(self.environment, sorted(self.known_environments))

    # ----------------------------------------------------------------- environments

    async def _read_environments(self) -> list[Environment]:
        found = await list_environments(self.store)
        self.known_environments = frozenset(e.name for e in found)
        return found

    async def environments(self) -> list[Environment]:
        """Every environment, by name, with its description (read from the database)."""
        return await self._read_environments()

    async def check_environment(self, name: str) -> None:
        """Return if ``name`` is an environment; else raise `UnknownEnvironment`
        (listing the known ones). Reads the database only for a name not yet known.
        """
        if name in self.known_environments:
            return
        check_environment_name(name)
        if name not in {e.name for e in await self._read_environments()}:
            raise UnknownEnvironment(name, sorted(self.known_environments))

    async def create_environment(
        self, name: str, *, description: str = "", actor: str | None = None
    ) -> Environment:
        """Create the environment ``name`` (audited in the change log).

        Raises:
            ValidationFailed: ``name`` cannot name an environment.
            ConcurrencyConflict: it exists already.
        """
        from .environments import create_environment

        created = await create_environment(self, name, description=description, actor=actor)
        await self._read_environments()
        return created

    async def delete_environment(
        self,
        name: str,
        *,
        force: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Delete the environment ``name``; returns how many of its documents went with it.

        Raises:
            UnknownEnvironment: no such environment.
            EnvironmentNotEmpty: it holds documents and ``force`` is not set. With
                ``force``, every one is deleted in the same transaction, each audited.
        """
        from .environments import delete_environment

        removed = await delete_environment(self, name, force=force, actor=actor, reason=reason)
        await self._read_environments()
        return removed

    def change_set(self, *, actor: str | None = None, reason: str | None = None) -> ChangeSet:
        """Several writes, on any managers and environments, committed together::

            async with hub.change_set(actor="ops", reason="add a provider") as cs:
                cs.create(ModelProviderConfigurationManager, "p2", {...})
                cs.update(RouterConfigurationManager, {"aliases": {...}})

        One transaction, validated as a whole, applied whole by every instance (see
        `confman.changeset`). ``cs.preview()`` shows it without writing.
        """
        from .changeset import ChangeSet

        return ChangeSet(self, actor=actor, reason=reason)

    async def change_set_records(self, change_set: str) -> list[ChangeRecord]:
        """The change-log records of one change set, in the order it wrote them.

        Raises:
            NotFound: no such set (or retention pruned it).
        """
        found = [c.record for c in await self.store.change_set_changes(change_set)]
        if not found:
            raise NotFound(f"no change set {change_set!r} in the change log")
        return found

    async def rollback_change_set(
        self, change_set: str, *, actor: str | None = None, reason: str | None = None
    ) -> list[ConfigChange[Any]]:
        """Undo a change set as a new one: each member goes back to the version before
        it (a document it created is deleted). Version-checked: if a member's document
        changed since, nothing is written (`ChangeSetConflict`).
        """
        records = await self.change_set_records(change_set)
        async with self.change_set(actor=actor, reason=reason or f"roll back {change_set}") as cs:
            for r in records:
                manager = self.by_namespace(r.namespace)
                where = r.environment
                if r.version == 1:
                    cs.delete(manager, r.key, environment=where, expected_version=1)
                else:
                    cs.rollback(
                        manager, r.key, to_version=r.version - 1, environment=where,
                        expected_version=r.version,
                    )  # fmt: skip
        return cs.changes

    async def promote(
        self,
        source: str,
        target: str,
        *,
        namespaces: Iterable[str] | None = None,
        dry_run: bool = False,
        actor: str | None = None,
        reason: str | None = None,
    ) -> list[ConfigChange[Any]]:
        """Make ``target``'s stored effective values equal ``source``'s, by writing
        ``target``'s overlays (never the base), as one change set of action
        ``promote``; with ``dry_run`` only say what it would write. See
        `confman.promote`.
        """
        from .promote import promote

        return await promote(
            self, source, target, namespaces=namespaces, dry_run=dry_run, actor=actor,
            reason=reason,
        )  # fmt: skip

    async def compare(
        self,
        left: str | None,
        right: str | None,
        *,
        namespaces: Iterable[str] | None = None,
        everything: bool = False,
    ) -> Comparison:
        """Field by field, the stored effective values of two environments (``None``: the
        base) and the layer each came from: only the differences unless ``everything``.
        Secrets are compared by a fingerprint valid for this comparison only, never
        shown. Every loaded manager's namespace, or only ``namespaces``.

        Raises:
            UnknownEnvironment: either side names no environment.
            NotFound: a namespace no loaded manager owns.
        """
        from .compare import compare

        return await compare(self, left, right, namespaces=namespaces, everything=everything)

    async def close(self) -> None:
        """Stop every background task and release the bus and the engine. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._cluster is not None:
            await self._cluster.close()  # releases the leader lease at once
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._retention is not None:
            await self._retention.release()  # the next instance need not wait out the lease
        await self.bus.close()
        for manager in self._managers.values():
            manager._close()
        try:
            # Closing says goodbye to the server on each pooled connection, and asyncpg
            # waits command_timeout for each answer: over a silent network that is
            # database_timeout times the pool, so the whole of it gets one deadline.
            async with asyncio.timeout(self.store.timeout):
                await self.engine.dispose()
        except TimeoutError:
            log.warning(
                "the database did not answer within %gs while closing; connections dropped",
                self.store.timeout,
            )
            await self.engine.dispose(close=False)

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
        if self._snapshot is None:
            await manager._load()
        else:
            manager._load_snapshot(self._snapshot.namespace(cls.namespace))
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

    async def check_ready(self) -> None:
        """Check that the database answers within ``readiness_timeout`` seconds and that
        its schema is at the migrations' head (what ``/readyz`` reports).

        Raises:
            StoreUnavailable: no answer in time, or the database refused.
            SchemaOutOfDate: the schema is not at head.
        """
        try:
            await self.store.check_schema(timeout=self.readiness_timeout, probe=True)
        except (OSError, SQLAlchemyError) as e:  # not a lost connection: say so all the same
            raise StoreUnavailable(f"cannot check the database: {type(e).__name__}") from e

    @property
    def applied_seq(self) -> int:
        """Every change with a seq up to this one has been applied (or was never there).

        Follows catch-up, notices and this instance's own writes, but never passes a seq
        that catch-up skipped over (an open gap) and no change applied since filled.
        """
        gaps, ahead, cursor = sorted(self._gaps), self._applied_ahead, self._seq
        low = min(cursor, gaps[0] - 1) if gaps else cursor
        while True:
            nxt = low + 1
            if nxt in ahead:
                low = nxt
            elif nxt <= cursor and nxt not in self._gaps:
                # Read by catch-up up to the next open gap (or the cursor).
                above = bisect.bisect_right(gaps, nxt)
                low = min(gaps[above] - 1, cursor) if above < len(gaps) else cursor
            else:
                return low

    @property
    def caught_up_seq(self) -> int:
        """Catch-up has read every change-log row up to this seq (or it was never there).

        Unlike `applied_seq` it ignores what notices and own writes applied: a later
        catch-up run still reads the rows above it. A manager that remembers which rows
        it has emitted forgets them only below this mark.
        """
        return min([self._seq, *(s - 1 for s in self._gaps)])

    def _applied(self, seq: int) -> None:
        """A change was applied outside catch-up (an own write, a notice)."""
        if self._held_applied is not None:
            self._held_applied.append(seq)  # counted once emitted (see `_holding`)
            return
        if seq > self._seq or seq in self._gaps:
            self._applied_ahead.add(seq)

    async def changes_since(
        self,
        after_seq: int,
        *,
        namespaces: Iterable[str] | None = None,
        environments: Iterable[str | None] | None = None,
        limit: int = 1000,
        with_values: bool = True,
    ) -> list[ChangeRecord]:
        """Audit records with ``seq > after_seq``, oldest first, secrets masked: one page.

        For readers that resume from a seq they last saw (a stream client reconnecting);
        call again from the last record's seq until fewer than ``limit`` come back. The
        database filters by ``namespaces`` and returns at most ``limit`` records, so a
        page costs the same whatever the length of the log.
        Without ``with_values`` the records' ``before`` and ``after`` are None (cheaper).
        """
        where = None if environments is None else [BASE if e is None else e for e in environments]
        return await self.store.change_records(
            after_seq,
            namespaces=namespaces,
            environments=where,
            limit=limit,
            with_values=with_values,
        )

    async def change_log_bounds(self) -> tuple[int, int] | None:
        """The oldest and newest seq in the change log (None when it is empty).

        A reader resuming from a seq outside these (ahead of the newest: another or a
        restored database; before the oldest: pruned) cannot be given what it missed.
        """
        return await self.store.seq_bounds()

    # ----------------------------------------------------------------- fleet

    @property
    def is_leader(self) -> bool:
        """Whether this instance leads its cluster now (never without a ``redis_url``)."""
        return self._cluster is not None and self._cluster.is_leader

    @property
    def fencing_token(self) -> int | None:
        """The fencing token of this instance's current leadership, else ``None``."""
        return None if self._cluster is None else self._cluster.fencing_token

    @property
    def leadership(self) -> Observable[bool]:
        """``False`` now, then each change of leadership (a BehaviorSubject): told
        promptly when leadership is lost, before the lease could expire."""
        if self._cluster is not None:
            return self._cluster.leadership
        if self._idle_leadership is None:
            from reactivex.subject import BehaviorSubject

            self._idle_leadership = BehaviorSubject(False)
        subject: Observable[bool] = self._idle_leadership
        return subject

    async def cluster_status(self) -> ClusterStatus:
        """Live instances, the leader and drift, as Redis and the database see them.

        Raises:
            ConfmanError: the hub has no fleet: neither a ``redis_url`` nor, on
                PostgreSQL, a fleet bus (``bus="postgres"`` or ``"mqtt"``).
        """
        if self._cluster is None:
            raise ConfmanError(
                "cluster_status() needs a fleet: ConfigHub.connect(..., redis_url=...), or "
                'on PostgreSQL bus="postgres" (or "mqtt")'
            )
        return await self._cluster.status()

    async def run_housekeeping(self) -> int:
        """Run the leader's housekeeping now (retention); returns rows deleted.

        Without ``redis_url``: retention, if this instance holds (or can take) the
        database's retention lease.

        Raises:
            ConfmanError: without ``redis_url``, another instance holds the retention
                lease, or this one takes no part (``leader_election=False``).
            RuntimeError: not the leader.
            FencingTokenRejected: a newer leader has acted (this one steps down).
        """
        if self._cluster is not None:
            return await self._cluster.housekeeping()
        if self._retention is None:
            raise ConfmanError("this instance takes no part in retention (leader_election=False)")
        deleted = await self._retention.run()
        if deleted is None:
            raise ConfmanError(
                f"another instance holds the retention lease {self._retention.lease!r}"
            )
        return deleted

    async def wait_for_instances(self, change: ConfigChange[Any], timeout: float) -> FleetReport:
        """Wait up to ``timeout`` seconds until every live instance ``change`` concerns
        has answered it: applied it, or refused it (with its reason). A base change
        concerns every instance, an environment's change the instances in that
        environment (see `confman.cluster.fleet.concerned`); the writer always.

        Instances answer a change at once when its writer asked them to, as
        ``update(..., wait_for_instances=...)`` does; any other change they answer at
        their next catch-up run (every ``catch_up_interval`` seconds), so that a fleet
        does not send every instance's reply for every change nobody waits on."""
        if self._cluster is not None:
            manager = self._by_namespace.get(change.namespace)
            return await self._cluster.wait_for(
                change.namespace, change.key, change.version, timeout,
                environment=change.environment,
                inherits=manager.inherits if manager is not None else True,
            )  # fmt: skip
        from .cluster.fleet import FleetReport, InstanceReply

        return FleetReport(
            change.namespace,
            change.key,
            change.version,
            applied=(InstanceReply(self.instance_id, change.version),),
            refused=(),
            missing=(),
            environment=change.environment,
        )

    def _acknowledge(
        self, manager: ConfigurationManager[Any], key: str, environment: str = BASE
    ) -> None:
        """Tell a waiting writer which version of ``key``'s document in ``environment``
        we hold and whether we use it."""
        if self._cluster is None:
            return
        slot = manager._slot_of(environment)
        if slot is None:
            return
        version = manager._version_in(manager._entries.get(key), slot)
        if version == 0:
            return
        problem = manager._problems.get(key)
        reason = str(problem) if problem is not None and problem.version == version else None
        self._cluster.acknowledge(manager.namespace, key, version, reason, environment or None)

    def _describe(self) -> InstanceState:
        from .cluster import InstanceState
        from .cluster.fleet import namespace_digest

        namespaces = {}
        for manager in self._managers.values():
            values = dict(manager.items())
            # With an environment's overlays the base's version counts too: peers with
            # the same overlay but another base version are not comparable.
            layered = manager._slot_of(self.environment or BASE) == 1
            versions: dict[str, Any] = {}
            for k in values:
                entry = manager._entries.get(k)
                base = manager._version_in(entry, 0)
                versions[k] = [base, manager._version_in(entry, 1)] if layered else base
            namespaces[manager.namespace] = namespace_digest(
                versions, values, overridden=bool(manager._layering.override_keys())
            )
        return InstanceState(
            applied_seq=self.applied_seq,
            namespaces=namespaces,
            problems=tuple(str(p) for p in self.problems()),
            degraded=self.degraded,
            environment=self.environment,
        )

    @property
    def degraded(self) -> bool:
        """Started from the snapshot file because the database could not be reached,
        and not reconnected yet."""
        return self._snapshot is not None

    # ----------------------------------------------------------------- snapshot

    def _read_snapshot(self) -> Snapshot | None:
        if self.snapshot_path is None:
            return None
        from .snapshot import read_snapshot

        return read_snapshot(self.snapshot_path)

    async def _recover(self) -> None:
        """Leave degraded mode once the database answers again."""
        try:
            await self.store.check_schema()
        except (OSError, SQLAlchemyError) as e:
            raise StoreUnavailable(f"cannot open the database: {e}") from e
        self._snapshot = None
        log.warning("database reachable again; leaving degraded mode, catching up")

    def _snapshot_mark(self) -> tuple[Any, ...]:
        return (
            self.applied_seq,
            tuple(
                (m.namespace, tuple((k, e.version) for k, e in m._entries.items()))
                for m in self._managers.values()
            ),
        )

    def _build_snapshot(self) -> Snapshot:
        from .snapshot import Snapshot

        now = datetime.now(UTC)
        documents: list[StoredDocument] = []
        for manager in self._managers.values():
            for key, entry in list(manager._entries.items()):
                base = self._snapshot_base(manager, key, entry, now)
                if base is not None:
                    documents.append(base)
                if entry.overlay_version and manager._overlay_env is not None:
                    documents.append(
                        StoredDocument(
                            manager.namespace,
                            key,
                            entry.overlay_raw,
                            entry.overlay_version,
                            entry.updated_at or now,
                            None,
                            manager._overlay_env,
                        )
                    )
        return Snapshot(self.applied_seq, now, self.instance_id, tuple(documents))

    def _snapshot_base(
        self, manager: ConfigurationManager[Any], key: str, entry: Any, now: datetime
    ) -> StoredDocument | None:
        """The snapshot's row for ``entry``'s own-scope document (None: nothing stored,
        or a refused document, which is no "last known good")."""
        from .secrets import encrypt_document

        if entry.version == 0:
            return None
        data = None
        if entry.stored is not None:
            try:
                value = manager._model.model_validate(entry.stored)
            except ValueError:
                return None
            raw = value.model_dump(mode="python", exclude_unset=True)
            data = encrypt_document(raw, self.keyring)
        return StoredDocument(
            manager.namespace, key, data, entry.version, entry.updated_at or now, None,
            manager._scope,
        )  # fmt: skip

    async def write_snapshot(self) -> None:
        """Write the snapshot file now (done on its own after every applied change)."""
        if self.snapshot_path is None or self.degraded:
            return
        from .snapshot import write_snapshot

        # One write at a time, and a cancelled caller still waits for its thread: a
        # thread left running could otherwise replace a newer snapshot with its older one.
        async with self._snapshot_lock:
            writing = asyncio.ensure_future(
                asyncio.to_thread(write_snapshot, self.snapshot_path, self._build_snapshot())
            )
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                await asyncio.wait([writing])
                raise

    async def _snapshot_loop(self) -> None:
        written: tuple[Any, ...] | None = None
        while True:
            mark = self._snapshot_mark()
            if mark != written and not self.degraded:
                try:
                    await self.write_snapshot()
                    written = mark
                except Exception:
                    log.exception("cannot write the snapshot %s", self.snapshot_path)
            await asyncio.sleep(self.snapshot_interval)

    # ----------------------------------------------------------------- fan-out

    def _seal(self, record: ChangeRecord, data: dict[str, Any] | None) -> str | None:
        """The committed change to carry in its notice (`confman.sealed`), or None."""
        if self.store.notify_channel is not None:
            return None  # the database sends the notice: nothing of ours rides on it
        return seal(self.keyring, record, data)

    def _unseal(self, notice: ChangeNotice) -> LoggedChange | None:
        """The change a notice carries, if it is one to trust; else None (read it)."""
        if notice.change is None:
            return None
        logged = unseal(self.keyring, notice)
        if logged is None:
            self.stats.sealed_refused += 1
            if self.stats.sealed_refused == 1:  # once: a key mismatch would say it per change
                log.warning(
                    "a notice's sealed change does not open with this hub's keys (another "
                    "key, stale, or not from a hub); reading changes from the database"
                )
        else:
            self.stats.sealed_applied += 1
        return logged

    async def _publish(self, notice: ChangeNotice) -> None:
        if self.store.notify_channel is not None:
            return  # sent by the database in the write's own transaction
        try:
            await self.bus.publish(notice)
        except Exception:
            self.stats.publish_failures += 1
            log.exception("publishing %s failed; other instances will catch up", notice)

    def _on_notice(self, notice: ChangeNotice) -> None:
        if notice.origin == self.instance_id or self._closed:
            return
        self.stats.notices_received += 1
        if notice.change_set is not None:
            # A member of a change set: catch-up reads the whole set (committed at once)
            # and applies it whole. One read however many members' notices arrive.
            self._catch_up_now.set()
            return
        if notice.namespace == ENVIRONMENTS_NAMESPACE:
            self._spawn(self._environments_changed(), name="confman-environments")
            return
        manager = self._by_namespace.get(notice.namespace)
        if manager is None or not manager._concerns(notice.environment):
            # Nothing here to apply: as good as applied (or `applied_seq` would trail
            # through another environment's burst of writes until the next catch-up).
            self._applied(notice.seq)
            return
        # One loader per key: notices arriving while it loads are coalesced into the
        # newest one (remote instances may skip intermediate versions), so a burst of
        # N changes to a key costs far fewer than N reads.
        slot = (notice.environment, notice.namespace, notice.key)
        pending = self._pending_notices.get(slot)
        if pending is not None:
            if notice.version > pending.version:
                # A writer waiting on the one coalesced away is answered by this one.
                self._pending_notices[slot] = (
                    dataclasses.replace(notice, replies=True) if pending.replies else notice
                )
            return
        self._pending_notices[slot] = notice
        self._spawn(self._apply_notices(manager, slot), name="confman-notice")

    async def _environments_changed(self) -> None:
        with contextlib.suppress(StoreUnavailable):  # the next catch-up reads them again
            await self._read_environments()

    async def _apply_notices(
        self, manager: ConfigurationManager[Any], slot: tuple[str, str, str]
    ) -> None:
        notice = self._pending_notices[slot]
        try:
            while True:
                await self._apply_notice(manager, notice)
                if notice.replies:  # else nobody waits: the next catch-up run replies
                    self._acknowledge(manager, notice.key, notice.environment)
                newest = self._pending_notices[slot]
                if newest is notice:
                    return
                notice = newest
        finally:
            self._pending_notices.pop(slot, None)

    async def _apply_notice(self, manager: ConfigurationManager[Any], notice: ChangeNotice) -> None:
        try:
            await manager._on_notice(notice)
            self._applied(notice.seq)
        except StoreUnavailable as e:
            self.stats.store_errors += 1
            log.warning(
                "cannot load %s/%s yet (%s); catch-up will", notice.namespace, notice.key, e
            )
        except NotFound:
            # That version was pruned from the change log already: a newer one exists,
            # and catch-up applies it.
            log.info(
                "%s/%s v%s is gone from the change log; catching up",
                notice.namespace,
                notice.key,
                notice.version,
            )
            if not self._closed:
                self._spawn(self._catch_up_once(), name="confman-catch-up-now")
        except Exception:
            # A notice is only a hint: whatever went wrong here, catch-up reads the row
            # again and records a problem if it really cannot be applied.
            log.exception(
                "applying the notice for %s/%s v%s failed; catch-up will retry",
                notice.namespace,
                notice.key,
                notice.version,
            )

    def _on_bus_reconnect(self) -> None:
        """The bus (re)subscribed: anything published meanwhile was lost; read it now."""
        if not self._closed:
            self._spawn(self._catch_up_once(), name="confman-reconnect-catch-up")

    async def _catch_up_once(self) -> None:
        try:
            await self.catch_up()
        except StoreUnavailable as e:
            self.stats.store_errors += 1
            log.warning("catch-up after reconnect failed (%s); the background run retries", e)

    def _spawn(self, coro: Any, *, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------- catch-up

    async def catch_up(self) -> int:
        """Read the change log for everything missed; return how many rows were read."""
        async with self._catch_up_lock:
            self.stats.catch_up_runs += 1
            if self._snapshot is not None:
                await self._recover()
            total = 0
            also = list(self._gaps)
            if self._late_gaps and self.stats.catch_up_runs % 10 == 0:
                # Ids given up on: a transaction held open longer than gap_timeout
                # still commits in the end. Look for them now and then, for an hour.
                also += list(self._late_gaps)
            while True:
                batch = await self.store.changes_since(self._seq, also=also)
                also = list(self._gaps)
                if not batch:
                    break
                last = batch[-1].record
                if len(batch) == 1000 and last.change_set is not None:
                    # The page ends inside a change set: read the rest of it, so that it
                    # is applied whole (what lies between is read again as gaps).
                    batch += [
                        c
                        for c in await self.store.change_set_changes(last.change_set)
                        if c.record.seq > last.seq
                    ]
                total += len(batch)
                await self._apply_batch(batch)
                if len(batch) < 1000:
                    break
            now = time.monotonic()
            for seq, deadline in list(self._gaps.items()):
                if deadline < now:
                    del self._gaps[seq]
                    self._late_gaps[seq] = now + 60 * self.gap_timeout
            for seq, deadline in list(self._late_gaps.items()):
                if deadline < now:
                    del self._late_gaps[seq]
            self.stats.caught_up_changes += total
            return total

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        """Apply a change set whole: managers hold back what they would emit until the
        block ends, then it goes out in order. A subscriber that reads another manager
        from its callback therefore never sees half a set."""
        if self._held_changes is not None:
            yield  # already holding: the outer block tells
            return
        held: list[tuple[ConfigurationManager[Any], ConfigChange[Any]]] = []
        self._held_changes = held
        applied: list[int] = []
        self._held_applied = applied
        try:
            yield
        finally:
            self._held_changes = None
            self._held_applied = None
            for manager, change in held:
                manager._deliver(change)
            for seq in applied:
                self._applied(seq)

    async def _apply_batch(self, batch: list[LoggedChange]) -> None:
        seen = [c.record.seq for c in batch]
        for seq in seen:
            self._gaps.pop(seq, None)
            self._late_gaps.pop(seq, None)
        high = max(seen)
        if high > self._seq:
            self._note_gaps([s for s in seen if s > self._seq], low=self._seq, high=high)
        # In seq order, except that a change set's rows go together, where its first is.
        segments: list[list[LoggedChange]] = []
        sets: dict[str, list[LoggedChange]] = {}
        for row in batch:
            change_set = row.record.change_set
            if change_set is None:
                if segments and segments[-1][0].record.change_set is None:
                    segments[-1].append(row)
                else:
                    segments.append([row])
            elif change_set in sets:
                sets[change_set].append(row)
            else:
                segments.append(sets.setdefault(change_set, [row]))
        for segment in segments:
            if segment[0].record.change_set is None:
                await self._apply_rows(segment)
            else:
                with self._holding():
                    await self._apply_rows(segment)
        # Only now, every row emitted: `applied_seq` never passes a change that some
        # subscriber (an event stream's resume point) has not been given yet.
        self._seq = max(self._seq, high)
        self._applied_ahead = {s for s in self._applied_ahead if s > self._seq or s in self._gaps}

    async def _apply_rows(self, batch: list[LoggedChange]) -> None:
        by_namespace: dict[str, list[LoggedChange]] = {}
        for change in batch:
            by_namespace.setdefault(change.record.namespace, []).append(change)
        if by_namespace.pop(ENVIRONMENTS_NAMESPACE, None):
            await self._read_environments()
        for namespace, changes in by_namespace.items():
            manager = self._by_namespace.get(namespace)
            if manager is not None:
                await manager._catch_up(changes)
                for environment, key in {(c.record.environment, c.record.key) for c in changes}:
                    self._acknowledge(manager, key, environment or BASE)

    def _note_gaps(self, present: Iterable[int], *, low: int, high: int) -> None:
        have = set(present)
        deadline = time.monotonic() + self.gap_timeout
        for seq in range(low + 1, high + 1):
            if seq not in have:
                self._gaps.setdefault(seq, deadline)

    async def _catch_up_loop(self) -> None:
        delay = self.catch_up_interval
        while True:
            # Every store call has a deadline (`ConfigStore.timeout`), so no run can
            # hold the catch-up lock for longer than its own reads take.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._catch_up_now.wait()
            self._catch_up_now.clear()
            try:
                await self.catch_up()
                delay = self.catch_up_interval
            except StoreUnavailable as e:
                self.stats.store_errors += 1
                # Backing off spares a dead database; any call that gets through again
                # (a write, /readyz) ends the wait at once (`ConfigStore.on_recovered`).
                delay = min(delay * 2, max(self.catch_up_interval, 30.0))
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
