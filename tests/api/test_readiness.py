"""``/healthz`` and ``/readyz``: schema not at head, database unreachable, and start-up.

Each test changes only the database it owns (the ``database_url`` fixture or one it made).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from confman.store import head_revision

from ..support import (
    POSTGRES_ADMIN_URL,
    drop_pg_database,
    new_pg_database,
    pg_admin,
    pg_url,
    require_service,
    run,
)
from .conftest import Spawn, server_env
from .servers import Server, TcpProxy, assert_problem, confman, wait_for

CACHE = "/api/v1/namespaces/cache/documents/default"


async def execute(database_url: str, sql: str) -> None:
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with sqlite3.connect(path) as conn:
            conn.execute(sql)
        return
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def readiness(server: Server) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=10)


def test_readyz_is_503_while_the_schema_is_not_at_head(database_url: str, spawn: Spawn) -> None:
    server = spawn(database_url)
    ready = readiness(server)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "schema_revision": head_revision()}
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}

    run(execute(database_url, "DELETE FROM alembic_version"))  # our own database only
    unready = readiness(server)
    assert unready.status_code == 503, unready.text
    assert unready.json()["status"] == "unready"
    assert "schema" in unready.json()["database"] and head_revision() in unready.json()["database"]
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # the process still answers
    assert server.client("viewer").get(CACHE).status_code == 200  # reads from memory

    run(execute(database_url, f"INSERT INTO alembic_version VALUES ('{head_revision()}')"))
    assert readiness(server).status_code == 200


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """PostgreSQL behind a proxy the test can cut."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    host_port = POSTGRES_ADMIN_URL.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    found = TcpProxy(host, int(port))
    yield found
    found.close()


def through(proxy: TcpProxy, database_url: str) -> str:
    name = database_url.rsplit("/", 1)[1]
    user = POSTGRES_ADMIN_URL.split("//", 1)[1].split("@", 1)[0]
    return f"postgresql://{user}@127.0.0.1:{proxy.port}/{name}"


def check_unreachable(server: Server, editor: httpx.Client, max_entries: int) -> None:
    unready = readiness(server)
    assert unready.status_code == 503, unready.text
    assert unready.json()["status"] == "unready"
    assert "unreachable" in unready.json()["database"], unready.json()
    read = editor.get(CACHE)  # docs/api.md: reads still answer from memory
    assert read.status_code == 200 and read.json()["value"]["max_entries"] == max_entries
    refused = editor.patch(CACHE, json={"max_entries": max_entries + 1})
    assert refused.status_code == 503, refused.text  # the documented status, not a 500
    assert_problem(refused, 503)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_unreachable_database_503_but_reads_answer(
    database_url: str, proxy: TcpProxy, spawn: Spawn
) -> None:
    server = spawn(through(proxy, database_url))
    editor = server.client("editor")
    assert editor.patch(CACHE, json={"max_entries": 11}).status_code == 200
    proxy.cut()
    check_unreachable(server, editor, 11)
    proxy.restore()
    wait_for(lambda: readiness(server).status_code == 200, timeout=15)
    written = wait_for(
        lambda: (w := editor.patch(CACHE, json={"max_entries": 13})).is_success and w
    )
    assert written.json()["value"]["max_entries"] == 13


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_database_refusing_connections_is_503_too(database_url: str, spawn: Spawn) -> None:
    """The database is up but refuses connections (maintenance; a failover says "the
    database system is shutting down" the same way): as unreachable as a closed port.

    Found: such connect-time errors are not taken for unavailability, so every read
    of the database (writes, history, rollback, namespaces) answers a bare 500.
    """
    server = spawn(database_url)
    editor = server.client("editor")
    assert editor.patch(CACHE, json={"max_entries": 21}).status_code == 200
    name = database_url.rsplit("/", 1)[1]
    run(pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))  # ours only
    try:
        run(
            pg_admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )
        )
        check_unreachable(server, editor, 21)
    finally:
        run(pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    wait_for(lambda: readiness(server).status_code == 200, timeout=15)


def test_serve_refuses_an_unmigrated_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()  # exists, so serve does not create and migrate it
    result = confman(
        "serve", "--database-url", f"sqlite+aiosqlite:///{path}", "--port", "0",
        env=server_env(), cwd=tmp_path, code=1, timeout=30,
    )  # fmt: skip
    assert "confman db upgrade" in result.stderr


def test_serve_refuses_an_unmigrated_postgresql_database(pg_template: str, tmp_path: Path) -> None:
    name = run(new_pg_database())  # empty: never migrated
    try:
        result = confman(
            "serve", "--database-url", pg_url(name), "--port", "0",
            env=server_env(), cwd=tmp_path, code=1, timeout=30,
        )  # fmt: skip
        assert "confman db upgrade" in result.stderr
    finally:
        run(drop_pg_database(name))
