"""What each change event carries, built once per change for every stream that sends it.

A remote hub applies events without asking for anything else (issue 14), so each event
carries the stored document the change wrote, secrets masked or, for a service token, in
clear. One server may stream a change to thousands of clients: the document is read from
the change log once per change (concurrent streams wait for the same read) and each
encoded event is kept, per form, in a cache bounded by bytes. What a stream queues for
its client is the small event without the document; the document joins it as it is sent,
so a slow client's outbox stays as small as before.

A document larger than ``StreamLimits.max_event_data`` is not sent: the event says
``data_omitted`` and the client reads it with ``GET /api/v1/layers``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any

from cachetools import LRUCache

from confman import ConfigChange, ConfigHub, ConfmanError
from confman.change import BASE

from . import models
from .layers import stored_form_for
from .problems import ApiProblem
from .stream import StreamLimits, frame

__all__ = ["EventData", "event_data_of"]

log = logging.getLogger("confman.api.events")

_EVENTS_KEPT = 4096  # events (without documents) kept by seq
_FRAMES_BYTES = 16 << 20  # encoded events with documents, both forms together
_READS_KEPT = 256  # documents read, by seq (each at most max_event_data)
_OMITTED: Any = object()  # a document not sent (too large, or no longer readable)

# Each hub's EventData (the newest, if several apps serve one hub), for /metrics.
_BY_HUB: weakref.WeakKeyDictionary[ConfigHub, EventData] = weakref.WeakKeyDictionary()


def event_data_of(hub: ConfigHub) -> EventData | None:
    """The `EventData` an app made for ``hub`` (None before one was made)."""
    return _BY_HUB.get(hub)


def encode(event: models.ChangeEvent) -> bytes:
    return frame(event.model_dump_json(), event="change", id=str(event.seq))


class EventData:
    """The server's shared cache of change events (one per app)."""

    def __init__(self, hub: ConfigHub, limits: StreamLimits) -> None:
        self._hub = hub
        self._max_data = limits.max_event_data
        self._events: LRUCache[int, tuple[models.ChangeEvent, bytes]] = LRUCache(_EVENTS_KEPT)
        self._frames: LRUCache[tuple[int, bool], bytes] = LRUCache(_FRAMES_BYTES, getsizeof=len)
        # Each change's document read (kept a while: the second form needs it too).
        self._reads: LRUCache[int, asyncio.Future[Any]] = LRUCache(_READS_KEPT)
        self.reads = 0  # change-log reads made for events (a metric: one per change)
        _BY_HUB[hub] = self

    def queued(self, event: models.ChangeEvent) -> bytes:
        """The event without its document, as a stream queues it; starts the read of the
        document so that it is (usually) there by the time the event is sent."""
        found = self._events.get(event.seq)
        if found is None:
            found = (event, encode(event))
            self._events[event.seq] = found
            self._read(event)
        return found[1]

    def live(self, change: ConfigChange[Any]) -> bytes:
        found = self._events.get(change.seq)
        if found is not None:
            return found[1]
        if change.written is not None and change.seq not in self._reads:
            # The instance had the stored document at hand: no read back.
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(self._bounded(change.written[0]))
            self._reads[change.seq] = done
        return self.queued(models.from_change(change))

    async def complete(self, seq: int, queued: bytes, *, reveal: bool) -> bytes:
        """The event ``queued`` (from `queued`), with its document in the reader's form."""
        sent = self._frames.get((seq, reveal))
        if sent is not None:
            return sent
        found = self._events.get(seq)
        if found is None:  # evicted meanwhile (a client far behind): the client reads it
            return queued if b'"data_omitted":true' in queued else self._omitted_frame(queued)
        event = found[0]
        stored = await self._read(event)
        # Every stream that asked while the read was pending resumes here: the first one
        # encodes the event, the others take its frame (no await in between).
        sent = self._frames.get((seq, reveal))
        if sent is not None:
            return sent
        if stored is _OMITTED:
            sent = encode(event.model_copy(update={"data_omitted": True}))
        else:
            try:
                data = stored_form_for(self._hub, stored, reveal=reveal)
            except ApiProblem:
                data = _OMITTED
            if data is _OMITTED:
                sent = encode(event.model_copy(update={"data_omitted": True}))
            else:
                sent = encode(event.model_copy(update={"data": data}))
                if len(sent) - len(queued) > self._max_data:
                    sent = encode(event.model_copy(update={"data_omitted": True}))
        self._frames[(seq, reveal)] = sent
        return sent

    @staticmethod
    def _omitted_frame(queued: bytes) -> bytes:
        return queued.replace(b'"data_omitted":false', b'"data_omitted":true', 1)

    def _read(self, event: models.ChangeEvent) -> asyncio.Future[Any]:
        pending = self._reads.get(event.seq)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(event))
            self._reads[event.seq] = pending
        return pending

    async def _fetch(self, event: models.ChangeEvent) -> Any:
        self.reads += 1
        try:
            logged = await self._hub.store.change_at(
                event.namespace, event.key, event.version, environment=event.environment or BASE
            )
        except ConfmanError as e:  # pruned, or the database is away: the client reads it
            log.info("event %s sent without its document: %s", event.seq, e)
            return _OMITTED
        return self._bounded(logged.data)

    def _bounded(self, data: Any) -> Any:
        if data is not None and len(json.dumps(data, separators=(",", ":"))) > self._max_data:
            return _OMITTED  # encrypted secrets are longer than clear ones: a safe bound
        return data
