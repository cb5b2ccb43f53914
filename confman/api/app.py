"""`create_app`: the FastAPI application behind ``confman serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from confman import ConfigHub, NotFound, __version__
from confman.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_SNAPSHOT_DOCUMENTS

from . import change_sets, documents, environments, events, layers, operations, snapshot
from .event_data import EventData
from .metrics import Metrics
from .openapi import keep_openapi_31
from .problems import install_handlers, problem_response
from .stream import StreamLimits
from .tokens import ApiTokenManager

__all__ = ["STATIC_DIRECTORY", "create_app"]

STATIC_DIRECTORY = Path(__file__).parent / "static"

# Label values must be bounded: the server accepts any method name a client makes up.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The dashboard loads only its own files; nothing may frame it.
_DASHBOARD_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class _DashboardFiles(StaticFiles):
    """The dashboard's files, each with the headers ``/`` sends (a file opened by its own
    URL must not be frameable or sniffed either)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_DASHBOARD_HEADERS)
        return response


HubSource = ConfigHub | Callable[[], AbstractAsyncContextManager[ConfigHub]]


class _CountRequests:
    """Counts answered requests by route template (not raw path: bounded label values)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:
                method = scope["method"] if scope["method"] in _METHODS else "OTHER"
                metrics.requests.labels(method, template, str(status)).inc()


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``: FastAPI passes HTTP exceptions from reading the body on,
    so the problem handlers answer it like any other 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit:,} bytes (the limit)")


class _LimitBody:
    """Refuses request bodies over ``limit`` bytes with 413, never buffering one.

    A declared ``Content-Length`` over the limit is answered at once, before the app
    runs; otherwise bytes are counted as they arrive (chunked bodies included), and the
    read that passes the limit fails.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            error = _BodyTooLarge(self.limit)
            # Close the connection: the unread body must not be taken for the next request.
            response = problem_response(413, error.detail, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    if started:
                        # Too late for a 413 (a stream answered already, and reads on
                        # only to see the client leave): the client is treated as gone.
                        return {"type": "http.disconnect"}
                    raise _BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, sending)


def create_app(
    hub: HubSource,
    *,
    on_start: Callable[[ConfigHub], Awaitable[None]] | None = None,
    stream_limits: StreamLimits | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_snapshot_documents: int = DEFAULT_MAX_SNAPSHOT_DOCUMENTS,
) -> FastAPI:
    """The API, stream, metrics and dashboard over ``hub``.

    Args:
        hub: a connected `ConfigHub` (the caller owns and closes it), or a function
            returning an async context manager that yields one, such as
            ``lambda: ConfigHub.connect(url, managers=...)``; the app then connects at
            start-up and closes at shut-down. Either way the hub gets the
            `ApiTokenManager` loaded if it lacks it.
        on_start: awaited once the hub is ready, before the first request.
        stream_limits: the bounds of each ``/api/v1/events`` stream; by default
            `StreamLimits` with any ``CONFMAN_STREAM_*`` environment variables applied.
        max_body_bytes: larger request bodies are refused with 413 (see
            `confman.limits`); document size and depth are the hub's `Limits`.
        max_snapshot_documents: a ``GET /api/v1/snapshot`` of more documents is refused
            with 422.
    """
    for name, value in (
        ("max_body_bytes", max_body_bytes),
        ("max_snapshot_documents", max_snapshot_documents),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    limits = stream_limits or StreamLimits.from_environ()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if isinstance(hub, ConfigHub):
                connected = hub
            else:
                connected = await stack.enter_async_context(hub())
            try:
                connected.manager(ApiTokenManager)
            except NotFound:
                await connected.load(ApiTokenManager)
            app.state.hub = connected
            app.state.event_data = EventData(connected, limits)
            metrics = app.state.metrics = Metrics(connected)
            stack.callback(metrics.close)
            if on_start is not None:
                await on_start(connected)
            yield

    app = FastAPI(
        title="confman",
        version=__version__,
        summary="Typed, audited, live configuration: documents, history and a change stream.",
        lifespan=lifespan,
    )
    app.state.stream_limits = limits
    app.state.max_snapshot_documents = max_snapshot_documents
    install_handlers(app)
    keep_openapi_31(app)
    app.include_router(documents.router)
    app.include_router(snapshot.router)
    app.include_router(layers.router)
    app.include_router(change_sets.router)
    app.include_router(environments.router)
    app.include_router(events.router)
    app.include_router(operations.router)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus text format; no token needed, no values shown."""
        registry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def dashboard() -> Any:
        return FileResponse(STATIC_DIRECTORY / "index.html", headers=_DASHBOARD_HEADERS)

    app.mount(
        "/static", _DashboardFiles(directory=STATIC_DIRECTORY, check_dir=False), name="static"
    )
    app.add_middleware(_LimitBody, limit=max_body_bytes)
    app.add_middleware(_CountRequests)  # outermost: counts the 413s too
    return app
