"""The in-process bus: hubs in one process on one database hear each other at once."""

from __future__ import annotations

import asyncio
import weakref
from typing import ClassVar

from .base import ChangeNotice, NoticeHandler

__all__ = ["LocalBus"]


class LocalBus:
    """Delivers notices to every other started `LocalBus` on the same ``channel``.

    Other processes are reached through the hub's catch-up from the change log, which is
    why the default channel is the database URL.

    Args:
        channel: buses on the same channel hear each other.
    """

    _channels: ClassVar[dict[str, weakref.WeakSet[LocalBus]]] = {}

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._handler: NoticeHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, handler: NoticeHandler) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._channels.setdefault(self.channel, weakref.WeakSet()).add(self)

    async def publish(self, notice: ChangeNotice) -> None:
        for bus in list(self._channels.get(self.channel, ())):
            if bus is not self:
                bus._deliver(notice)

    def _deliver(self, notice: ChangeNotice) -> None:
        handler, loop = self._handler, self._loop
        if handler is None or loop is None or loop.is_closed():
            return
        # Never run a receiver inside the writer's call stack, and cross loops safely.
        loop.call_soon_threadsafe(handler, notice)

    async def close(self) -> None:
        self._handler = None
        members = self._channels.get(self.channel)
        if members is not None:
            members.discard(self)
            if not members:
                self._channels.pop(self.channel, None)
