"""``confman serve``: the HTTP API, stream and dashboard."""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from ..store.engine import sqlite_path
from .base import (
    CLUSTER_VARIABLE,
    EXIT_OK,
    REDIS_URL_VARIABLE,
    CliError,
    Context,
    _out,
    _report_problems,
)
from .tokens import _token_manager


async def cmd_serve(args: argparse.Namespace, ctx: Context) -> int:
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
        _out(f"confman serve: created the embedded database {path}")
    bootstrap = args.bootstrap_token if args.bootstrap_token is not None else path is not None
    redis_url = args.redis_url or os.environ.get(REDIS_URL_VARIABLE) or None
    managers = [*ctx.known.values(), _token_manager()]
    options: dict[str, Any] = {"redis_url": redis_url}
    cluster = args.cluster or os.environ.get(CLUSTER_VARIABLE)
    if cluster:
        options["cluster"] = cluster
    async with ctx.hub(managers, **options) as hub:
        for manager in hub.managers():
            _report_problems(manager)
        await serving.serve(
            hub,
            host=args.host,
            port=args.port,
            bootstrap=bootstrap,
            out=_out,
            verbosity=args.verbose,
        )
    return EXIT_OK
