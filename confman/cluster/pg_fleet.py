"""Heartbeats and replies on PostgreSQL NOTIFY, for a fleet with no Redis.

Everything goes on one channel, ``<cluster>:fleet``, as small JSON messages:

- ``{"t": "beat", "info": <InstanceInfo>}`` every ``heartbeat_interval``;
- ``{"t": "hello"}`` when an instance starts: everyone beats at once, so a newcomer
  knows the fleet within a round trip instead of a heartbeat interval;
- ``{"t": "ack", "i": <instance>, "r": [[namespace, key, version, reason], ...]}``, the
  replies `update(..., wait_for_instances=...)` waits for, about base documents;
  ``{"t": "env-ack", "i": <instance>, "e": <environment>, "r": [...]}`` the same about
  one environment's documents (versions count per environment; a release from before
  environments ignores a kind it does not know rather than take staging's v3 for the
  base's);
- ``{"t": "leave", "i": <instance>}`` on a clean shutdown.

Each instance keeps what it hears in memory: heartbeats for ``heartbeat_ttl`` and
replies for ``ack_ttl``, both bounded. Why NOTIFY rather than a table: both are about
*now* (who is alive, who answered a change just made), and NOTIFY needs no schema, no
writes to the database's disks, and no clean-up; what it cannot do, keep a message for
an instance that is not listening, does not matter here: a writer listens from its
start, so it hears every reply to its own writes, and an instance that reconnects asks
everyone to beat again. A payload is limited to 8000 bytes: a heartbeat whose problems
would not fit lists the first ones and how many were left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..bus.postgres import MAX_CHANNEL_BYTES, listen_dsn
from ..exceptions import ConfmanError
from .fleet import FleetReport, InstanceInfo, Reply, wait_for_replies

__all__ = ["NotifyRegistry"]

log = logging.getLogger("confman.cluster.pg_fleet")

MAX_PAYLOAD = 7900  # PostgreSQL refuses NOTIFY payloads of 8000 bytes and more
MAX_PEERS = 10_000
MAX_DOCUMENTS = 10_000


class NotifyRegistry:
    """The fleet's heartbeats and replies on ``<cluster>:fleet`` (see the module)."""

    def __init__(
        self,
        database_url: str,
        *,
        prefix: str,
        heartbeat_ttl: float,
        ack_ttl: float,
        timeout: float = 5.0,
    ) -> None:
        self._dsn = listen_dsn(database_url)
        self.prefix = prefix
        self.channel = f"{prefix}:fleet"
        if len(self.channel.encode()) > MAX_CHANNEL_BYTES:
            raise ConfmanError(f"cluster name {prefix!r} is too long for a PostgreSQL channel")
        self.heartbeat_ttl = heartbeat_ttl
        self.ack_ttl = ack_ttl
        self.timeout = timeout
        self.malformed = 0
        self._conn: Any = None
        self._io = asyncio.Lock()
        self._peers: OrderedDict[str, tuple[InstanceInfo, float]] = OrderedDict()
        self._replies: OrderedDict[
            tuple[str | None, str, str], dict[str, tuple[int, str | None, float]]
        ] = OrderedDict()
        self._beat_now = asyncio.Event()  # someone said hello: beat without waiting

    # ----------------------------------------------------------------- connection

    async def _send(self, message: dict[str, Any]) -> None:
        """NOTIFY ``message`` on the fleet channel, (re)connecting and listening first."""
        import asyncpg  # type: ignore[import-untyped]

        payload = json.dumps(message, separators=(",", ":"))
        async with self._io:
            if self._conn is None or self._conn.is_closed():
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self.timeout,
                    server_settings={"application_name": f"confman fleet {self.prefix}"[:63]},
                )
                try:
                    await conn.add_listener(self.channel, self._heard)
                except BaseException:
                    conn.terminate()
                    raise
                self._conn = conn
                self._beat_now.set()  # we may have missed beats: hear everyone anew
                await conn.execute(
                    "SELECT pg_notify($1, $2)", self.channel, '{"t":"hello"}', timeout=self.timeout
                )
            try:
                await self._conn.execute(
                    "SELECT pg_notify($1, $2)", self.channel, payload, timeout=self.timeout
                )
            except BaseException:
                conn, self._conn = self._conn, None
                conn.terminate()
                raise

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
            conn.terminate()

    def wants_beat(self) -> asyncio.Event:
        """Set when another instance said hello (or we reconnected): beat at once."""
        return self._beat_now

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            kind = message["t"]
            now = time.monotonic()
            if kind == "beat":
                info = InstanceInfo.from_json(json.dumps(message["info"]))
                self._peers[info.instance_id] = (info, now)
                self._peers.move_to_end(info.instance_id)
                while len(self._peers) > MAX_PEERS:
                    self._peers.popitem(last=False)
            elif kind == "hello":
                self._beat_now.set()
            elif kind == "leave":
                self._peers.pop(str(message["i"]), None)
            elif kind in ("ack", "env-ack"):
                instance = str(message["i"])
                environment = str(message["e"]) if kind == "env-ack" else None
                for namespace, key, version, reason in message["r"]:
                    self._note_reply(
                        environment, str(namespace), str(key), instance, int(version), reason, now
                    )
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            log.warning("ignoring a malformed message on %s", self.channel)

    def _note_reply(
        self,
        environment: str | None,
        namespace: str,
        key: str,
        instance: str,
        version: int,
        reason: Any,
        now: float,
    ) -> None:
        slot = (environment, namespace, key)
        replies = self._replies.setdefault(slot, {})
        self._replies.move_to_end(slot)
        replies[instance] = (version, None if reason is None else str(reason), now)
        while len(self._replies) > MAX_DOCUMENTS:
            self._replies.popitem(last=False)

    # ----------------------------------------------------------------- registry

    async def beat(self, info: InstanceInfo) -> None:
        self._beat_now.clear()
        body = json.loads(info.to_json())
        message = {"t": "beat", "info": body}
        problems = list(info.problems)
        while len(json.dumps(message)) > MAX_PAYLOAD and problems:
            problems = problems[: len(problems) // 2]
            left_out = len(info.problems) - len(problems)
            trimmed = replace(info, problems=(*problems, f"... and {left_out} more"))
            message = {"t": "beat", "info": json.loads(trimmed.to_json())}
        self._peers[info.instance_id] = (info, time.monotonic())
        await self._send(message)

    async def leave(self, instance_id: str) -> None:
        self._peers.pop(instance_id, None)
        await self._send({"t": "leave", "i": instance_id})

    async def instances(self) -> list[InstanceInfo]:
        """Instances heard from within ``heartbeat_ttl``."""
        cutoff = time.monotonic() - self.heartbeat_ttl
        for gone in [i for i, (_, at) in self._peers.items() if at < cutoff]:
            del self._peers[gone]
        return sorted((info for info, _ in self._peers.values()), key=lambda i: i.instance_id)

    async def acknowledge(self, replies: Iterable[Reply], instance_id: str) -> None:
        # One message kind per environment (see the module): group the replies.
        by_environment: dict[str | None, list[list[Any]]] = {}
        now = time.monotonic()
        for environment, namespace, key, version, reason in replies:
            self._note_reply(environment, namespace, key, instance_id, version, reason, now)
            by_environment.setdefault(environment, []).append(
                [namespace, key, version, None if reason is None else reason[:2000]]
            )
        for environment, entries in by_environment.items():
            head: dict[str, Any] = (
                {"t": "ack", "i": instance_id}
                if environment is None
                else {"t": "env-ack", "i": instance_id, "e": environment}
            )
            batch: list[list[Any]] = []
            for entry in entries:
                batch.append(entry)
                if len(json.dumps(batch)) > MAX_PAYLOAD - 200:
                    await self._send({**head, "r": batch[:-1]})
                    batch = batch[-1:]
            if batch:
                await self._send({**head, "r": batch})

    async def replies(
        self, namespace: str, key: str, environment: str | None = None
    ) -> dict[str, tuple[int, str | None]]:
        cutoff = time.monotonic() - self.ack_ttl
        found = self._replies.get((environment, namespace, key), {})
        return {i: (v, r) for i, (v, r, at) in found.items() if at >= cutoff}

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
