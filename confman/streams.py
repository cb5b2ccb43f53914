"""Rx plumbing: a subject whose subscribers cannot hurt each other.

Notifications are delivered synchronously, on the thread that applied the change: for
changes this instance writes, inside the writer's ``await manager.update(...)``; for
changes from other instances, in the hub's catch-up or notice task. Both run on the
hub's event loop. A subscriber that wants another thread or loop asks for it with
``ops.observe_on(scheduler)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from reactivex.subject import Subject

__all__ = ["IsolatingSubject"]

_T = TypeVar("_T")
log = logging.getLogger("confman.streams")


class IsolatingSubject(Subject[_T]):
    """A `reactivex.subject.Subject` that survives its subscribers.

    In plain Rx an exception raised by one observer unwinds through the subject and
    every observer after it misses the value. Here each observer is called on its own:
    an exception is logged, counted through ``on_subscriber_error`` and swallowed, the
    remaining observers still get the value, and the failing one stays subscribed
    (a transient failure must not silently end its configuration updates).
    """

    def __init__(self, on_subscriber_error: Callable[[BaseException], None]) -> None:
        super().__init__()
        self._on_subscriber_error = on_subscriber_error

    def _on_next_core(self, value: _T) -> None:
        with self.lock:
            observers = self.observers.copy()
        for observer in observers:
            try:
                observer.on_next(value)
            except Exception as e:
                log.exception("a change subscriber raised; other subscribers are unaffected")
                self._on_subscriber_error(e)
