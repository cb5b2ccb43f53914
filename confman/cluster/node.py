"""`ClusterNode`: one instance's membership of a fleet — heartbeats, replies, the leader
lease and the leader's housekeeping. The hub owns one when it has a ``redis_url``
(`ClusterNode.with_redis`), or without one on PostgreSQL with a fleet bus
(`ClusterNode.with_postgres`). Leadership (`Leadership`) and the registry of
heartbeats and replies (`FleetRegistry`) are injected, as a bus is into the hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reactivex import Observable

from ..exceptions import StoreUnavailable
from ..retention import DEFAULT_HOUSEKEEPING_INTERVAL, DEFAULT_KEEP_VERSIONS, DEFAULT_MAX_AGE
from ..store import ConfigStore, FencingTokenRejected
from ._tasks import TRANSIENT, stop_task
from .fleet import AckWriter, Drift, FleetRegistry, FleetReport, InstanceInfo, NamespaceDigest
from .leadership import Leadership

__all__ = ["ClusterNode", "ClusterOptions", "ClusterStatus", "InstanceState"]

log = logging.getLogger("confman.cluster")


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """Tuning of an instance's fleet membership (all times in seconds).

    Attributes:
        lease_ttl: the leader lease; a dead leader is replaced within it.
        renew_interval: how often the leader renews (default ``lease_ttl / 3``).
        campaign_interval: how often a follower tries to lead (``lease_ttl / 10``).
        leader_election: take part in elections at all.
        fence_ttl: the Redis token counter expires this long after the last leader
            renewed it (default ``10 * lease_ttl``); the database keeps the floor.
        heartbeat_interval: how often an instance publishes its heartbeat.
        heartbeat_ttl: when a silent instance is dropped (``3 * heartbeat_interval``).
        housekeeping_interval: how often the leader runs retention and the check
            (without Redis: how often the instances ask for the retention lease).
        retention_keep_versions: change-log versions kept per document (``None``: all).
        retention_max_age: change-log rows older than this go (``None``: no limit). The
            newest version of a document is always kept.
        lag_grace: an instance is *lagging* if it has not applied a change committed
            this long before its last heartbeat.
        ack_ttl: how long replies to changes are kept in Redis.
    """

    lease_ttl: float = 10.0
    renew_interval: float | None = None
    campaign_interval: float | None = None
    leader_election: bool = True
    fence_ttl: float | None = None
    heartbeat_interval: float = 2.0
    heartbeat_ttl: float | None = None
    housekeeping_interval: float = DEFAULT_HOUSEKEEPING_INTERVAL
    retention_keep_versions: int | None = DEFAULT_KEEP_VERSIONS
    retention_max_age: timedelta | None = DEFAULT_MAX_AGE
    lag_grace: float = 10.0
    ack_ttl: float = 600.0


@dataclass(frozen=True, slots=True)
class InstanceState:
    """What the hub reports about itself in each heartbeat; ``environment`` is the one
    it runs in (None: the base alone)."""

    applied_seq: int
    namespaces: dict[str, NamespaceDigest] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    degraded: bool = False
    environment: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The fleet as Redis and the database see it now.

    ``instances``: live instances (fresh heartbeat). ``leader``/``fencing_token``: the
    current lease holder. ``database_seq``: the newest change-log id (``None`` when the
    database is unreachable). ``drift``: instances behind or holding values they should
    not (see `Drift`). Each instance says which environment it runs in; values are
    compared among the instances of one environment only.
    """

    cluster: str
    instances: tuple[InstanceInfo, ...]
    leader: str | None
    fencing_token: int | None
    database_seq: int | None
    drift: tuple[Drift, ...]

    @property
    def healthy(self) -> bool:
        return not self.drift


