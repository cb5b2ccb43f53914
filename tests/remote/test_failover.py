"""A remote hub through server failures: a failover between two servers over one
database, a start from the snapshot file while the server is down, a revoked token."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from confman import ConfigChange, PermissionDenied, StoreUnavailable
from confman.managers import ModelProviderConfigurationManager

from ..api.servers import Server, TcpProxy, create_tokens, database_seq, unique
from ..support import connect
from .conftest import Spawn
from .support import remote, until

MANAGERS = [ModelProviderConfigurationManager]
PATH = "/api/v1/namespaces/model_provider/documents/{}"
OLLAMA = {"type": "ollama", "base_url": "http://127.0.0.1:11434"}
FAST = {"reconnect_delay": (0.05, 0.5)}  # reconnect at once: the tests wait for it


@contextlib.contextmanager
def proxy_to(server: Server) -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", server.port)
    try:
        yield proxy
    finally:
        proxy.close()


def through(proxy: TcpProxy, server: Server, token: str, **options: Any) -> Any:
    """A remote hub that reaches ``server``'s API through ``proxy``."""
    from confman.remote import RemoteHub

    options.setdefault("env", {})
    options.setdefault("env_files", [])
    return RemoteHub.connect(
        f"http://127.0.0.1:{proxy.port}", token=server.tokens[token], managers=MANAGERS,
        **options,
    )  # fmt: skip


def versions_of(seen: list[ConfigChange[Any]], key: str) -> list[int]:
    return [c.version for c in seen if c.key == key]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_failover_between_two_servers_misses_and_repeats_nothing(
    database_url: str, redis_url: str, cluster: str, spawn: Spawn
) -> None:
    """Two servers share PostgreSQL (and Redis); the hub is moved from one to the other
    and back while both take writes: it emits every version once, in order."""
    fleet = ("--redis-url", redis_url, "--cluster", cluster)
    first = spawn(database_url, *fleet)
    second = spawn(database_url, *fleet, tokens=first.tokens)
    key = unique("failover")
    with first.client("editor") as editor:
        assert editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 1}).status_code == 201
    rounds = 60
    with proxy_to(first) as proxy:
        async with through(proxy, first, "viewer", **FAST) as hub:
            providers = hub.manager(ModelProviderConfigurationManager)
            seen: list[ConfigChange[Any]] = []
            providers.changes.subscribe(seen.append)
            async with first.aclient("editor") as one, second.aclient("editor") as two:
                for i in range(2, rounds + 1):
                    writer = one if i % 2 else two  # writes land on both servers
                    answer = await writer.patch(PATH.format(key), json={"rpm_limit": i})
                    assert answer.status_code == 200, answer.text
                    if i % 10 == 0:  # fail over, to the other server
                        target = second if (i // 10) % 2 else first
                        proxy.retarget(target.port)
                    await asyncio.sleep(0.02)
            await until(lambda: providers.version(key) == rounds, 20, "the last version")
            await asyncio.sleep(0.5)  # anything repeated would come now
            assert versions_of(seen, key) == list(range(2, rounds + 1))
            assert providers.get(key).rpm_limit == rounds
            # It did move, every time: the last move (after the last write) may still be
            # reconnecting when the last version is in.
            await until(
                lambda: hub.remote_stats.connects >= 6 and not hub.degraded, 10, "the last move"
            )
            assert versions_of(seen, key) == list(range(2, rounds + 1))  # nothing repeated
    assert first.server_errors() == [] and second.server_errors() == []


async def test_a_start_while_the_server_is_down_serves_the_snapshot(
    database_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    server = spawn(database_url)
    key = unique("snap")
    with server.client("editor") as editor:
        body = {"type": "openai", "api_key": "sk-snapshot-secret", "rpm_limit": 3}
        assert editor.put(PATH.format(key), json=body).status_code == 201
    snapshot = tmp_path / "remote-snapshot.json"
    async with remote(server, "service", MANAGERS, snapshot_path=snapshot) as hub:
        assert hub.manager(ModelProviderConfigurationManager).get(key).rpm_limit == 3
        await until(snapshot.exists, 10, "the snapshot file")
    port = server.port
    server.stop()

    async with remote(server, "service", MANAGERS, snapshot_path=snapshot, **FAST) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        assert hub.degraded
        assert isinstance(hub.last_error, StoreUnavailable), hub.last_error
        assert providers.get(key).rpm_limit == 3 and providers.version(key) == 1
        secret = providers.get(key).api_key
        assert secret is not None and secret.get_secret_value() == "sk-snapshot-secret"
        seen: list[ConfigChange[Any]] = []
        providers.changes.subscribe(seen.append)
        # Meanwhile a change is committed (straight to the database), and the server
        # comes back where it was: the hub streams again and receives it.
        env = {"CONFMAN_ENCRYPTION_KEY": server.env["CONFMAN_ENCRYPTION_KEY"]}
        async with connect(database_url, env, managers=MANAGERS) as direct:
            await direct.manager(ModelProviderConfigurationManager).update(
                {"rpm_limit": 4}, key=key
            )
        assert hub.degraded  # nothing to stream from yet
        spawn(database_url, port=port, tokens=server.tokens)
        await hub.wait_streaming(20)
        await until(lambda: providers.version(key) == 2, 10, "the change made meanwhile")
        assert not hub.degraded and hub.last_error is None
        assert providers.get(key).rpm_limit == 4
        assert [c.version for c in seen] == [2]


async def test_a_revoked_token_ends_the_stream_and_keeps_the_values(server: Server) -> None:
    name = unique("doomed")
    tokens = create_tokens(
        server.database_url, server.env, server.workdir, {name: ("viewer", None)}
    )
    key = unique("revoke")
    with server.client("editor") as editor:
        assert editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 7}).status_code == 201
    from confman.remote import RemoteHub

    async with RemoteHub.connect(
        server.url, token=tokens[name], managers=MANAGERS, env={}, env_files=[], **FAST
    ) as hub:
        providers = hub.manager(ModelProviderConfigurationManager)
        await hub.wait_streaming(10)
        assert not hub.degraded
        await server.acli("tokens", "revoke", name)
        await until(lambda: hub.degraded, 20, "the stream to end")
        await until(lambda: isinstance(hub.last_error, PermissionDenied), 10, "PermissionDenied")
        assert providers.get(key).rpm_limit == 7 and providers.version(key) == 1
        await asyncio.sleep(1.0)  # it keeps trying (and being refused), still degraded
        assert hub.degraded and isinstance(hub.last_error, PermissionDenied)
        assert providers.get(key).rpm_limit == 7


