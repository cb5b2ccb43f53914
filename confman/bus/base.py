"""The change bus: how instances hint each other that a document changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "ChangeBus",
    "ChangeNotice",
    "CommitNotifyingBus",
    "NoticeHandler",
    "ReconnectHandler",
    "ReconnectingBus",
]


@dataclass(frozen=True, slots=True)
class ChangeNotice:
    """A hint: a receiver reads the document from the database, unless ``change`` holds
    it sealed with the hubs' key (`confman.sealed`), which a transport carries as it is."""

    namespace: str
    key: str
    version: int
    seq: int
    origin: str
    environment: str = ""  # '' for the base, else the environment whose document changed
    change_set: str | None = None  # the set the change was committed in (applied whole)
    # Whether the writer waits for the instances' replies (`wait_for_instances`). A notice
    # of an older writer says nothing, which means it may.
    replies: bool = True
    change: str | None = None  # the committed row, sealed; None: read it


NoticeHandler = Callable[[ChangeNotice], None]
ReconnectHandler = Callable[[], None]


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


@runtime_checkable
class ReconnectingBus(ChangeBus, Protocol):
    """A bus that can lose its connection (and so notices) and knows when it is back.

    Optional: the hub checks ``isinstance(bus, ReconnectingBus)`` and, if so, hands it a
    callback before `start`. The bus calls it (on the hub's loop) after every successful
    (re)subscription, and the hub then catches up from the change log at once instead of
    waiting for its next periodic run.
    """

    def set_reconnect_handler(self, handler: ReconnectHandler) -> None:
        """Call ``handler`` after each (re)connect; ``None``-safe to call before start."""


@runtime_checkable
class CommitNotifyingBus(ChangeBus, Protocol):
    """A bus whose notices the database itself sends, in the committing transaction.

    Optional: the hub checks ``isinstance(bus, CommitNotifyingBus)`` and, if so, has
    the store send each write's notice with ``NOTIFY`` on `notify_channel` inside the
    write's own transaction (PostgreSQL delivers it at COMMIT, exactly when the change
    becomes visible, and never for a write that rolled back), and then does not call
    `publish` for its writes. A writer dying after its commit has therefore already
    told everyone.
    """

    @property
    def notify_channel(self) -> str:
        """The PostgreSQL channel the store notifies and the bus listens on."""
        ...
