"""``confman serve``: the HTTP API, live change stream and dashboard."""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

import click

from ..store.engine import sqlite_path
from .context import Context, pass_context, report_problems, shared_options
from .errors import EXIT_OK, CliError
from .output import out
from .tokens import token_manager

__all__ = ["CLUSTER_VARIABLE", "REDIS_URL_VARIABLE", "serve"]

REDIS_URL_VARIABLE = "CONFMAN_REDIS_URL"
CLUSTER_VARIABLE = "CONFMAN_CLUSTER"


@click.command()
@click.option("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
@click.option("--port", type=int, default=8400, help="port to listen on (8400)")
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
    "--bootstrap-token/--no-bootstrap-token",
    default=None,
    help="when no API token exists, create an admin token and print it once "
    "(default: on for embedded SQLite only)",
)
@shared_options
@pass_context
def serve(
    ctx: Context,
    host: str,
    port: int,
    redis_url: str | None,
    cluster: str | None,
    bootstrap_token: bool | None,
) -> int:
    """Serve the HTTP API, live change stream and dashboard (needs the api extra)."""
    return asyncio.run(_serve(ctx, host, port, redis_url, cluster, bootstrap_token))


async def _serve(
    ctx: Context,
    host: str,
    port: int,
    redis_url: str | None,
    cluster: str | None,
    bootstrap_token: bool | None,
) -> int:
    try:
        serving = importlib.import_module("confman.api.serve")
    except ModuleNotFoundError as e:
        if e.name is None or e.name.startswith("confman"):
            raise
        raise CliError(
            f"confman serve needs the api extra ({e.name} is missing): pip install 'confman[api]'"
        ) from None
    path = sqlite_path(ctx.database_url)
    if path is not None and not path.exists():
        from ..store import upgrade_async

        path.parent.mkdir(parents=True, exist_ok=True)
        await upgrade_async(ctx.database_url)
        out(f"confman serve: created the embedded database {path}")
    bootstrap = bootstrap_token if bootstrap_token is not None else path is not None
    redis_url = redis_url or os.environ.get(REDIS_URL_VARIABLE) or None
    managers = [*ctx.known.values(), token_manager()]
    options: dict[str, Any] = {"redis_url": redis_url}
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
        )
    return EXIT_OK
