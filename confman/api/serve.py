"""``confman serve``: run the API, stream and dashboard over a connected hub."""

from __future__ import annotations

import logging
from collections.abc import Callable

import uvicorn

from confman import ConcurrencyConflict, ConfigHub
from confman.limits import DEFAULT_MAX_BODY_BYTES

from .app import create_app
from .tokens import ApiTokenManager, Role

__all__ = ["BOOTSTRAP_TOKEN_NAME", "serve"]

BOOTSTRAP_TOKEN_NAME = "admin"
_LOG_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # by -v count


async def bootstrap_token(hub: ConfigHub) -> str | None:
    """Create the first admin token if there is no token at all; its plaintext, or None.

    Several instances starting at once race on the same name; the one whose create
    commits prints the token, the others find it exists and print nothing.
    """
    tokens = hub.manager(ApiTokenManager)
    if tokens.keys():
        return None
    try:
        issued = await tokens.create_token(BOOTSTRAP_TOKEN_NAME, Role.ADMIN, actor="confman serve")
    except ConcurrencyConflict:
        return None
    return issued.plaintext


async def serve(
    hub: ConfigHub,
    *,
    host: str,
    port: int,
    bootstrap: bool,
    out: Callable[[str], None],
    verbosity: int = 0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Serve until SIGINT or SIGTERM; ``hub`` stays the caller's to close.

    ``max_body_bytes`` bounds request bodies (413 past it); the document limits are the
    hub's (``ConfigHub.connect(limits=...)``).
    """
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"

    async def started(connected: ConfigHub) -> None:
        token = await bootstrap_token(connected) if bootstrap else None
        out(f"confman serve: dashboard at {url}  (API: {url}api/v1, OpenAPI: {url}docs)")
        if token is not None:
            out("confman serve: first start: created an admin token, shown only now. Log in with")
            out(f"    {token}")
        elif not connected.manager(ApiTokenManager).keys():
            out(
                "confman serve: no API token exists; create one with "
                "`confman tokens create --name NAME --role admin`"
            )
        else:
            out("confman serve: log in with a token (`confman tokens create` makes one)")

    config = uvicorn.Config(
        create_app(hub, on_start=started, max_body_bytes=max_body_bytes),
        host=host,
        port=port,
        log_config=None,  # keep the CLI's logging set-up
        log_level=_LOG_LEVELS[min(verbosity, 2)],
        access_log=verbosity >= 1,
        timeout_graceful_shutdown=3,  # live streams never end by themselves
        server_header=False,
    )
    await uvicorn.Server(config).serve()
