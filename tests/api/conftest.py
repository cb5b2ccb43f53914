"""Fixtures of the HTTP API tests: real ``confman serve`` processes over own databases.

``server`` (module-scoped, once per database kind) and ``sqlite_server`` serve a migrated
database of their own with the `STANDARD_TOKENS`; tests sharing one isolate themselves by
writing their own collection keys. ``spawn`` starts further servers for one test (over the
function-scoped ``database_url`` fixture, say) and stops them afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from confman.secrets import generate_key

from ..support import own_database
from .servers import STANDARD_TOKENS, Server, clean_env, create_tokens, start_server


def server_env() -> dict[str, str]:
    return clean_env(CONFMAN_ENCRYPTION_KEY=generate_key())


@contextlib.contextmanager
def standard_server(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    **extra_env: str,
) -> Iterator[Server]:
    """A server over an own database of ``kind`` with the `STANDARD_TOKENS`."""
    directory = tmp_path_factory.mktemp(f"api-{kind}")
    with own_database(kind, request, directory) as url:
        env = {**server_env(), **extra_env}
        tokens = create_tokens(url, env, directory, STANDARD_TOKENS)
        server = start_server(url, env, directory, tokens)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of this module, once over SQLite and once over PostgreSQL."""
    with standard_server(request.param, request, tmp_path_factory) as s:
        yield s


@pytest.fixture(scope="module")
def sqlite_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of this module over SQLite."""
    with standard_server("sqlite", request, tmp_path_factory) as s:
        yield s


Spawn = Callable[..., Server]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(database_url, *serve_args, env=..., tokens=..., port=...)``: a server for
    this test (``port``: on that port, say the one of a server the test killed).

    Without ``tokens`` the `STANDARD_TOKENS` are created first (once per database).
    Every server started is stopped (by PID) at teardown.
    """
    started: list[Server] = []
    made: dict[str, dict[str, str]] = {}
    envs: dict[str, dict[str, str]] = {}  # one encryption key per database

    def start(
        database_url: str,
        *extra_args: str,
        env: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        port: int | None = None,
    ) -> Server:
        if env is None:
            env = envs.setdefault(database_url, server_env())
        if tokens is None:
            if database_url not in made:
                made[database_url] = create_tokens(database_url, env, tmp_path, STANDARD_TOKENS)
            tokens = made[database_url]
        server = start_server(
            database_url, env, tmp_path, tokens, *extra_args, name=f"server{len(started)}",
            port=port,
        )  # fmt: skip
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
