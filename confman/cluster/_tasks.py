"""Stopping background tasks that talk to Redis or PostgreSQL, robustly; the errors a
fleet's coordination may meet and survive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("confman.cluster")


def _transient() -> tuple[type[BaseException], ...]:
    """Connection-level failures of the coordination backends that are installed."""
    from ..exceptions import ConfmanError

    found: list[type[BaseException]] = [OSError, TimeoutError, ConfmanError]
    with contextlib.suppress(ImportError):
        from redis.exceptions import RedisError

        found.append(RedisError)
    with contextlib.suppress(ImportError):
        import asyncpg  # type: ignore[import-untyped]

        found += [asyncpg.PostgresError, asyncpg.InterfaceError]
    return tuple(found)


#: What heartbeats, replies and status calls catch and count rather than raise.
TRANSIENT = _transient()


async def stop_task(task: asyncio.Task[Any] | None, timeout: float = 2.0) -> None:
    """Cancel ``task`` and wait for it, at most ``timeout`` seconds.

    A client library may swallow a cancellation that lands inside one of its calls; the
    task then goes on. Our loops also check a stop flag, and we cancel again until the
    task is done rather than wait forever.
    """
    if task is None or task.done():
        return
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            log.warning("task %s did not stop in time; abandoning it", task.get_name())
            return
        await asyncio.wait({task}, timeout=min(0.2, left))
    if not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())
