"""R2's peer: the smallest SSE broadcaster Starlette allows.

``GET /events`` opens a stream (a ``ready`` event first, as ``confman serve`` sends one);
``POST /change`` queues the same bytes, one real ``confman serve`` change event taken in
the same run, for every connected client and answers 204. No tokens, no change log, no
bounds per client, no resume: what is left is the cost of fanning bytes out over SSE.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def broadcaster_app(frame: bytes, ready: bytes) -> Starlette:
    clients: set[asyncio.Queue[bytes]] = set()

    async def events(request: Request) -> StreamingResponse:
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def body() -> AsyncIterator[bytes]:
            clients.add(queue)
            try:
                yield ready
                while True:
                    yield await queue.get()
            finally:
                clients.discard(queue)

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def change(request: Request) -> Response:
        for queue in clients:
            queue.put_nowait(frame)
        return Response(status_code=204)

    return Starlette(routes=[Route("/events", events), Route("/change", change, methods=["POST"])])
