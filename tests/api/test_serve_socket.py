"""The socket `confman serve` listens on: every answer leaves at once (TCP_NODELAY)."""

from __future__ import annotations

import asyncio
import socket

from confman.api.serve import bind


async def test_accepted_connections_get_tcp_nodelay() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose protocol says TCP; accepted sockets
    # inherit the listener's. A listener made with protocol 0 left Nagle on, and every
    # keep-alive response (headers, then body: two writes) waited for the client's
    # delayed ACK, about 40 ms a request.
    listener = bind("127.0.0.1", 0)
    assert listener.proto == socket.IPPROTO_TCP
    accepted: asyncio.Queue[asyncio.BaseTransport] = asyncio.Queue()

    class Keep(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.put_nowait(transport)

    server = await asyncio.get_running_loop().create_server(Keep, sock=listener)
    try:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        transport = await asyncio.wait_for(accepted.get(), 5)
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        transport.close()
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
