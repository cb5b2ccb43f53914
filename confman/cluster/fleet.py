"""What instances tell each other through Redis: heartbeats and replies to changes.

Keys (``<p>`` is the cluster prefix):

- ``<p>:instance:<id>`` — an instance's latest heartbeat (JSON `InstanceInfo`), with a
  TTL of ``heartbeat_ttl``: an instance that stops beating disappears on its own.
- ``<p>:instances`` — a sorted set indexing those keys (score: last beat, epoch ms);
  readers drop members whose key has expired. Each beat sets its TTL to
  ``heartbeat_ttl`` too, so it goes once no instance beats.
- ``<p>:acks:<namespace>:<key>`` — the reply channel of ``update(...,
  wait_for_instances=...)`` for a base document, ``<p>:acks@<environment>:<namespace>:<key>``
  for an environment's: a hash, instance id → JSON ``{"version", "reason", "at"}``, the
  version of that document the instance now holds and, if it refused that version (its
  own overrides or validation failed), why. Versions count per (environment, namespace,
  key), so the base's v3 and staging's v3 have separate hashes and never answer for
  each other. Every instance writes it after it has processed a notice or a catch-up
  for the document, whether or not anyone waits (a pipelined ``HSET``+``PEXPIRE``,
  coalesced per document); the writer polls it until every instance the change concerns
  that was live when it committed has answered, or the time is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ._tasks import TRANSIENT, stop_task

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "AckWriter",
    "Drift",
    "FleetRegistry",
    "FleetReport",
    "InstanceInfo",
    "InstanceReply",
    "NamespaceDigest",
    "Registry",
    "Reply",
    "concerned",
    "wait_for_replies",
]

log = logging.getLogger("confman.cluster")


Reply = tuple[str | None, str, str, int, str | None]
"""One instance's answer about one document: (environment (None: the base), namespace,
key, version held, reason it refuses that version or None)."""


@dataclass(frozen=True, slots=True)
class NamespaceDigest:
    """One namespace as one instance holds it.

    ``versions`` digests the stored versions it applied (same versions: same stored
    data); ``effective`` digests its effective values (secrets masked); ``overridden``
    says whether its environment overrides any field (then ``effective`` may
    legitimately differ from other instances').
    """

    versions: str
    effective: str
    overridden: bool
    keys: int


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """One instance's heartbeat. ``environment``: the environment it runs in (None: the
    base alone; also what a heartbeat of a release before environments means)."""

    instance_id: str
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    applied_seq: int
    namespaces: dict[str, NamespaceDigest] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    leader: bool = False
    fencing_token: int | None = None
    degraded: bool = False
    environment: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["beat_at"] = self.beat_at.isoformat()
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> InstanceInfo:
        data = json.loads(raw)
        return cls(
            instance_id=data["instance_id"],
            host=data["host"],
            pid=int(data["pid"]),
            started_at=datetime.fromisoformat(data["started_at"]),
            beat_at=datetime.fromisoformat(data["beat_at"]),
            applied_seq=int(data["applied_seq"]),
            namespaces={k: NamespaceDigest(**v) for k, v in data["namespaces"].items()},
            problems=tuple(data["problems"]),
            leader=bool(data["leader"]),
            fencing_token=data["fencing_token"],
            degraded=bool(data["degraded"]),
            environment=data.get("environment") or None,
        )


@dataclass(frozen=True, slots=True)
class Drift:
    """An instance that is behind, or holds values it should not.

    ``kind``: ``"lagging"`` (has not applied changes committed more than the grace
    period before its last heartbeat), ``"values"`` (same stored versions as its peers
    and no overrides, yet different effective values than the other instances of its
    environment), ``"problems"`` (refuses some stored documents), ``"degraded"``
    (serving from its snapshot, database unreachable).
    """

    instance_id: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class InstanceReply:
    instance_id: str
    version: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class FleetReport:
    """Which live instances took a change (``update(..., wait_for_instances=...)``).

    Only instances the change concerns are expected: for a base document every instance
    (for a namespace that does not inherit, those without an environment), for an
    environment's document the instances in that environment; the writer always.
    ``environment`` is the changed document's (None: the base), ``version`` its version
    there.

    ``applied``: hold that version (or a newer one) in service — the writer included.
    ``refused``: hold it but cannot use it; ``reason`` says why (their overrides or
    validation), and they keep serving their last valid value. ``missing``: live when
    the change committed, but did not answer in time.
    """

    namespace: str
    key: str
    version: int
    applied: tuple[InstanceReply, ...]
    refused: tuple[InstanceReply, ...]
    missing: tuple[str, ...]
    environment: str | None = None

    @property
    def complete(self) -> bool:
        """Every live instance applied the change."""
        return not self.refused and not self.missing

    def __str__(self) -> str:
        where = f" in {self.environment}" if self.environment else ""
        parts = [f"{self.namespace}/{self.key}{where} v{self.version}: {len(self.applied)} applied"]
        if self.refused:
            parts.append(
                "refused by " + ", ".join(f"{r.instance_id} ({r.reason})" for r in self.refused)
            )
        if self.missing:
            parts.append("no answer from " + ", ".join(self.missing))
        return "; ".join(parts)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class FleetRegistry(Protocol):
    """Where a fleet's heartbeats and replies live: Redis (`Registry`) or PostgreSQL
    NOTIFY (`confman.cluster.pg_fleet.NotifyRegistry`)."""

    async def beat(self, info: InstanceInfo) -> None: ...

    async def leave(self, instance_id: str) -> None: ...

    async def instances(self) -> list[InstanceInfo]: ...

    async def acknowledge(self, replies: Iterable[Reply], instance_id: str) -> None: ...

    async def replies(
        self, namespace: str, key: str, environment: str | None = None
    ) -> dict[str, tuple[int, str | None]]: ...

    async def wait_for(
        self,
        namespace: str,
        key: str,
        version: int,
        *,
        origin: str,
        timeout: float,
        environment: str | None = None,
        inherits: bool = True,
    ) -> FleetReport: ...

    async def close(self) -> None: ...


class Registry:
    """Heartbeats and replies of one cluster in Redis."""

    def __init__(self, redis: Redis, *, prefix: str, heartbeat_ttl: float, ack_ttl: float):
        self.redis = redis
        self.prefix = prefix
        self.index = f"{prefix}:instances"
        self.heartbeat_ttl = heartbeat_ttl
        self.ack_ttl = ack_ttl

    def _instance_key(self, instance_id: str) -> str:
        return f"{self.prefix}:instance:{instance_id}"

    def ack_key(self, namespace: str, key: str, environment: str | None = None) -> str:
        # The base keeps the name it had before environments (what instances of an
        # older release write); an environment's name cannot be mistaken for it.
        acks = f"acks@{environment}" if environment else "acks"
        return f"{self.prefix}:{acks}:{namespace}:{key}"

    async def beat(self, info: InstanceInfo) -> None:
        ttl_ms = max(1, int(self.heartbeat_ttl * 1000))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._instance_key(info.instance_id), info.to_json(), px=ttl_ms)
            pipe.zadd(self.index, {info.instance_id: int(time.time() * 1000)})
            # The index outlives its last live member only by a heartbeat TTL: a fleet
            # whose instances all died leaves no key behind.
            pipe.pexpire(self.index, ttl_ms)
            await pipe.execute()

    async def leave(self, instance_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self._instance_key(instance_id))
            pipe.zrem(self.index, instance_id)
            await pipe.execute()

    async def instances(self) -> list[InstanceInfo]:
        """Live instances (those whose heartbeat has not expired)."""
        raw_members: list[Any] = await self.redis.zrange(self.index, 0, -1)
        members = [_text(m) for m in raw_members]
        if not members:
            return []
        raws = await self.redis.mget([self._instance_key(m) for m in members])
        live: list[InstanceInfo] = []
        gone: list[str] = []
        for member, raw in zip(members, raws, strict=True):
            if raw is None:
                gone.append(member)
                continue
            try:
                live.append(InstanceInfo.from_json(raw))
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed heartbeat of %s", member)
        if gone:
            # Only forget members that have been silent for long: a member whose key
            # expired a moment ago may beat again (a paused process).
            cutoff = int((time.time() - 10 * self.heartbeat_ttl) * 1000)
            with contextlib.suppress(*TRANSIENT):
                await self.redis.zremrangebyscore(self.index, "-inf", cutoff)
        return sorted(live, key=lambda i: i.instance_id)

    async def acknowledge(self, replies: Iterable[Reply], instance_id: str) -> None:
        ttl_ms = max(1, int(self.ack_ttl * 1000))
        now = datetime.now(UTC).isoformat()
        async with self.redis.pipeline(transaction=False) as pipe:
            for environment, namespace, key, version, reason in replies:
                name = self.ack_key(namespace, key, environment)
                body = json.dumps({"version": version, "reason": reason, "at": now})
                pipe.hset(name, instance_id, body)
                pipe.pexpire(name, ttl_ms)
            await pipe.execute()

    async def replies(
        self, namespace: str, key: str, environment: str | None = None
    ) -> dict[str, tuple[int, str | None]]:
        raw: dict[Any, Any] = await self.redis.hgetall(self.ack_key(namespace, key, environment))
        found: dict[str, tuple[int, str | None]] = {}
        for instance, body in raw.items():
            try:
                data = json.loads(body)
                found[_text(instance)] = (int(data["version"]), data.get("reason"))
            except (ValueError, KeyError, TypeError):
                continue
        return found

    async def wait_for(
        self,
        namespace: str,
        key: str,
        version: int,
        *,
        origin: str,
        timeout: float,
        environment: str | None = None,
        inherits: bool = True,
    ) -> FleetReport:
        return await wait_for_replies(
            self, namespace, key, version, origin=origin, timeout=timeout,
            environment=environment, inherits=inherits,
        )  # fmt: skip

    async def close(self) -> None:
        """Nothing of its own: the node owns the Redis client."""


def concerned(
    info: InstanceInfo, namespace: str, environment: str | None, *, inherits: bool = True
) -> bool:
    """Whether a change to ``environment``'s document of ``namespace`` (None: the base)
    changes what the instance ``info`` serves, so that it answers it.

    The base concerns every instance, but in a namespace that does not inherit (each
    environment holds its own documents) only those without an environment; an
    environment's document concerns the instances in that environment. An instance
    whose heartbeat lists namespaces but not this one has no manager for it.
    """
    if info.namespaces and namespace not in info.namespaces:
        return False
    if environment is None:
        return inherits or info.environment is None
    return info.environment == environment


async def wait_for_replies(
    registry: FleetRegistry,
    namespace: str,
    key: str,
    version: int,
    *,
    origin: str,
    timeout: float,
    environment: str | None = None,
    inherits: bool = True,
    poll: float = 0.05,
) -> FleetReport:
    """Wait up to ``timeout`` seconds for every live instance the change concerns (see
    `concerned`) to answer ``version`` of ``environment``'s document (None: the base)."""
    deadline = time.monotonic() + timeout
    try:
        members = {
            i.instance_id
            for i in await registry.instances()
            if concerned(i, namespace, environment, inherits=inherits)
        } - {origin}
    except TRANSIENT as e:
        log.warning("cannot list the fleet (%s); reporting the writer only", e)
        members = set()
    answered: dict[str, tuple[int, str | None]] = {}
    while True:
        try:
            replies = await registry.replies(namespace, key, environment)
        except TRANSIENT as e:
            log.warning("cannot read replies (%s)", e)
            replies = {}
        answered = {i: r for i, r in replies.items() if i in members and r[0] >= version}
        if len(answered) == len(members) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    applied = [InstanceReply(origin, version)]
    refused: list[InstanceReply] = []
    for instance, (held, reason) in sorted(answered.items()):
        (refused if reason else applied).append(InstanceReply(instance, held, reason))
    return FleetReport(
        namespace,
        key,
        version,
        applied=tuple(applied),
        refused=tuple(refused),
        missing=tuple(sorted(members - answered.keys())),
        environment=environment,
    )


