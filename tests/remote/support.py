"""Helpers of the remote-hub tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confman.remote import RemoteHub

from ..api.servers import Server


async def until(
    predicate: Any, timeout: float = 10.0, what: str = "", interval: float = 0.02
) -> None:
    """Poll ``predicate`` (every ``interval`` s) until it is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def remote(server: Server, token: str, managers: list[Any], **options: Any) -> Any:
    """``RemoteHub.connect`` to ``server`` with ``token`` (a standard token's name),
    isolated from the real environment and env files."""
    options.setdefault("env", {})
    options.setdefault("env_files", [])
    return RemoteHub.connect(server.url, token=server.tokens[token], managers=managers, **options)
