"""``confman db``: the database schema.

A group of its own so that more database commands (``db prune``) slot in beside
``upgrade`` and ``current`` with ``@db.command()``.
"""

from __future__ import annotations

import asyncio

import click

from ..store.engine import sqlite_path
from .context import Context, pass_context, shared_options
from .errors import EXIT_OK, CliError
from .output import out

__all__ = ["db"]


@click.group(invoke_without_command=True)
@shared_options
@click.pass_context
def db(ctx: click.Context) -> None:
    """Database schema."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("a COMMAND is required (current, upgrade)", ctx)


@db.command()
@click.argument("revision", default="head", required=False, metavar="[REVISION]")
@shared_options
@pass_context
def upgrade(ctx: Context, revision: str) -> int:
    """Create or migrate the database schema (creates the SQLite file and its directory)."""
    from ..store import head_revision
    from ..store import upgrade as upgrade_schema

    path = sqlite_path(ctx.database_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    upgrade_schema(ctx.database_url, revision)
    target = head_revision() if revision == "head" else revision
    out(f"database {ctx.shown_url} is at {target}")
    return EXIT_OK


@db.command()
@click.option("--check", is_flag=True, help="exit 1 unless the schema is at head")
@shared_options
@pass_context
def current(ctx: Context, check: bool) -> int:
    """Show the schema revision and head."""
    return asyncio.run(_current(ctx, check))


async def _current(ctx: Context, check: bool) -> int:
    from ..store import create_engine, head_revision
    from ..store.schema import current_revisions

    ctx.require_database()
    engine = create_engine(ctx.database_url)
    try:
        revisions = await current_revisions(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    at_head = revisions == (head,)
    out(f"database: {ctx.shown_url}")
    out(f"current:  {', '.join(revisions) or 'none (no confman schema)'}")
    out(f"head:     {head}")
    out("up to date" if at_head else "out of date: run `confman db upgrade`")
    if check and not at_head:
        raise CliError("the database schema is not at head; run `confman db upgrade`")
    return EXIT_OK
