"""Change buses: the `ChangeBus` protocol and its transports."""

from .base import ChangeBus, ChangeNotice, NoticeHandler, ReconnectHandler, ReconnectingBus
from .local import LocalBus

__all__ = [
    "ChangeBus",
    "ChangeNotice",
    "LocalBus",
    "NoticeHandler",
    "ReconnectHandler",
    "ReconnectingBus",
]
