"""MqttBus: fan-out through an MQTT broker, topics per document, at-least-once delivery."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any

import aiomqtt
import pytest

from confman.bus.mqtt import BASE_ENVIRONMENT, MqttBus, notice_topic, topic_segment
from confman.bus.wire import decode_notice, encode_notice
from confman.exceptions import ConfmanError
from confman.testing import record_changes

from ..support import connect
from .helpers import own_mosquitto
from .models import CountersManager, LimitsManager

SLOW = {"catch_up_interval": 3600.0}  # only the bus can deliver quickly


def mqtt_hub(url: str, env: dict[str, str], broker: str, cluster: str, name: str) -> Any:
    return connect(
        url, {**env, "CONFMAN_MQTT_URL": broker}, managers=[LimitsManager, CountersManager],
        bus="mqtt", cluster=cluster, instance_id=name, **SLOW,
    )  # fmt: skip


def broker_address(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def test_topic_segments_escape_wildcards_and_separators() -> None:
    assert topic_segment("a/b+c#d%e é") == "a%2Fb%2Bc%23d%25e é"
    notice = decode_notice(encode_notice(decode_notice(
        '{"namespace":"cache","key":"eu/west","version":2,"seq":9,"origin":"a"}'
    )))  # fmt: skip
    assert notice_topic("fleet/x", notice) == f"fleet/x/{BASE_ENVIRONMENT}/cache/eu%2Fwest"


def test_options_are_checked_and_the_password_never_shown() -> None:
    bus = MqttBus.from_environment(
        {"CONFMAN_MQTT_URL": "mqtts://broker.example:8883", "CONFMAN_MQTT_USERNAME": "u",
         "CONFMAN_MQTT_PASSWORD": "s3cret-pw"}, prefix="c",
    )  # fmt: skip
    assert (bus.host, bus.port, bus.prefix, bus.username, bus.qos) == (
        "broker.example", 8883, "confman/c", "u", 1,
    )  # fmt: skip
    assert "s3cret" not in repr(bus) and "mqtts://" in repr(bus)
    with pytest.raises(ConfmanError) as refused:
        MqttBus("mqtt://u:s3cret-pw@broker")
    assert "s3cret" not in str(refused.value)
    for bad in ({"qos": 0}, {"prefix": "a/#"}, {"prefix": ""}):
        with pytest.raises(ConfmanError):
            MqttBus("mqtt://broker", **bad)
    with pytest.raises(ConfmanError):
        MqttBus("http://broker")


async def test_change_reaches_other_hub_on_its_topic_without_secrets(
    database_url: str, mqtt_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    host, port = broker_address(mqtt_url)
    prefix = f"confman/{cluster}"
    heard: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(host, port, timeout=5) as raw:
        await raw.subscribe(f"{prefix}/#", qos=1)

        async def collect() -> None:
            async for message in raw.messages:
                assert isinstance(message.payload, bytes)
                heard.append((message.topic.value, message.payload))

        collector = asyncio.create_task(collect())
        try:
            async with (
                mqtt_hub(database_url, hub_env, mqtt_url, cluster, "a") as a,
                mqtt_hub(database_url, hub_env, mqtt_url, cluster, "b") as b,
            ):
                assert isinstance(a.bus, MqttBus) and a.bus.prefix == prefix
                seen = record_changes(b.manager(CountersManager))
                await a.manager(CountersManager).create(
                    "eu/west", {"value": 3, "token": "tok-very-secret"}
                )
                change = await seen.wait_for(key="eu/west", version=1, timeout=10)
                assert change.origin == "a"
                assert a.bus.stats.published == 1 and a.bus.stats.publish_failures == 0
                for _ in range(100):
                    if heard:
                        break
                    await asyncio.sleep(0.05)
        finally:
            collector.cancel()
    topic, payload = heard[0]
    assert topic == f"{prefix}/{BASE_ENVIRONMENT}/counters/eu%2Fwest"
    fields = json.loads(payload)
    sealed = fields.pop("change")  # the committed row, sealed with the hubs' key
    assert fields == {
        "namespace": "counters", "key": "eu/west", "version": 1,
        "seq": change.seq, "origin": "a", "quiet": True,  # nobody waits for replies
    }  # fmt: skip
    assert isinstance(sealed, str) and "value" not in sealed
    assert b"secret" not in payload


async def test_duplicate_deliveries_emit_once(
    database_url: str, mqtt_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    host, port = broker_address(mqtt_url)
    async with (
        mqtt_hub(database_url, hub_env, mqtt_url, cluster, "a") as a,
        mqtt_hub(database_url, hub_env, mqtt_url, cluster, "b") as b,
    ):
        seen = record_changes(b.manager(LimitsManager))
        await a.manager(LimitsManager).update({"high": 10})
        change = await seen.wait_for(version=1, timeout=10)
        notice = encode_notice(decode_notice(json.dumps({
            "namespace": "limits", "key": "default", "version": 1,
            "seq": change.seq, "origin": "a",
        })))  # fmt: skip
        topic = f"confman/{cluster}/{BASE_ENVIRONMENT}/limits/default"
        async with aiomqtt.Client(host, port, timeout=5) as raw:
            for _ in range(3):  # what a QoS 1 redelivery looks like to a subscriber
                await raw.publish(topic, notice, qos=1)
        bus = b.bus
        assert isinstance(bus, MqttBus)
        for _ in range(100):
            if bus.stats.duplicates >= 3:
                break
            await asyncio.sleep(0.05)
        assert bus.stats.duplicates == 3
        await asyncio.sleep(0.2)
        assert seen.versions() == [1]


async def test_broker_down_then_back(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """Writes commit while the broker is dead; publish failures are counted; the bus
    reconnects on its own and the resubscription makes the hub catch up."""
    with own_mosquitto() as server:
        async with (
            mqtt_hub(database_url, hub_env, server.url, cluster, "a") as a,
            mqtt_hub(database_url, hub_env, server.url, cluster, "b") as b,
        ):
            limits_b = b.manager(LimitsManager)
            seen = record_changes(limits_b)
            await a.manager(LimitsManager).update({"high": 11})
            await seen.wait_for(version=1, timeout=10)
            server.kill()
            bus_a = a.bus
            assert isinstance(bus_a, MqttBus)
            for _ in range(100):
                if not bus_a.connected:
                    break
                await asyncio.sleep(0.05)
            await a.manager(LimitsManager).update({"high": 12})
            await a.manager(LimitsManager).update({"high": 13})
            assert bus_a.stats.publish_failures >= 1
            await asyncio.sleep(0.3)
            assert limits_b.version() == 1
            server.start()
            change = await seen.wait_for(version=3, timeout=20)
            assert change.new is not None and change.new.high == 13
            assert seen.versions() == sorted(set(seen.versions()))
            bus_b = b.bus
            assert isinstance(bus_b, MqttBus) and bus_b.stats.connects >= 2
            for _ in range(200):
                if bus_a.connected and bus_a.stats.republished:
                    break
                await asyncio.sleep(0.05)
            # What A could not publish while the broker was away went out on reconnect
            # (only the newest notice of the document).
            assert bus_a.stats.republished == 1
            await a.manager(LimitsManager).update({"high": 14})
            await seen.wait_for(version=4, timeout=20)


async def test_broker_credentials_come_from_the_environment(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """A broker that refuses anonymous clients: the hubs connect with the user and
    password of their environment; a wrong password never connects (and is never shown)."""
    with own_mosquitto(users={"fleet": "pw-right-9"}) as server:
        env = {**hub_env, "CONFMAN_MQTT_USERNAME": "fleet", "CONFMAN_MQTT_PASSWORD": "pw-right-9"}
        async with (
            mqtt_hub(database_url, env, server.url, cluster, "a") as a,
            mqtt_hub(database_url, env, server.url, cluster, "b") as b,
        ):
            assert isinstance(a.bus, MqttBus) and isinstance(b.bus, MqttBus)
            await a.bus.wait_connected(10)
            await b.bus.wait_connected(10)  # authenticating can outlast start's short wait
            seen = record_changes(b.manager(LimitsManager))
            await a.manager(LimitsManager).update({"high": 21})
            await seen.wait_for(version=1, timeout=10)
            for _ in range(200):  # the notice may come after a catch-up applied it
                if b.stats.notices_received:
                    break
                await asyncio.sleep(0.05)
            assert b.stats.notices_received >= 1  # it went through the broker
        wrong = {**env, "CONFMAN_MQTT_PASSWORD": "pw-wrong-1"}
        async with mqtt_hub(database_url, wrong, server.url, cluster, "c") as c:
            assert isinstance(c.bus, MqttBus)
            await asyncio.sleep(0.5)
            assert not c.bus.connected and c.bus.stats.connects == 0
            assert "pw-wrong" not in repr(c.bus)


async def test_tls_broker_trusting_the_configured_ca(
    database_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """``mqtts://`` with ``CONFMAN_MQTT_CA_FILE``: changes flow over TLS; without that CA
    the certificate is refused and the bus never connects."""
    with own_mosquitto(tls=True) as server:
        env = {**hub_env, "CONFMAN_MQTT_CA_FILE": str(server.ca_file)}
        async with (
            mqtt_hub(database_url, env, server.url, cluster, "a") as a,
            mqtt_hub(database_url, env, server.url, cluster, "b") as b,
        ):
            assert isinstance(a.bus, MqttBus) and isinstance(b.bus, MqttBus)
            assert "mqtts://" in repr(a.bus)
            await a.bus.wait_connected(10)
            await b.bus.wait_connected(10)
            seen = record_changes(b.manager(LimitsManager))
            await a.manager(LimitsManager).update({"high": 31})
            await seen.wait_for(version=1, timeout=10)
        async with mqtt_hub(database_url, hub_env, server.url, cluster, "c") as c:
            assert isinstance(c.bus, MqttBus)
            await asyncio.sleep(0.5)
            assert not c.bus.connected  # the system's CAs do not know ours


async def test_a_subscriber_on_one_environment_hears_only_its_notices(
    database_url: str, mqtt_url: str, cluster: str, hub_env: dict[str, str]
) -> None:
    """A consumer that is not confman (mosquitto_sub) subscribed to
    ``<prefix>/staging/#`` hears staging's notices and nothing of the base or production;
    a confman instance in staging applies the base and staging, never production."""
    binary, stdbuf = shutil.which("mosquitto_sub"), shutil.which("stdbuf")
    if binary is None or stdbuf is None:
        pytest.skip("needs mosquitto_sub (mosquitto-clients) and stdbuf (coreutils)")
    host, port = broker_address(mqtt_url)
    prefix = f"confman/{cluster}"
    # "-d": debug lines too (the SUBACK says it is subscribed); "-v": topic and payload;
    # stdbuf: a line at a time, as a pipe would otherwise hold it until the exit.
    sub = await asyncio.create_subprocess_exec(
        stdbuf, "-oL", binary, "-h", host, "-p", str(port), "-q", "1", "-v", "-d",
        "-t", f"{prefix}/staging/#",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert sub.stdout is not None
    heard: list[tuple[str, dict[str, Any]]] = []

    async def until(predicate: Any) -> None:
        assert sub.stdout is not None
        while True:
            raw = await asyncio.wait_for(sub.stdout.readline(), 10)
            assert raw, "mosquitto_sub ended"
            line = raw.decode().rstrip("\n")
            if line.startswith(f"{prefix}/"):  # "-v": topic, a space, the payload
                topic, _, payload = line.partition(" ")
                heard.append((topic, json.loads(payload)))
            if predicate(line):
                return

    try:
        await until(lambda line: "SUBACK" in line)  # subscribed: nothing is lost now
        async with connect(database_url, hub_env, managers=[CountersManager]) as admin:
            await admin.create_environment("staging")
            await admin.create_environment("production")
        env = {**hub_env, "CONFMAN_MQTT_URL": mqtt_url}
        async with (
            connect(database_url, env, managers=[CountersManager], bus="mqtt",
                    cluster=cluster, instance_id="writer", **SLOW) as writer,
            connect(database_url, env, managers=[CountersManager], bus="mqtt",
                    cluster=cluster, instance_id="s", environment="staging", **SLOW) as s,
        ):  # fmt: skip
            seen = record_changes(s.manager(CountersManager))
            counters = writer.manager(CountersManager)
            await counters.create("k", {"value": 1})  # the base
            await counters.update({"note": "prod"}, key="k", environment="production")
            await counters.update({"note": "stage"}, key="k", environment="staging")
            await counters.update({"value": 2}, key="k")  # the base again
            await counters.update({"note": "last"}, key="k", environment="staging")
            await until(lambda line: '"version":2' in line)  # staging's v2, its last
            held = s.manager(CountersManager)

            def state() -> tuple[int, str] | None:
                found = held.find("k")
                return None if found is None else (found.value, found.note)

            for _ in range(200):  # the base's v2 and staging's v2, in either order
                if state() == (2, "last"):
                    break
                await asyncio.sleep(0.05)
            assert state() == (2, "last")
            assert {c.environment for c in seen.changes} == {None, "staging"}
    finally:
        sub.terminate()
        await asyncio.wait_for(sub.wait(), 10)
    assert [t for t, _ in heard] == [f"{prefix}/staging/counters/k"] * 2
    assert [(n["environment"], n["version"]) for _, n in heard] == [("staging", 1), ("staging", 2)]
    fields = {"namespace", "key", "version", "seq", "origin", "environment", "quiet", "change"}
    assert all(set(n) == fields for _, n in heard)  # "change": sealed with the hubs' key
