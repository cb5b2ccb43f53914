"""Remote hubs against real ``confman serve`` processes (the fixtures of tests/api)."""

from ..api.conftest import Spawn, server, spawn, sqlite_server  # noqa: F401 (fixtures)
