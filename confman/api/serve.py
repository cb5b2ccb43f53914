"""``confman serve``: run the API, stream and dashboard over a connected hub.

The socket is bound before anything is announced: a taken port or a host that does not
resolve is `CannotStart`, raised before a URL or a token is printed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

import uvicorn

from confman import ConcurrencyConflict, ConfigHub, ConfmanError
from confman.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_SNAPSHOT_DOCUMENTS

from .app import create_app
from .stream import StreamLimits
from .tokens import ApiTokenManager, Role

__all__ = ["BOOTSTRAP_TOKEN_NAME", "CannotStart", "bind", "event_loop_factory", "serve"]

BOOTSTRAP_TOKEN_NAME = "admin"
_LOG_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)  # by -v count
_BACKLOG = 2048  # uvicorn's default


class CannotStart(ConfmanError):
    """The server cannot listen where it was asked to: port taken, host unresolvable."""


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


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port), as uvicorn binds.

    Raises:
        CannotStart: the host does not resolve, the port is taken, or the address is not
            this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say
    # TCP, and accepted ones inherit it. Without it every keep-alive response (headers and
    # body, two writes) waited for the client's delayed ACK: about 40 ms per request.
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except socket.gaierror as e:
        sock.close()
        raise CannotStart(f"cannot start: host {host!r} does not resolve ({e.strerror})") from None
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise CannotStart(f"cannot start: port {port} on {host} is already in use") from None
        raise CannotStart(f"cannot start: cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop, which `confman serve` runs on when uvloop is installed (the
    api extra brings it); None for asyncio's own.

    With httptools (picked by uvicorn by itself), it took the server's CPU per PATCH down
    by about a fifth (docs/benchmarks.md, A2).
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _command(arguments: str) -> str:
    return f"confman {arguments}"


async def serve(
    hub: ConfigHub,
    *,
    host: str,
    port: int,
    bootstrap: bool,
    out: Callable[[str], None],
    verbosity: int = 0,
    command: Callable[[str], str] = _command,
    sock: socket.socket | None = None,
    stream_limits: StreamLimits | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_snapshot_documents: int = DEFAULT_MAX_SNAPSHOT_DOCUMENTS,
    tls: tuple[str, str] | None = None,
) -> None:
    """Bind, then serve until SIGINT or SIGTERM; ``hub`` stays the caller's to close.

    Args:
        command: the ``confman`` command line for some arguments, on this server's
            database, for the hints printed at start-up.
        sock: a socket from `bind` (the caller binds before it does anything else);
            closed when serving ends. Without it, `serve` binds ``host:port`` itself.
        stream_limits: bound each event stream (default: `StreamLimits.from_environ`).
        max_body_bytes: bounds request bodies (413 past it); the document limits are
            the hub's (``ConfigHub.connect(limits=...)``).
        max_snapshot_documents: bounds ``GET /api/v1/snapshot`` (422 past it).
        tls: (certificate file, key file), PEM: listen with TLS only (a plain-HTTP
            client fails its handshake).

    Raises:
        CannotStart: see `bind`; nothing has been printed then.
    """
    if sock is None:
        sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    scheme = "http" if tls is None else "https"
    url = f"{scheme}://{shown_host}:{bound_port}/"
    create = command("tokens create --name NAME --role admin")

    async def started(connected: ConfigHub) -> None:
        token = await bootstrap_token(connected) if bootstrap else None
        out(f"confman serve: dashboard at {url}  (API: {url}api/v1, OpenAPI: {url}docs)")
        if token is not None:
            out("confman serve: first start: created an admin token, shown only now. Log in with")
            out(f"    {token}")
        elif not connected.manager(ApiTokenManager).keys():
            out(f"confman serve: no API token exists; create one with `{create}`")
        else:
            out(f"confman serve: log in with a token (`{create}` makes one)")

    config = uvicorn.Config(
        create_app(
            hub,
            on_start=started,
            stream_limits=stream_limits,
            max_body_bytes=max_body_bytes,
            max_snapshot_documents=max_snapshot_documents,
        ),
        host=host,
        port=bound_port,
        log_config=None,  # keep the CLI's logging set-up
        log_level=_LOG_LEVELS[min(verbosity, 2)],
        access_log=verbosity >= 1,
        timeout_graceful_shutdown=3,  # live streams never end by themselves
        server_header=False,
        ssl_certfile=None if tls is None else tls[0],
        ssl_keyfile=None if tls is None else tls[1],
    )
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()
