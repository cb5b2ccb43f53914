"""Change buses: the `ChangeBus` protocol and its transports."""

from .base import (
    ChangeBus,
    ChangeNotice,
    CommitNotifyingBus,
    NoticeHandler,
    ReconnectHandler,
    ReconnectingBus,
)
from .local import LocalBus

__all__ = [
    "ChangeBus",
    "ChangeNotice",
    "CommitNotifyingBus",
    "LocalBus",
    "NoticeHandler",
    "ReconnectHandler",
    "ReconnectingBus",
]
