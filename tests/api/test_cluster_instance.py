"""``/api/v1/cluster`` describes this instance (host, PID, start) with or without Redis."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from .servers import Server


def test_a_lone_instance_says_where_and_since_when_it_runs(sqlite_server: Server) -> None:
    body = sqlite_server.client("viewer").get("/api/v1/cluster").json()
    (this,) = body["instances"]
    assert this["host"] == socket.gethostname()
    assert this["pid"] == sqlite_server.proc.pid
    started = datetime.fromisoformat(this["started_at"])
    assert started.tzinfo is not None and started <= datetime.now(UTC)
