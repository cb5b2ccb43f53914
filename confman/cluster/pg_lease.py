"""Leader election on PostgreSQL alone: a session-level advisory lock on a dedicated
connection, with fencing tokens from the database.

The lock (``pg_try_advisory_lock(<64-bit hash of the cluster name>)``) belongs to the
session that took it: PostgreSQL frees it when that session ends, so a leader that dies
(kill -9: its socket closes) frees it at once. A follower tries every
``campaign_interval``.

Tokens come from the database: the winner reads the cluster's row of
``config_fencing`` (the highest token that acted) and records the next one
(`ConfigStore.claim_fencing_token`); the store checks it against that row in the same
transaction as the leader's work, as with Redis, so a deposed leader's late work is
rejected.

Stopping before another can take over. A leader counts its leadership valid until
``ttl - margin`` after it *sent* the last probe (``SELECT 1`` on the lock's session,
every ``renew_interval``) that came back: at that moment its session, hence the lock,
was alive. It steps down at once when the session is seen to end, when a probe fails,
or when that time runs out, whichever comes first. A new holder of the lock took it
after the old session ended, so after the old leader's last successful probe; it waits
a full ``ttl`` before it believes it leads, unless the previous leader released the
lock cleanly (it marks its row of ``config_fencing`` released). So the old leader has
stopped ``margin`` before the new one starts, and a crashed leader is replaced within
``campaign_interval + ttl`` (11 s by default).

A leader cut off without its socket closing (a network partition) keeps the lock on
the server until the server notices the session is dead: the lock's session asks for
TCP keepalives after ``ttl / 2`` seconds of silence, probed every second, three times,
so the server frees it about ``ttl / 2 + 3`` seconds after the last traffic. The cut-off
leader has stepped down long before (its probes fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

from reactivex.subject import BehaviorSubject

from ..bus.postgres import listen_dsn
from ..store import ConfigStore
from ._tasks import stop_task

__all__ = ["PostgresLeaderLease", "advisory_key"]

log = logging.getLogger("confman.cluster.pg_lease")

#: What a leader leaves in ``config_fencing.holder`` when it releases the lock cleanly.
RELEASED = ""


def advisory_key(cluster: str) -> int:
    """The cluster's advisory lock: a signed 64-bit hash of its name."""
    digest = hashlib.blake2b(f"confman-leader:{cluster}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresLeaderLease:
    """Campaigns for, holds and gives up the leadership of one cluster on PostgreSQL.

    Args:
        database_url: the database (SQLAlchemy or libpq form); the lease opens its own
            connection, which holds the lock.
        cluster: the cluster name (the lock key and the `config_fencing` row).
        holder: this instance's id.
        store: where fencing tokens are recorded.
        ttl: see the module docstring; a dead leader is replaced within
            ``campaign_interval + ttl``.
        renew_interval: seconds between probes of the lock's session (``ttl / 3``).
        campaign_interval: seconds between a follower's attempts (``ttl / 10``).
        margin: a leader steps down this long before its time could run out (``ttl / 5``).
        timeout: the deadline of the connect and of each statement.
    """

    def __init__(
        self,
        database_url: str,
        *,
        cluster: str,
        holder: str,
        store: ConfigStore,
        ttl: float = 10.0,
        renew_interval: float | None = None,
        campaign_interval: float | None = None,
        margin: float | None = None,
        timeout: float = 5.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._dsn = listen_dsn(database_url)
        self.cluster = cluster
        self.key = advisory_key(cluster)
        self.holder = holder
        self.store = store
        self.ttl = ttl
        self.renew_interval = renew_interval if renew_interval is not None else ttl / 3
        self.campaign_interval = campaign_interval if campaign_interval is not None else ttl / 10
        self.margin = margin if margin is not None else ttl / 5
        if self.renew_interval >= ttl - self.margin:
            raise ValueError("renew_interval must be well below ttl - margin")
        self.timeout = timeout
        self.leadership: BehaviorSubject[bool] = BehaviorSubject(False)
        self.acquisitions = 0
        self.renew_failures = 0
        #: Times a new holder waited a full ttl because the previous one did not release.
        self.waits = 0
        self._conn: Any = None  # asyncpg connection holding (or trying for) the lock
        self._token: int | None = None
        self._valid_from = 0.0
        self._valid_until = 0.0
        self._announced = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._io = asyncio.Lock()  # one statement at a time on the lock's connection

    def __repr__(self) -> str:
        return (
            f"<PostgresLeaderLease {self.cluster} holder={self.holder!r} leader={self.is_leader}>"
        )

    @property
    def is_leader(self) -> bool:
        """True only while the lock's session is certainly alive (checked on the clock)."""
        return self._token is not None and self._valid_from <= time.monotonic() < self._valid_until

    @property
    def fencing_token(self) -> int | None:
        return self._token if self.is_leader else None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"confman-pg-lease-{self.cluster}"
            )

    async def close(self) -> None:
        """Stop campaigning; if leading, mark the row released and free the lock."""
        self._stopping = True
        task, self._task = self._task, None
        await stop_task(task)
        token, announced = self._token, self._announced
        self.step_down("shutting down")
        if token is not None and announced:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.release_fencing_token(self.cluster, token), 2.0)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
            conn.terminate()
        self.leadership.on_completed()

    # ----------------------------------------------------------------- campaign

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with self._io:
                    if self._token is None:
                        await self._try_acquire()
                    else:
                        await self._probe()
                self._announce()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.step_down(f"the lock's session failed ({type(e).__name__}: {e})")
                await self._drop_connection()
                log.debug("leader lease %s: %s", self.cluster, e)
            await asyncio.sleep(self._next_delay())

    def _next_delay(self) -> float:
        if self._token is None:
            return self.campaign_interval
        now = time.monotonic()
        delay = min(self.renew_interval, self._valid_until - now)
        if not self._announced and self._valid_from > now:
            delay = min(delay, self._valid_from - now)
        return max(0.0, delay)

    def _announce(self) -> None:
        if self._announced or not self.is_leader:
            return
        self._announced = True
        self.acquisitions += 1
        log.info(
            "%s is now the leader of %s (fencing token %s)", self.holder, self.cluster, self._token
        )
        self.leadership.on_next(True)

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        import asyncpg  # type: ignore[import-untyped]

        idle = str(max(1, int(self.ttl / 2)))
        self._conn = conn = await asyncpg.connect(
            self._dsn,
            timeout=self.timeout,
            server_settings={
                "application_name": f"confman leader {self.cluster}"[:63],
                # The server notices a silent, dead client and frees its lock.
                "tcp_keepalives_idle": idle,
                "tcp_keepalives_interval": "1",
                "tcp_keepalives_count": "3",
            },
        )
        conn.add_termination_listener(self._terminated)
        return conn

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn:
            self.step_down("the lock's session ended")

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # frees the lock on the server if we held it

    async def _try_acquire(self) -> None:
        conn = await self._connection()
        sent = time.monotonic()
        won = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=self.timeout)
        if not won:
            return
        try:
            previous, holder = await self.store.fencing_holder(self.cluster)
            token = previous + 1
            floor = await self.store.claim_fencing_token(self.cluster, token, self.holder)
        except Exception:
            await conn.execute("SELECT pg_advisory_unlock($1)", self.key, timeout=self.timeout)
            raise
        if floor >= token:  # a token was recorded meanwhile (a deposed leader's work)
            await conn.execute("SELECT pg_advisory_unlock($1)", self.key, timeout=self.timeout)
            return
        # The previous leader may still believe it leads until ttl - margin after its
        # last probe, which came before we could take the lock: wait a full ttl unless
        # it released cleanly (or there was none).
        wait = previous > 0 and holder != RELEASED
        if wait:
            self.waits += 1
        self._token = token
        self._announced = False
        self._valid_from = time.monotonic() + self.ttl if wait else 0.0
        self._valid_until = sent + self.ttl - self.margin

    async def _probe(self) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            self.step_down("the lock's session ended")
            return
        now = time.monotonic()
        left = self._valid_until - now
        if left <= 0:
            self.step_down("no probe succeeded in time")
            return
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), min(left, self.timeout))
        except Exception as e:
            self.renew_failures += 1
            self.step_down(f"the lock's session did not answer ({type(e).__name__})")
            await self._drop_connection()
            return
        self._valid_until = now + self.ttl - self.margin

    def step_down(self, why: str) -> None:
        if self._token is None:
            return
        announced = self._announced
        if announced:
            log.warning("%s steps down as leader of %s: %s", self.holder, self.cluster, why)
        self._token = None
        self._valid_from = self._valid_until = 0.0
        self._announced = False
        if announced:
            self.leadership.on_next(False)

    def check(self) -> None:
        """Step down now if the leadership has run out (called before leader work)."""
        if self._token is not None and time.monotonic() >= self._valid_until:
            self.step_down("no probe succeeded in time")

    async def current_leader(self) -> tuple[str, int] | None:
        """Who leads now, by the database: ``(instance id, fencing token)``; ``None``
        when nobody holds the lock."""
        async with self._io:
            conn = await self._connection()
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = $1 AND objid = $2 AND objsubid = 1",
                (self.key >> 32) & 0xFFFFFFFF,
                self.key & 0xFFFFFFFF,
                timeout=self.timeout,
            )
        if not held:
            return None
        token, holder = await self.store.fencing_holder(self.cluster)
        return (holder, token) if holder != RELEASED else None
