"""Change buses: the `ChangeBus` protocol and its transports."""

from .base import ChangeBus, ChangeNotice, NoticeHandler
from .local import LocalBus

__all__ = ["ChangeBus", "ChangeNotice", "LocalBus", "NoticeHandler"]
