"""`PostgresBus`: notices fanned out with PostgreSQL LISTEN/NOTIFY, on the database itself.

No other server: ``ConfigHub.connect("postgresql://...", bus="postgres")``. The store
sends each write's notice with ``NOTIFY <prefix>:changes`` inside the write's own
transaction (the bus is a `CommitNotifyingBus`), so PostgreSQL delivers it at COMMIT,
exactly when the change becomes visible, and never for a write that rolled back.

Each bus listens on one dedicated connection (not from the engine's pool: a pooled
connection would be handed to other work). NOTIFY is fire-and-forget like Redis
pub/sub: a notice sent while the listener is disconnected is gone. The listener
therefore reconnects on its own (exponential backoff with jitter), and after every
successful ``LISTEN`` tells the hub, which catches up from the change log at once. A
quiet connection is probed every ``health_interval`` seconds, so a half-open socket is
noticed too.

Needs the ``postgres`` extra (``asyncpg``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from ..exceptions import ConfmanError
from .base import ChangeNotice, NoticeHandler, ReconnectHandler
from .wire import decode_received, deliver, encode_notice, reconnected

__all__ = ["PostgresBus", "PostgresBusStats", "listen_dsn"]

log = logging.getLogger("confman.bus.postgres")

#: PostgreSQL truncates identifiers (a LISTEN channel is one) to 63 bytes.
MAX_CHANNEL_BYTES = 63


@dataclass(slots=True)
class PostgresBusStats:
    published: int = 0
    publish_failures: int = 0
    received: int = 0
    malformed: int = 0
    connects: int = 0  # successful LISTENs, the first included
    disconnects: int = 0


def listen_dsn(url: str) -> str:
    """A plain ``postgresql://`` DSN (what asyncpg takes) for an SQLAlchemy URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ConfmanError(
            f"the postgres bus needs a PostgreSQL database, not {parsed.get_backend_name()!r} "
            "(SQLite has no LISTEN/NOTIFY: its instances share one host and learn of "
            "changes by catch-up)"
        )
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBus:
    """The `ChangeBus` of a PostgreSQL-only fleet: LISTEN/NOTIFY on ``<prefix>:changes``.

    Args:
        url: the database URL (SQLAlchemy or libpq form); the bus opens its own connection.
        prefix: the cluster name; buses with different prefixes never hear each other.
        reconnect_min: first delay before listening again after the connection was lost.
        reconnect_max: the longest delay between attempts.
        health_interval: seconds of silence after which the connection is probed.
        timeout: the deadline of every connect, LISTEN, probe and publish.

    Raises:
        ConfmanError: the URL is not PostgreSQL, or the channel name is too long.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "confman",
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        health_interval: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self._dsn = listen_dsn(url)
        self.prefix = prefix
        self.channel = f"{prefix}:changes"
        if len(self.channel.encode()) > MAX_CHANNEL_BYTES:
            raise ConfmanError(
                f"cluster name {prefix!r} is too long for a PostgreSQL channel "
                f"({MAX_CHANNEL_BYTES} bytes with ':changes')"
            )
        self.application_name = f"confman listen {self.channel}"[:MAX_CHANNEL_BYTES]
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.health_interval = health_interval
        self.timeout = timeout
        self.stats = PostgresBusStats()
        self._handler: NoticeHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._stopping = False
        self._publisher: Any = None  # an asyncpg connection, opened on first publish
        self._publish_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<PostgresBus channel={self.channel!r} connected={self.connected}>"

    @property
    def notify_channel(self) -> str:
        """The channel the store notifies in each write's transaction (`CommitNotifyingBus`)."""
        return self.channel

    @property
    def connected(self) -> bool:
        """Whether the listener is listening right now."""
        return self._listening.is_set()

    def set_reconnect_handler(self, handler: ReconnectHandler) -> None:
        self._on_reconnect = handler

    async def start(self, handler: NoticeHandler) -> None:
        """Start listening. Returns at once even if the database is down (the listener
        retries); waits briefly for the first LISTEN so that notices sent right after
        start are heard."""
        self._handler = handler
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name=f"confman-postgres-bus-{self.channel}"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 2.0)

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._listening.wait(), timeout)

    async def publish(self, notice: ChangeNotice) -> None:
        """Send a notice outside any write (the hub's writes need not: the store sent
        theirs at commit). Never raises: failures are logged and counted."""
        import asyncpg  # type: ignore[import-untyped]

        try:
            async with self._publish_lock:
                if self._publisher is None or self._publisher.is_closed():
                    self._publisher = await asyncpg.connect(self._dsn, timeout=self.timeout)
                await self._publisher.execute(
                    "SELECT pg_notify($1, $2)",
                    self.channel,
                    encode_notice(notice),
                    timeout=self.timeout,
                )
            self.stats.published += 1
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            self.stats.publish_failures += 1
            log.warning(
                "notifying %s/%s v%s on %s failed (%s: %s); instances will catch up",
                notice.namespace,
                notice.key,
                notice.version,
                self.channel,
                type(e).__name__,
                e,
            )
            await self._drop_publisher()

    async def _drop_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.terminate()

    async def close(self) -> None:
        self._handler = None
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=self.timeout)
        await self._drop_publisher()
        self._listening.clear()

    # ----------------------------------------------------------------- listener

    async def _listen(self) -> None:
        import asyncpg

        delay = self.reconnect_min
        failing = False
        while not self._stopping:
            conn: Any = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self.timeout,
                    # Named, so an operator (or a test) can find it in pg_stat_activity.
                    server_settings={"application_name": self.application_name},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                listening = conn.add_listener(self.channel, self._notified)
                await asyncio.wait_for(listening, self.timeout)
                self._listening.set()
                self.stats.connects += 1
                if self.stats.connects > 1:
                    log.info("listening on %s again; catching up", self.channel)
                delay = self.reconnect_min
                failing = False
                self._reconnected()
                while not self._stopping and not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), self.health_interval)
                    except TimeoutError:
                        # Quiet channel: prove the connection is alive (a half-open
                        # socket would otherwise never fail).
                        await conn.fetchval("SELECT 1", timeout=self.timeout)
                if lost.is_set():
                    raise ConnectionError("the listening connection was terminated")
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                if self._listening.is_set():
                    self.stats.disconnects += 1
                    log.warning("lost %s (%s: %s); reconnecting", self.channel, type(e).__name__, e)
                elif not failing:  # once per streak: never silent, never a flood
                    log.warning(
                        "cannot listen on %s (%s: %s); retrying", self.channel, type(e).__name__, e
                    )
                failing = True
                self._listening.clear()
            except Exception:
                self._listening.clear()
                log.exception("PostgresBus listener failed unexpectedly; restarting it")
            finally:
                if conn is not None:
                    conn.terminate()  # never waits on a dead server
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.reconnect_max)

    def _reconnected(self) -> None:
        reconnected(self._on_reconnect)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        handler = self._handler
        if handler is None:
            return
        notice = decode_received(payload, self.stats, self.channel)
        if notice is not None:
            deliver(handler, notice, self.stats)