class AckWriter:
    """Sends this instance's replies in the background, coalesced per document."""

    def __init__(self, registry: FleetRegistry, instance_id: str) -> None:
        self.registry = registry
        self.instance_id = instance_id
        self.failures = 0
        self._pending: dict[tuple[str | None, str, str], tuple[int, str | None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def note(
        self,
        namespace: str,
        key: str,
        version: int,
        reason: str | None,
        environment: str | None = None,
    ) -> None:
        self._pending[(environment, namespace, key)] = (version, reason)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="confman-acks")

    async def close(self) -> None:
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            if not batch:
                continue
            try:
                await self.registry.acknowledge(
                    [(e, ns, key, v, r) for (e, ns, key), (v, r) in batch.items()],
                    self.instance_id,
                )
            except TRANSIENT as e:
                self.failures += 1
                log.debug("cannot send replies (%s)", e)


def namespace_digest(
    versions: Mapping[str, Any], values: dict[str, Any], *, overridden: bool
) -> NamespaceDigest:
    """Digest one namespace: ``versions`` key → stored version (or, with an environment's
    overlay, the base's and the overlay's), ``values`` key → effective value (a pydantic
    model; dumped in JSON mode, so secrets are masked)."""
    import hashlib

    def digest(obj: Any) -> str:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    dumped = {
        k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v)
        for k, v in sorted(values.items())
    }
    return NamespaceDigest(
        versions=digest(sorted(versions.items())),
        effective=digest(dumped),
        overridden=overridden,
        keys=len(values),
    )