async def prune_change_log(database_url: str, below: int) -> None:
    """What retention does: the change log's rows before ``below`` are gone."""
    sql = f"DELETE FROM config_changes WHERE seq < {int(below)}"
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]

        def prune() -> None:
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as db, db:
                db.execute(sql)

        await asyncio.to_thread(prune)
        return
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_resume_from_a_pruned_log_reads_everything_afresh(
    database_url: str, spawn: Spawn
) -> None:
    """Cut off while changes (an update, a delete, a create) are made and the change log
    is pruned past its resume point: the hub's resume is a 409, it reads every document
    again, and ends with the server's state, each change emitted once."""
    server = spawn(database_url)
    kept, gone, new = unique("kept"), unique("gone"), unique("new")
    with server.client("editor") as editor:
        for key in (kept, gone):
            assert editor.put(PATH.format(key), json={**OLLAMA, "rpm_limit": 1}).status_code == 201
    with proxy_to(server) as proxy:
        async with through(proxy, server, "viewer", **FAST) as hub:
            providers = hub.manager(ModelProviderConfigurationManager)
            await hub.wait_streaming(10)
            seen: list[ConfigChange[Any]] = []
            providers.changes.subscribe(seen.append)
            proxy.cut()
            await until(lambda: hub.degraded, 10, "the cut")
            with server.client("editor") as editor:
                for i in range(2, 6):
                    answer = editor.patch(PATH.format(kept), json={"rpm_limit": i})
                    assert answer.status_code == 200, answer.text
                deleted = editor.delete(PATH.format(gone), headers={"If-Match": '"1"'})
                assert deleted.status_code in (200, 204), deleted.text
                made = editor.put(PATH.format(new), json={**OLLAMA, "rpm_limit": 9})
                assert made.status_code == 201, made.text
                newest = database_seq(editor)
            await prune_change_log(database_url, below=newest)
            assert hub.applied_seq < newest - 1  # its resume point is gone
            proxy.restore()
            await hub.wait_streaming(20)
            await until(lambda: new in set(providers.keys()), 10, "the resync")
            assert hub.remote_stats.resyncs >= 1, hub.remote_stats
            assert providers.version(kept) == 5 and providers.get(kept).rpm_limit == 5
            assert gone not in set(providers.keys())
            assert providers.get(new).rpm_limit == 9
            # A change after the resync streams as usual.
            with server.client("editor") as editor:
                assert editor.patch(PATH.format(kept), json={"rpm_limit": 6}).status_code == 200
            await until(lambda: providers.version(kept) == 6, 10, "the next change")
            await asyncio.sleep(0.3)
    by_key = {key: [c.version for c in seen if c.key == key] for key in (kept, gone, new)}
    assert by_key[kept] == [5, 6], by_key  # the newest only, then the next, once each
    assert len(by_key[gone]) == 1 and len(by_key[new]) == 1, by_key
    assert [c.new is None for c in seen if c.key == gone] == [True]


async def test_reconnects_back_off_through_an_outage(server: Server) -> None:
    """After a stream that was up a good while is lost, the waits between reconnects
    start short and double (full jitter) up to the longest: not a retry every few tens
    of milliseconds for the whole outage, from every client at once."""
    with proxy_to(server) as proxy:
        async with through(proxy, server, "viewer", reconnect_delay=(0.1, 1.6)) as hub:
            await hub.wait_streaming(10)
            await asyncio.sleep(2.0)  # up longer than the longest wait: a new outage next
            proxy.cut()  # every attempt is refused at once
            await asyncio.sleep(4.0)
            attempts = hub.remote_stats.drops
            proxy.restore()
            await hub.wait_streaming(10)
    # Waits drawn up to 0.1, 0.2, 0.4, 0.8, 1.6, 1.6, ... s: about ten in 4 s; a wait
    # that never grew (up to 0.1 s) would make about eighty.
    assert 2 <= attempts <= 25, attempts
