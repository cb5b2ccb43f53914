"""`MqttBus`: notices fanned out through an MQTT broker (the fleet's own, e.g. Mosquitto).

Each notice is published, at QoS 1 (at least once) by default, on the topic
``<prefix>/<environment>/<namespace>/<key>``, so consumers that are not confman can
subscribe to exactly what concerns them (``confman/prod/+/cache/#`` and so on). The
payload is the same JSON as on Redis (``{namespace, key, version, seq, origin}``, and the
committed change sealed with the hubs' key: `confman.sealed`): no value, and no secret,
goes out on the broker in the clear.

A topic level cannot hold ``/``, and ``+`` and ``#`` are wildcards: in the namespace and
key segments ``%``, ``/``, ``+`` and ``#`` are written ``%25``, ``%2F``, ``%2B`` and
``%23`` (see `topic_segment`); every other character is kept as is.

At least once means a notice can arrive twice: the bus drops a notice it has already
delivered (a bounded memory of recent notices), and a manager never applies a version
it already holds, so a duplicate never causes a second emission.

The bus does not elect a leader: use the database or Redis for that (docs/cluster.md).
Like the other buses it loses what is published while it is disconnected (clean
sessions), so after each (re)subscription the hub catches up from the change log.

Needs the ``mqtt`` extra (``aiomqtt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from ..exceptions import ConfmanError
from .base import ChangeNotice, NoticeHandler, ReconnectHandler
from .wire import decode_received, deliver, encode_notice, reconnected

__all__ = [
    "BASE_ENVIRONMENT",
    "MqttBus",
    "MqttBusStats",
    "environment_segment",
    "notice_topic",
    "topic_segment",
]

log = logging.getLogger("confman.bus.mqtt")

#: The environment segment of the shared base: a leading underscore keeps it apart from
#: any environment name (those start with a letter).
BASE_ENVIRONMENT = "_base"

_ESCAPES = {"%": "%25", "/": "%2F", "+": "%2B", "#": "%23"}
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(slots=True)
class MqttBusStats:
    published: int = 0
    publish_failures: int = 0
    received: int = 0
    duplicates: int = 0  # deliveries of a notice already delivered (QoS 1 redelivery)
    republished: int = 0  # notices sent again after the broker came back
    malformed: int = 0
    connects: int = 0  # successful (re)subscriptions, the first included
    disconnects: int = 0


def topic_segment(text: str) -> str:
    """One topic level holding ``text`` (``%``, ``/``, ``+`` and ``#`` escaped)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def environment_segment(notice: ChangeNotice) -> str:
    """The environment level of ``notice``'s topic: its environment, or ``_base``."""
    return topic_segment(notice.environment) if notice.environment else BASE_ENVIRONMENT


def notice_topic(prefix: str, notice: ChangeNotice) -> str:
    """``<prefix>/<environment>/<namespace>/<key>``."""
    return "/".join(
        (
            prefix,
            environment_segment(notice),
            topic_segment(notice.namespace),
            topic_segment(notice.key),
        )
    )


class MqttBus:
    """The `ChangeBus` of a fleet that has an MQTT broker.

    Args:
        url: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS).
        prefix: the first topic levels (may hold ``/``); fleets with different prefixes
            never hear each other.
        username: broker user (`from_environment` reads ``CONFMAN_MQTT_USERNAME``).
        password: broker password (``CONFMAN_MQTT_PASSWORD``); never logged or shown.
        tls: an `ssl.SSLContext`, or True for the system's default trust; by default
            TLS exactly for ``mqtts://``.
        qos: 1 (at least once, the default) or 2.
        keepalive: seconds; a broker silent for 1.5 times this is taken for lost.
        timeout: the deadline of every connect, subscribe and publish.
        reconnect_min: first delay before reconnecting after the connection was lost.
        reconnect_max: the longest delay between attempts.
        queue_size: bound of the incoming and outgoing message queues.

    Raises:
        ConfmanError: a malformed URL, prefix or QoS.
    """

    def __init__(
        self,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        prefix: str = "confman",
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | bool | None = None,
        qos: int = 1,
        keepalive: int = 10,
        timeout: float = 5.0,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        queue_size: int = 10_000,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ConfmanError(  # the URL itself is not shown: it may hold a password
                f"an MQTT broker URL is mqtt://host[:port] or mqtts://host[:port], "
                f"not {parts.scheme or 'no'} scheme"
            )
        if parts.username or parts.password:
            raise ConfmanError("put the MQTT credentials in username/password, not the URL")
        if not prefix or any(ch in prefix for ch in "+#\0") or prefix.endswith("/"):
            raise ConfmanError(f"invalid MQTT topic prefix {prefix!r}")
        if qos not in (1, 2):
            raise ConfmanError(f"qos must be 1 or 2 (at least once), not {qos!r}")
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self.prefix = prefix
        self.subscription = f"{prefix}/#"
        self.username = username
        self._password = password
        if tls is None:
            tls = parts.scheme == "mqtts"
        self._tls: ssl.SSLContext | None = (
            ssl.create_default_context() if tls is True else tls or None
        )
        self.qos = qos
        self.keepalive = keepalive
        self.timeout = timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.queue_size = queue_size
        self.stats = MqttBusStats()
        self._handler: NoticeHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._stopping = False
        self._seen: OrderedDict[tuple[str, str, int, int], None] = OrderedDict()
        self._seen_max = 4096
        # Notices that could not be published (the broker was away), newest per
        # document, sent once the bus is connected again: instances that resubscribed
        # and caught up before this writer was back would otherwise wait for their
        # periodic catch-up to see them.
        self._unsent: OrderedDict[tuple[str, str], ChangeNotice] = OrderedDict()
        self._unsent_max = 1000
        self._flush_task: asyncio.Task[None] | None = None

    @classmethod
    def from_environment(cls, environment: Mapping[str, str], **options: Any) -> MqttBus:
        """A bus configured by ``CONFMAN_MQTT_URL`` (default ``mqtt://127.0.0.1:1883``),
        ``CONFMAN_MQTT_USERNAME``, ``CONFMAN_MQTT_PASSWORD``, ``CONFMAN_MQTT_CA_FILE``
        (TLS, trusting that CA), ``CONFMAN_MQTT_TOPIC_PREFIX`` and ``CONFMAN_MQTT_QOS``.
        Keyword ``options`` are used where the environment says nothing; ``prefix``
        becomes ``confman/<prefix>``."""
        env = environment
        if "prefix" in options:
            options["prefix"] = f"confman/{options['prefix']}"
        if env.get("CONFMAN_MQTT_TOPIC_PREFIX"):
            options["prefix"] = env["CONFMAN_MQTT_TOPIC_PREFIX"]
        if env.get("CONFMAN_MQTT_USERNAME"):
            options["username"] = env["CONFMAN_MQTT_USERNAME"]
        if env.get("CONFMAN_MQTT_PASSWORD"):
            options["password"] = env["CONFMAN_MQTT_PASSWORD"]
        if env.get("CONFMAN_MQTT_CA_FILE"):
            options["tls"] = ssl.create_default_context(cafile=env["CONFMAN_MQTT_CA_FILE"])
        if env.get("CONFMAN_MQTT_QOS"):
            options["qos"] = int(env["CONFMAN_MQTT_QOS"])
        return cls(env.get("CONFMAN_MQTT_URL", "mqtt://127.0.0.1:1883"), **options)

    def __repr__(self) -> str:
        scheme = "mqtts" if self._tls else "mqtt"
        return (
            f"<MqttBus {scheme}://{self.host}:{self.port} prefix={self.prefix!r} "
            f"connected={self.connected}>"
        )

    @property
    def connected(self) -> bool:
        """Whether the bus is connected and subscribed right now."""
        return self._subscribed.is_set()

    def set_reconnect_handler(self, handler: ReconnectHandler) -> None:
        self._on_reconnect = handler

    async def start(self, handler: NoticeHandler) -> None:
        """Start listening. Returns at once even if the broker is down (the listener
        retries); waits briefly for the first subscription."""
        self._handler = handler
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name=f"confman-mqtt-bus-{self.prefix}"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 2.0)

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    async def publish(self, notice: ChangeNotice) -> None:
        """Publish on the notice's topic and wait for the broker's acknowledgement; never
        raises (failures are logged and counted: instances will catch up)."""
        client = self._client
        topic = notice_topic(self.prefix, notice)
        if client is None:
            self.stats.publish_failures += 1
            self._keep_unsent(notice)
            log.warning("MQTT broker not connected; the notice on %s waits for it", topic)
            return
        try:
            await client.publish(topic, encode_notice(notice), qos=self.qos, timeout=self.timeout)
            self.stats.published += 1
        except (aiomqtt.MqttError, OSError, TimeoutError) as e:
            self.stats.publish_failures += 1
            self._keep_unsent(notice)
            log.warning(
                "publishing on %s failed (%s: %s); sent again on reconnect",
                topic,
                type(e).__name__,
                e,
            )

    def _keep_unsent(self, notice: ChangeNotice) -> None:
        slot = (notice.namespace, notice.key)
        held = self._unsent.get(slot)
        if held is None or held.version < notice.version:
            self._unsent[slot] = notice
        self._unsent.move_to_end(slot)
        while len(self._unsent) > self._unsent_max:
            self._unsent.popitem(last=False)  # catch-up still brings it

    async def _flush_unsent(self) -> None:
        """Publish what failed while the broker was away (newest per document)."""
        while self._unsent and self._client is not None:
            _, notice = self._unsent.popitem(last=False)
            failures = self.stats.publish_failures
            await self.publish(notice)  # on failure it is kept again
            if self.stats.publish_failures != failures:
                return  # the broker is away again: the next connect retries
            self.stats.republished += 1

    async def close(self) -> None:
        if self._unsent and self._task is not None and not self._stopping:
            # Notices that failed while the broker was away: give the listener one
            # deadline to reconnect and send them, so that instances which caught up
            # before this writer's last commits need not wait for their periodic run.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._subscribed.wait()
                    await self._flush_unsent()
        self._handler = None
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=self.timeout)
        self._client = None
        self._subscribed.clear()

    # ----------------------------------------------------------------- listener

    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self._password,
            identifier=f"confman-{secrets.token_hex(6)}",
            clean_session=True,
            tls_context=self._tls,
            keepalive=self.keepalive,
            timeout=self.timeout,
            max_queued_incoming_messages=self.queue_size,
            max_queued_outgoing_messages=self.queue_size,
        )

    async def _listen(self) -> None:
        delay = self.reconnect_min
        failing = False
        while not self._stopping:
            try:
                async with self._new_client() as client:
                    await client.subscribe(self.subscription, qos=self.qos, timeout=self.timeout)
                    self._client = client
                    self._subscribed.set()
                    self.stats.connects += 1
                    if self.stats.connects > 1:
                        log.info("resubscribed to %s; catching up", self.subscription)
                    delay = self.reconnect_min
                    failing = False
                    self._reconnected()
                    self._flush_task = asyncio.get_running_loop().create_task(
                        self._flush_unsent(), name="confman-mqtt-republish"
                    )
                    async for message in client.messages:
                        self._deliver(message.payload)
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, OSError, TimeoutError) as e:
                if self._subscribed.is_set():
                    self.stats.disconnects += 1
                    log.warning(
                        "lost %s (%s: %s); reconnecting", self.subscription, type(e).__name__, e
                    )
                elif not failing:
                    # Say it once per streak: a wrong password or address must not be
                    # silent, nor flood the log while the broker stays away.
                    log.warning(
                        "cannot reach the MQTT broker %s:%s (%s: %s); retrying",
                        self.host,
                        self.port,
                        type(e).__name__,
                        e,
                    )
                failing = True
            except Exception:
                log.exception("MqttBus listener failed unexpectedly; restarting it")
            finally:
                self._client = None
                self._subscribed.clear()
                if self._flush_task is not None:
                    self._flush_task.cancel()
                    self._flush_task = None
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.reconnect_max)

    def _reconnected(self) -> None:
        reconnected(self._on_reconnect)

    def _deliver(self, payload: Any) -> None:
        handler = self._handler
        if handler is None:
            return
        raw = payload if isinstance(payload, (bytes, str)) else b""
        notice = decode_received(raw, self.stats, self.subscription)
        if notice is None:
            return
        mark = (notice.namespace, notice.key, notice.version, notice.seq)
        if mark in self._seen:
            self.stats.duplicates += 1  # at least once: delivered already
            return
        self._seen[mark] = None
        if len(self._seen) > self._seen_max:
            self._seen.popitem(last=False)
        deliver(handler, notice, self.stats)
