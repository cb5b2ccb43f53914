"""``confman db``: the database schema."""

from __future__ import annotations

import argparse

from ..store.engine import sqlite_path
from .base import EXIT_OK, CliError, Context, _out


async def cmd_db_current(args: argparse.Namespace, ctx: Context) -> int:
    from ..store import create_engine, head_revision
    from ..store.schema import current_revisions

    ctx.require_database()
    engine = create_engine(ctx.database_url)
    try:
        current = await current_revisions(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    at_head = current == (head,)
    _out(f"database: {ctx.shown_url}")
    _out(f"current:  {', '.join(current) or 'none (no confman schema)'}")
    _out(f"head:     {head}")
    _out("up to date" if at_head else "out of date: run `confman db upgrade`")
    if args.check and not at_head:
        raise CliError("the database schema is not at head; run `confman db upgrade`")
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace, ctx: Context) -> int:
    from ..store import head_revision, upgrade

    path = sqlite_path(ctx.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(ctx.database_url, args.revision)
    target = head_revision() if args.revision == "head" else args.revision
    _out(f"database {ctx.shown_url} is at {target}")
    return EXIT_OK
