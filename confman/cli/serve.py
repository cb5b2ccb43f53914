"""``confman serve``: the HTTP API, live change stream and dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click

from ..limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_DOCUMENT_BYTES,
    DEFAULT_MAX_SNAPSHOT_DOCUMENTS,
    MAX_DEPTH_CEILING,
    Limits,
)
from ..store.engine import sqlite_path
from .context import Context, pass_context, report_problems, shared_options
from .errors import EXIT_OK, CannotStart, CliError, UsageError
from .output import out
from .tokens import token_manager

__all__ = ["CLUSTER_VARIABLE", "REDIS_URL_VARIABLE", "serve"]

REDIS_URL_VARIABLE = "CONFMAN_REDIS_URL"
_REDIS_SCHEMES = ("redis", "rediss", "unix")  # what redis-py's from_url accepts
CLUSTER_VARIABLE = "CONFMAN_CLUSTER"


@click.command()
@click.option("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8400,
    help="port to listen on (8400; 0: any free port, shown at start-up)",
)
@click.option(
    "--redis-url",
    metavar="URL",
    help=f"share changes with other instances through Redis (default: ${REDIS_URL_VARIABLE})",
)
@click.option(
    "--cluster",
    metavar="NAME",
    help="the fleet's name: Redis keys and channels start with it "
    f"(default: ${CLUSTER_VARIABLE} or confman)",
)
@click.option(
    "--environment",
    "serve_environment",
    metavar="NAME",
    envvar="CONFMAN_ENVIRONMENT",
    help="the environment this server runs in: it serves the base and NAME's overlays, "
    "and routes without ?environment= are about NAME (default: $CONFMAN_ENVIRONMENT; "
    "without it, the base)",
)
@click.option(
    "--bootstrap-token/--no-bootstrap-token",
    default=None,
    help="when no API token exists, create an admin token and print it once "
    "(default: on for embedded SQLite only)",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BODY_BYTES,
    envvar="CONFMAN_MAX_BODY_BYTES",
    show_default=True,
    help="larger request bodies are refused with 413 ($CONFMAN_MAX_BODY_BYTES)",
)
@click.option(
    "--max-document-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_DOCUMENT_BYTES,
    envvar="CONFMAN_MAX_DOCUMENT_BYTES",
    show_default=True,
    help="larger documents (compact JSON) are refused with 422 ($CONFMAN_MAX_DOCUMENT_BYTES)",
)
@click.option(
    "--max-depth",
    type=click.IntRange(1, MAX_DEPTH_CEILING),
    default=DEFAULT_MAX_DEPTH,
    envvar="CONFMAN_MAX_DEPTH",
    show_default=True,
    help="documents nested deeper are refused with 422 ($CONFMAN_MAX_DEPTH)",
)
@click.option(
    "--max-snapshot-documents",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SNAPSHOT_DOCUMENTS,
    envvar="CONFMAN_MAX_SNAPSHOT_DOCUMENTS",
    show_default=True,
    help="a bulk read of more documents is refused with 422 ($CONFMAN_MAX_SNAPSHOT_DOCUMENTS)",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    envvar="CONFMAN_TLS_CERT",
    help="listen with TLS: this PEM certificate (chain) file, with --tls-key ($CONFMAN_TLS_CERT)",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False),
    envvar="CONFMAN_TLS_KEY",
    help="the PEM private key of --tls-cert ($CONFMAN_TLS_KEY)",
)
@shared_options
@pass_context
def serve(
    ctx: Context,
    host: str,
    port: int,
    redis_url: str | None,
    cluster: str | None,
    serve_environment: str | None,
    bootstrap_token: bool | None,
    max_body_bytes: int,
    max_document_bytes: int,
    max_depth: int,
    max_snapshot_documents: int,
    tls_cert: str | None,
    tls_key: str | None,
) -> int:
    """Serve the HTTP API, live change stream and dashboard (needs the api extra).

    Database deadlines and stream bounds are read from the environment
    (CONFMAN_DATABASE_TIMEOUT, CONFMAN_READINESS_TIMEOUT, CONFMAN_STREAM_*; see
    docs/api.md).
    """
    limits = _Limits(
        max_body_bytes,
        Limits(max_document_bytes, max_depth),
        serve_environment,
        max_snapshot_documents,
    )
    tls = _tls(tls_cert, tls_key)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_serve(ctx, host, port, redis_url, cluster, bootstrap_token, limits, tls))


def _tls(cert: str | None, key: str | None) -> tuple[str, str] | None:
    """(certificate, key) to listen with, loaded once here so that a wrong pair is a
    usage error before anything binds, not a traceback from uvicorn after."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both, or neither")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise UsageError(f"--tls-cert/--tls-key: cannot load {cert} with {key}: {e}") from None
    return cert, key


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The server's event loop (uvloop when installed); asyncio's without the api extra,
    which `_serve` then reports."""
    try:
        serving = importlib.import_module("confman.api.serve")
    except ModuleNotFoundError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] | None = serving.event_loop_factory()
    return factory


@dataclass(frozen=True)
class _Limits:
    body_bytes: int
    documents: Limits
    environment: str | None = None  # carried with the limits: what the hub is opened with
    snapshot_documents: int = DEFAULT_MAX_SNAPSHOT_DOCUMENTS


async def _serve(
    ctx: Context,
    host: str,
    port: int,
    redis_url: str | None,
    cluster: str | None,
    bootstrap_token: bool | None,
    limits: _Limits,
    tls: tuple[str, str] | None,
) -> int:
    try:
        serving = importlib.import_module("confman.api.serve")
    except ModuleNotFoundError as e:
        if e.name is None or e.name.startswith("confman"):
            raise
        raise CliError(
            f"confman serve needs the api extra ({e.name} is missing): pip install 'confman[api]'"
        ) from None
    redis_url = redis_url or os.environ.get(REDIS_URL_VARIABLE) or None
    if redis_url is not None:
        _check_redis_url(redis_url)
    # Bind before anything else: a taken port is reported before a database is created
    # or a URL announced, and with its own exit code.
    try:
        sock = serving.bind(host, port)
    except serving.CannotStart as e:
        raise CannotStart(str(e)) from None
    with contextlib.closing(sock):
        return await _serve_on(
            ctx, serving, sock, host, port, redis_url, cluster, bootstrap_token, limits, tls
        )


async def _serve_on(
    ctx: Context,
    serving: Any,
    sock: socket.socket,
    host: str,
    port: int,
    redis_url: str | None,
    cluster: str | None,
    bootstrap_token: bool | None,
    limits: _Limits,
    tls: tuple[str, str] | None,
) -> int:
    created = ctx.create_sqlite_file()
    if created is not None:
        from ..store import upgrade_async

        with ctx.removing_on_failure(created):
            await upgrade_async(ctx.database_url)
        out(f"confman serve: created the embedded database {created}")
    embedded = sqlite_path(ctx.database_url) is not None
    bootstrap = bootstrap_token if bootstrap_token is not None else embedded
    managers = [*ctx.known.values(), token_manager()]
    options: dict[str, Any] = {"redis_url": redis_url, "limits": limits.documents}
    if limits.environment:
        options["environment"] = limits.environment
    cluster = cluster or os.environ.get(CLUSTER_VARIABLE)
    if cluster:
        options["cluster"] = cluster
    async with ctx.hub(managers, **options) as hub:
        for manager in hub.managers():
            report_problems(manager)
        await serving.serve(
            hub,
            host=host,
            port=port,
            bootstrap=bootstrap,
            out=out,
            verbosity=ctx.verbosity,
            command=lambda arguments: ctx.hint(arguments, portable=True),
            sock=sock,
            max_body_bytes=limits.body_bytes,
            max_snapshot_documents=limits.snapshot_documents,
            tls=tls,
        )
    return EXIT_OK


def _check_redis_url(url: str) -> None:
    """Refuse (exit 2) a Redis URL that redis-py could not connect with."""
    parsed = urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        raise UsageError("--redis-url: the port is not a number from 0 to 65535") from None
    if parsed.scheme not in _REDIS_SCHEMES:
        raise UsageError(
            f"--redis-url must start with redis://, rediss:// or unix:// (got {parsed.scheme}:// "
            "or none), e.g. redis://127.0.0.1:6379/0"
        )
    if parsed.scheme != "unix" and not parsed.hostname:
        raise UsageError("--redis-url names no host, e.g. redis://127.0.0.1:6379/0")
    if port == 0:
        raise UsageError("--redis-url: port 0 is not a port Redis listens on")