class ClusterNode:
    """One instance's membership of a fleet. Build it with `with_redis` or
    `with_postgres`; ``lease`` and ``registry`` are the pluggable parts."""

    def __init__(
        self,
        *,
        prefix: str,
        instance_id: str,
        store: ConfigStore,
        describe: Callable[[], InstanceState],
        lease: Leadership,
        registry: FleetRegistry,
        options: ClusterOptions | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.options = options or ClusterOptions()
        self.prefix = prefix
        self.instance_id = instance_id
        self.store = store
        self.describe = describe
        self.registry = registry
        self.lease = lease
        self._on_close = on_close
        self.acks = AckWriter(self.registry, instance_id)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = datetime.now(UTC)
        self.heartbeat_failures = 0
        self.housekeeping_runs = 0
        self.pruned = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @classmethod
    def with_redis(
        cls,
        redis_url: str,
        *,
        prefix: str,
        instance_id: str,
        store: ConfigStore,
        describe: Callable[[], InstanceState],
        options: ClusterOptions | None = None,
    ) -> ClusterNode:
        """Lease, heartbeats and replies in Redis (docs/cluster.md)."""
        from ..bus.redis import redis_client  # the optional ``redis`` extra
        from .fleet import Registry
        from .lease import LeaderLease

        opts = options or ClusterOptions()
        redis = redis_client(redis_url)
        lease = LeaderLease(
            redis,
            prefix=prefix,
            holder=instance_id,
            ttl=opts.lease_ttl,
            renew_interval=opts.renew_interval,
            campaign_interval=opts.campaign_interval,
            fence_ttl=opts.fence_ttl,
            claim=lambda token: store.claim_fencing_token(prefix, token, instance_id),
        )
        registry = Registry(
            redis,
            prefix=prefix,
            heartbeat_ttl=opts.heartbeat_ttl or 3 * opts.heartbeat_interval,
            ack_ttl=opts.ack_ttl,
        )
        node = cls(
            prefix=prefix, instance_id=instance_id, store=store, describe=describe,
            lease=lease, registry=registry, options=opts, on_close=redis.aclose,
        )  # fmt: skip
        node.redis = redis  # type: ignore[attr-defined]  # tests reach the client
        return node

    @classmethod
    def with_postgres(
        cls,
        database_url: str,
        *,
        prefix: str,
        instance_id: str,
        store: ConfigStore,
        describe: Callable[[], InstanceState],
        options: ClusterOptions | None = None,
    ) -> ClusterNode:
        """No Redis: an advisory-lock election, heartbeats and replies on NOTIFY."""
        from .pg_fleet import NotifyRegistry
        from .pg_lease import PostgresLeaderLease

        opts = options or ClusterOptions()
        lease = PostgresLeaderLease(
            database_url,
            cluster=prefix,
            holder=instance_id,
            store=store,
            ttl=opts.lease_ttl,
            renew_interval=opts.renew_interval,
            campaign_interval=opts.campaign_interval,
        )
        registry = NotifyRegistry(
            database_url,
            prefix=prefix,
            heartbeat_ttl=opts.heartbeat_ttl or 3 * opts.heartbeat_interval,
            ack_ttl=opts.ack_ttl,
        )
        return cls(
            prefix=prefix, instance_id=instance_id, store=store, describe=describe,
            lease=lease, registry=registry, options=opts,
        )  # fmt: skip

    # ----------------------------------------------------------------- leadership

    @property
    def is_leader(self) -> bool:
        return self.lease.is_leader

    @property
    def fencing_token(self) -> int | None:
        return self.lease.fencing_token

    @property
    def leadership(self) -> Observable[bool]:
        return self.lease.leadership

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.acks.start()
        with contextlib.suppress(*TRANSIENT):
            await asyncio.wait_for(self._beat(), 2.0)
        self._tasks.append(loop.create_task(self._heartbeats(), name="confman-heartbeat"))
        if self.options.leader_election:
            self.lease.start()
            self._tasks.append(loop.create_task(self._housekeeping(), name="confman-leader"))

    async def close(self) -> None:
        self._stopping = True
        for task in self._tasks:
            await stop_task(task)
        self._tasks.clear()
        await self.lease.close()
        await self.acks.close()
        with contextlib.suppress(*TRANSIENT):
            await asyncio.wait_for(self.registry.leave(self.instance_id), 2.0)
        with contextlib.suppress(*TRANSIENT):
            await self.registry.close()
        if self._on_close is not None:
            with contextlib.suppress(*TRANSIENT):
                await self._on_close()

    # ----------------------------------------------------------------- heartbeats

    def info(self) -> InstanceInfo:
        state = self.describe()
        return InstanceInfo(
            instance_id=self.instance_id,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            beat_at=datetime.now(UTC),
            applied_seq=state.applied_seq,
            namespaces=state.namespaces,
            problems=state.problems,
            leader=self.is_leader,
            fencing_token=self.fencing_token,
            degraded=state.degraded,
            environment=state.environment,
        )

    async def _beat(self) -> None:
        await self.registry.beat(self.info())

    async def _heartbeats(self) -> None:
        wake = getattr(self.registry, "wants_beat", None)
        asked = wake() if wake is not None else asyncio.Event()
        while not self._stopping:
            # A newcomer's hello (NOTIFY registry) makes everyone beat at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asked.wait(), self.options.heartbeat_interval)
            try:
                await self._beat()
            except TRANSIENT as e:
                self.heartbeat_failures += 1
                log.debug("heartbeat failed (%s)", e)
            except Exception:
                log.exception("heartbeat failed unexpectedly")

    def acknowledge(
        self,
        namespace: str,
        key: str,
        version: int,
        reason: str | None,
        environment: str | None = None,
    ) -> None:
        """Tell writers this instance holds ``version`` of ``environment``'s document
        (None: the base), and why it refuses it if ``reason``."""
        self.acks.note(namespace, key, version, reason, environment)

    async def wait_for(
        self,
        namespace: str,
        key: str,
        version: int,
        timeout: float,
        *,
        environment: str | None = None,
        inherits: bool = True,
    ) -> FleetReport:
        """Wait for the instances a change to ``environment``'s document concerns
        (`confman.cluster.fleet.concerned`) to answer ``version``."""
        return await self.registry.wait_for(
            namespace, key, version, origin=self.instance_id, timeout=timeout,
            environment=environment, inherits=inherits,
        )  # fmt: skip

    # ----------------------------------------------------------------- housekeeping

    async def _housekeeping(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.options.housekeeping_interval)
            if not self.is_leader:
                continue
            try:
                await self.housekeeping()
            except FencingTokenRejected as e:
                log.warning("%s", e)
            except StoreUnavailable as e:
                log.warning("housekeeping skipped: %s", e)
            except Exception:
                log.exception("housekeeping failed")

    async def housekeeping(self, *, token: int | None = None) -> int:
        """Run the leader's work now: retention, then the consistency check.

        ``token`` is the fencing token the work carries (by default this instance's,
        taken now). Returns the number of change-log rows deleted.

        Raises:
            FencingTokenRejected: a newer leader has acted (this one steps down).
            RuntimeError: this instance is not the leader.
        """
        if token is None:
            self.lease.check()
            token = self.fencing_token
            if token is None:
                raise RuntimeError(f"{self.instance_id} is not the leader of {self.prefix}")
        opts = self.options
        max_age = opts.retention_max_age
        older_than = None if max_age is None else datetime.now(UTC) - max_age
        try:
            deleted = await self.store.prune_changes(
                cluster=self.prefix,
                token=token,
                holder=self.instance_id,
                keep_versions=opts.retention_keep_versions,
                older_than=older_than,
            )
        except FencingTokenRejected:
            self.lease.step_down("a newer leader has acted (fencing token rejected)")
            raise
        self.housekeeping_runs += 1
        self.pruned += deleted
        if deleted:
            log.info("retention removed %d change-log rows (token %d)", deleted, token)
        with contextlib.suppress(*TRANSIENT):
            for drift in (await self.status()).drift:
                log.warning("drift in %s: %s", self.prefix, drift)
        return deleted

    # ----------------------------------------------------------------- status

    async def status(self) -> ClusterStatus:
        with contextlib.suppress(*TRANSIENT):
            await self._beat()  # our own entry is fresh
        instances = await self.registry.instances()
        holder = await self.lease.current_leader()
        try:
            database_seq: int | None = await self.store.max_seq()
        except StoreUnavailable:
            database_seq = None
        drift = await self._drift(instances, database_seq)
        return ClusterStatus(
            cluster=self.prefix,
            instances=tuple(instances),
            leader=holder[0] if holder else None,
            fencing_token=holder[1] if holder else None,
            database_seq=database_seq,
            drift=tuple(drift),
        )

    async def _drift(self, instances: list[InstanceInfo], database_seq: int | None) -> list[Drift]:
        found: list[Drift] = []
        grace = timedelta(seconds=self.options.lag_grace)
        for inst in instances:
            if inst.degraded:
                found.append(Drift(inst.instance_id, "degraded", "serving its snapshot"))
            if inst.problems:
                found.append(Drift(inst.instance_id, "problems", "; ".join(inst.problems)))
            if database_seq is not None and inst.applied_seq < database_seq:
                with contextlib.suppress(StoreUnavailable):
                    missed = await self.store.changes_since(inst.applied_seq, limit=1)
                    if missed and missed[0].record.committed_at + grace < inst.beat_at:
                        found.append(
                            Drift(
                                inst.instance_id,
                                "lagging",
                                f"applied up to seq {inst.applied_seq}, database at "
                                f"{database_seq}; missing since "
                                f"{missed[0].record.committed_at.isoformat()}",
                            )
                        )
        # Values are compared among instances of one environment holding the same stored
        # versions: an instance in staging with an overlay is not drifting from production.
        namespaces = {ns for inst in instances for ns in inst.namespaces}
        for ns in sorted(namespaces):
            groups: dict[tuple[str | None, str], list[InstanceInfo]] = {}
            for inst in instances:
                digest = inst.namespaces.get(ns)
                if digest is not None and not digest.overridden and not inst.degraded:
                    groups.setdefault((inst.environment, digest.versions), []).append(inst)
            for (environment, _), members in groups.items():
                votes = Counter(m.namespaces[ns].effective for m in members)
                if len(votes) < 2:
                    continue
                majority = votes.most_common(1)[0][0]
                for m in members:
                    if m.namespaces[ns].effective != majority:
                        peers = f"its peers in {environment}" if environment else "its peers"
                        found.append(
                            Drift(
                                m.instance_id,
                                "values",
                                f"{ns}: same stored versions as {peers}, different "
                                "effective values",
                            )
                        )
        return found

    def __repr__(self) -> str:
        return f"<ClusterNode {self.prefix} {self.instance_id} leader={self.is_leader}>"
