"""`RedisBus`: notices fanned out to every instance of a cluster through Redis pub/sub.

A notice is a hint (``{namespace, key, version, seq, origin}`` as JSON on the channel
``<prefix>:changes``, perhaps carrying the change sealed: `confman.sealed`); the database
stays the truth. Pub/sub is fire-and-forget: a
message published while a subscriber is disconnected is gone. The bus therefore tells
the hub each time it has (re)subscribed, and the hub catches up from the change log,
so a lost message delays a change but never loses it.

Failures never reach the writer: `publish` logs and counts them (`RedisBus.stats`), and
the listener reconnects on its own with exponential backoff (``reconnect_min`` doubling
to ``reconnect_max``, with jitter).

Needs the ``redis`` extra (``redis>=5``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .base import ChangeNotice, NoticeHandler, ReconnectHandler
from .wire import decode_notice, decode_received, deliver, encode_notice, reconnected

__all__ = ["RedisBus", "RedisBusStats", "decode_notice", "encode_notice"]

log = logging.getLogger("confman.bus.redis")


@dataclass(slots=True)
class RedisBusStats:
    published: int = 0
    publish_failures: int = 0
    received: int = 0
    malformed: int = 0
    connects: int = 0  # successful (re)subscriptions, the first included
    disconnects: int = 0


def redis_client(url: str, **options: Any) -> Redis:
    """A client that fails fast instead of hanging when Redis is away."""
    options.setdefault("socket_connect_timeout", 2.0)
    options.setdefault("socket_timeout", 5.0)
    options.setdefault("socket_keepalive", True)
    options.setdefault("health_check_interval", 10)
    client: Redis = Redis.from_url(url, **options)
    return client


class RedisBus:
    """The `ChangeBus` of a fleet: Redis pub/sub on ``<prefix>:changes``.

    Args:
        url: a ``redis://`` URL.
        prefix: the cluster name; buses with different prefixes never hear each other.
        reconnect_min: first delay before resubscribing after the connection was lost.
        reconnect_max: the longest delay between attempts.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "confman",
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.channel = f"{prefix}:changes"
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.stats = RedisBusStats()
        self._handler: NoticeHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None
        self._publisher: Redis | None = None
        self._subscriber: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._stopping = False

    def __repr__(self) -> str:
        return f"<RedisBus channel={self.channel!r} connected={self.connected}>"

    @property
    def connected(self) -> bool:
        """Whether the listener is subscribed right now."""
        return self._subscribed.is_set()

    def set_reconnect_handler(self, handler: ReconnectHandler) -> None:
        self._on_reconnect = handler

    async def start(self, handler: NoticeHandler) -> None:
        """Start listening. Returns at once even if Redis is down (the listener retries);
        waits briefly for the first subscription so that notices published right after
        start are heard."""
        self._handler = handler
        self._publisher = redis_client(self.url)
        # The listener must see every disconnect to trigger a catch-up, so its client
        # never retries (and so resubscribes) behind our back.
        self._subscriber = redis_client(self.url, retry=Retry(NoBackoff(), 0))
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name=f"confman-redis-bus-{self.channel}"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 2.0)

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    async def publish(self, notice: ChangeNotice) -> None:
        client = self._publisher
        if client is None:
            self.stats.publish_failures += 1
            log.warning("RedisBus not started; dropped %s", notice)
            return
        try:
            await client.publish(self.channel, encode_notice(notice))
            self.stats.published += 1
        except (RedisError, OSError) as e:
            self.stats.publish_failures += 1
            log.warning(
                "publishing %s/%s v%s on %s failed (%s: %s); instances will catch up",
                notice.namespace,
                notice.key,
                notice.version,
                self.channel,
                type(e).__name__,
                e,
            )

    async def close(self) -> None:
        self._handler = None
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            # redis-py may swallow a cancellation landing inside one of its calls: cancel
            # until the task is done (the loop also checks the stop flag), never hang.
            for _ in range(10):
                task.cancel()
                await asyncio.wait({task}, timeout=0.2)
                if task.done():
                    break
        for client in (self._publisher, self._subscriber):
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
        self._publisher = self._subscriber = None
        self._subscribed.clear()

    # ----------------------------------------------------------------- listener

    async def _listen(self) -> None:
        delay = self.reconnect_min
        assert self._subscriber is not None
        while not self._stopping:
            pubsub: PubSub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                self.stats.connects += 1
                if self.stats.connects > 1:
                    log.info("resubscribed to %s; catching up", self.channel)
                delay = self.reconnect_min
                self._reconnected()
                while not self._stopping:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is None:
                        # Quiet channel: prove the connection is alive (also detects a
                        # half-open socket that would otherwise never fail).
                        await pubsub.ping()
                        continue
                    if message.get("type") == "message":
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                if self._subscribed.is_set():
                    self.stats.disconnects += 1
                    log.warning("lost %s (%s: %s); reconnecting", self.channel, type(e).__name__, e)
                self._subscribed.clear()
            except Exception:
                self._subscribed.clear()
                log.exception("RedisBus listener failed unexpectedly; restarting it")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.reconnect_max)

    def _reconnected(self) -> None:
        reconnected(self._on_reconnect)

    def _deliver(self, raw: bytes | str) -> None:
        handler = self._handler
        if handler is None:
            return
        notice = decode_received(raw, self.stats, self.channel)
        if notice is not None:
            deliver(handler, notice, self.stats)
