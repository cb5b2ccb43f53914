"""The change bus: how instances hint each other that a document changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ChangeBus", "ChangeNotice", "NoticeHandler"]


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """A hint, never the data: a receiver reads the document from the database."""

    namespace: str
    key: str
    version: int
    seq: int
    origin: str


NoticeHandler = Callable[[ChangeNotice], None]


@runtime_checkable
class ChangeBus(Protocol):
    """What the hub needs from a transport. Delivery is best effort: the hub's catch-up
    from the change log repairs anything a bus loses, so a bus may drop, never invent."""

    async def start(self, handler: NoticeHandler) -> None:
        """Begin delivering other instances' notices to ``handler`` (on the hub's loop)."""

    async def publish(self, notice: ChangeNotice) -> None:
        """Send a notice; must not raise on transport failure (log and count instead)."""

    async def close(self) -> None:
        """Stop delivering and release every resource."""
