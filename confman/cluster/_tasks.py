"""Stopping background tasks that talk to Redis, robustly."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("confman.cluster")


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
