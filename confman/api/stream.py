"""A server-sent event response whose memory and send time are bounded per client.

FastAPI's generator streams cannot bound a slow client: while a send waits for a client
that does not read, everything queued for it stays queued, and an "end of stream" marker
waits behind the blocked send forever. `BoundedEventStream` keeps what waits for a client
in an `Outbox` bounded by events and bytes; crossing either bound, or a send that does
not finish within the deadline, ends the response at once, cancelling the blocked send.
The client then resumes with ``Last-Event-ID`` and reads what it missed from the change
log, so a slow reader costs the server bounded memory and loses nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, fields

import anyio
from fastapi.sse import format_sse_event
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from confman import ConfmanError

__all__ = [
    "KEEPALIVE",
    "BoundedEventStream",
    "Outbox",
    "StreamLimits",
    "StreamLimitsInvalid",
    "frame",
]

log = logging.getLogger("confman.api.events")

KEEPALIVE = b": ping\n\n"  # as FastAPI's streams send it
_ENV_PREFIX = "CONFMAN_STREAM_"


class StreamLimitsInvalid(ConfmanError):
    """A stream limit that is not a positive number."""


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Bounds of each ``/api/v1/events`` stream (documented in docs/api.md).

    Attributes:
        max_events: events waiting for one client before its stream is ended.
        max_bytes: bytes of events waiting for one client before its stream is ended.
        send_timeout: seconds one send to a client may take before its stream is ended.
        replay_page: change-log records read per query when a client resumes.
        ping_interval: seconds of silence before a keep-alive comment is sent.
        max_event_data: bytes of stored document an event carries; a larger one is
            left out (``data_omitted``) and read by the client on its own.
    """

    max_events: int = 10_000
    max_bytes: int = 1 << 20
    send_timeout: float = 15.0
    replay_page: int = 500
    ping_interval: float = 15.0
    max_event_data: int = 64 * 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise StreamLimitsInvalid(f"stream limit {f.name}: must be a positive number")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> StreamLimits:
        """The defaults, overridden by ``CONFMAN_STREAM_<FIELD>`` variables (upper case).

        Raises:
            StreamLimitsInvalid: a variable that is not a positive number (it is named).
        """
        environ = os.environ if environ is None else environ
        found: dict[str, int | float] = {}
        for f in fields(cls):
            name = _ENV_PREFIX + f.name.upper()
            raw = environ.get(name)
            if raw is None:
                continue
            whole = f.type == "int"
            try:
                value = int(raw) if whole else float(raw)
            except ValueError:
                value = 0
            if not value > 0 or value == float("inf"):
                kind = "a whole number" if whole else "a number"
                raise StreamLimitsInvalid(f"{name}: must be {kind} greater than 0")
            found[f.name] = value
        return cls(**found)  # type: ignore[arg-type]


def frame(data: str, *, event: str, id: str) -> bytes:
    """One event in the text/event-stream format."""
    return format_sse_event(data_str=data, event=event, id=id)


class Outbox:
    """Events waiting for one client, bounded; crossing a bound ends the stream.

    ``put`` is called synchronously by the managers' change subjects; it never blocks and
    never grows past the bounds: ending the stream drops what waits at once.
    """

    def __init__(self, limits: StreamLimits) -> None:
        self._limits = limits
        self._items: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self._ready = anyio.Event()
        self._over = anyio.Event()
        self.ended: str | None = None  # why, once ended

    def put(self, seq: int, chunk: bytes) -> None:
        if self.ended is not None:
            return
        if (
            len(self._items) >= self._limits.max_events
            or self._bytes + len(chunk) > self._limits.max_bytes
        ):
            self.end("too far behind")
            return
        self._items.append((seq, chunk))
        self._bytes += len(chunk)
        self._ready.set()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self._items.clear()
            self._bytes = 0
            self._over.set()
            self._ready.set()

    def __len__(self) -> int:
        return len(self._items)

    async def wait_ended(self) -> None:
        await self._over.wait()

    def wake(self) -> None:
        """Make a waiting `get` return None (the stream is due a keep-alive)."""
        self._ready.set()

    async def get(self) -> tuple[int, bytes] | None:
        """The next event, or None when woken without one (`wake`, `end`).

        No deadline of its own: a cancel scope per wait cost more than the rest of a
        change's delivery, with a thousand streams; the stream's watchdog wakes it."""
        if not self._items:
            self._ready = anyio.Event()
            await self._ready.wait()
            if not self._items:
                return None
        seq, chunk = self._items.popleft()
        self._bytes -= len(chunk)
        return seq, chunk


# What a stream sends: given a ``send(chunk)`` that honours the deadline, it sends the
# opening events and then the outbox's, until it returns or is cancelled.
Pump = Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]


class BoundedEventStream(StreamingResponse):
    """A text/event-stream response fed by ``pump``, cut off as the outbox says.

    The stream ends when the client disconnects, when ``outbox`` ends (too far behind,
    a revoked token), or when one send takes longer than ``limits.send_timeout``. A send
    blocked on a client that does not read is cancelled, not waited for; the response is
    then left incomplete and the server closes the connection, dropping what it queued.
    """

    media_type = "text/event-stream"

    def __init__(self, pump: Pump, outbox: Outbox, limits: StreamLimits) -> None:
        super().__init__(
            _nothing(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._pump = pump
        self._outbox = outbox
        self._limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        outbox, timeout = self._outbox, self._limits.send_timeout
        ping = self._limits.ping_interval
        sending_since: float | None = None  # a send in flight since then
        last_sent = time.monotonic()

        async def send_chunk(chunk: bytes) -> None:
            nonlocal sending_since, last_sent
            sending_since = time.monotonic()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sending_since = None
            last_sent = time.monotonic()

        async def watchdog() -> None:
            # One timer per stream instead of a cancel scope per send: with a thousand
            # streams those scopes were most of the server's work per change. A send
            # past its deadline is found within a tick of it, and abandoned.
            tick = min(timeout, ping, 4.0) / 4
            while True:
                await anyio.sleep(tick)
                now = time.monotonic()
                if sending_since is not None and now - sending_since > timeout:
                    outbox.end(f"a send took longer than {timeout:g} s")
                    return
                if sending_since is None and now - last_sent >= ping:
                    outbox.wake()  # the pump sends a keep-alive

        async def until_disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            outbox.end("client disconnected")

        async def run_pump() -> None:
            try:
                await self._pump(send_chunk)
            except ConfmanError as e:  # the database went away mid-replay, say
                outbox.end(f"{e.__class__.__name__}: {e}")
            else:
                outbox.end("done")

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(until_disconnected)
            tasks.start_soon(run_pump)
            tasks.start_soon(watchdog)
            await outbox.wait_ended()
            tasks.cancel_scope.cancel()  # a send in flight is abandoned, not awaited
        if outbox.ended == "client disconnected":
            return
        if outbox.ended not in ("done", "token changed"):
            log.warning("event stream of %s ended: %s", _client(scope), outbox.ended)
        if sending_since is not None:
            return  # the server closes the connection; what it buffered is dropped
        with anyio.move_on_after(min(timeout, 1.0)):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "a client"
