"""Fault injection for tests: a TCP proxy of our own between confman and a shared server.

``FaultProxy("127.0.0.1", 5432)`` listens on a free local port and forwards every
connection to the target. ``cut()`` drops every open connection and refuses new ones
(they are accepted and closed at once, as a server that just died would). ``blackhole()``
is the nastier network: connections stay open and new ones are accepted, but every byte,
either way, is silently dropped (a partition, a dead NAT entry, a firewall that DROPs); no
peer ever hears of it. ``restore()`` forwards again; a connection that lost bytes to the
blackhole stays open, out of step with its peer, as it would on a real network. The
shared server itself is never touched.

The proxy runs its own event loop in a daemon thread, so it keeps working while the
test's loop is busy, and serves hubs in the test process and in worker processes alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self.connections_accepted = 0
        self._cut = False
        self._blackhole = False
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ----------------------------------------------------------------- control

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def cut(self) -> None:
        """Drop every connection; refuse new ones until `restore`."""
        self._cut = True
        self._call(self._drop_all())

    def blackhole(self) -> None:
        """Accept connections, keep them open, and drop every byte both ways."""
        self._blackhole = True

    def restore(self) -> None:
        """Forward again (after `cut` or `blackhole`)."""
        self._cut = False
        self._blackhole = False

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- loop side

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        # Connections held in the blackhole (or pumping) end here, not with the loop.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drop_all(self) -> None:
        for writer in list(self._open):
            transport = writer.transport
            transport.abort()  # RST, like a dead peer
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        if self._cut:
            writer.transport.abort()
            return
        while self._blackhole:  # the SYN was answered (by the kernel); nothing else is
            if writer.is_closing() or reader.at_eof():
                writer.transport.abort()
                return
            with contextlib.suppress(OSError):
                await reader.read(65536)
            await asyncio.sleep(0.01)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self._blackhole:
                        continue  # read and dropped: neither peer ever learns of it
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort() if self._cut else dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._open.discard(writer)
        self._open.discard(up_writer)


@contextlib.contextmanager
def fault_proxy(target_host: str, target_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
