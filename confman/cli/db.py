"""``confman db``: the database schema.

A group of its own so that more database commands (``db prune``) slot in beside
``upgrade`` and ``current`` with ``@db.command()``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import click

from ..retention import DEFAULT_KEEP_VERSIONS, DEFAULT_MAX_AGE
from .context import Context, pass_context, shared_options
from .errors import EXIT_OK, CliError, UsageError
from .output import out

__all__ = ["db"]


@click.group(invoke_without_command=True)
@shared_options
@click.pass_context
def db(ctx: click.Context) -> None:
    """Database schema."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("a COMMAND is required (current, prune, upgrade)", ctx)


@db.command()
@click.argument("revision", default="head", required=False, metavar="[REVISION]")
@shared_options
@pass_context
def upgrade(ctx: Context, revision: str) -> int:
    """Create or migrate the database schema (creates the SQLite file and its directory)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    from ..store import head_revision
    from ..store import upgrade as upgrade_schema

    created = ctx.create_sqlite_file()
    try:
        with ctx.removing_on_failure(created):
            upgrade_schema(ctx.database_url, revision)
    except CommandError as e:  # alembic: no such revision, or not one to upgrade to
        known = f"head or one of: {', '.join(_revisions())}"
        raise UsageError(f"cannot upgrade to {revision!r} ({known}): {e}") from None
    except DBAPIError as e:
        raise CliError(f"cannot open the database {ctx.shown_url}: {e.orig}") from None
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
    from sqlalchemy.exc import DBAPIError

    from ..store import create_engine, head_revision
    from ..store.schema import current_revisions

    ctx.require_database()
    engine = create_engine(ctx.database_url)
    try:
        revisions = await current_revisions(engine)
    except DBAPIError as e:
        raise CliError(f"cannot open the database {ctx.shown_url}: {e.orig}") from None
    finally:
        await engine.dispose()
    head = head_revision()
    at_head = revisions == (head,)
    out(f"database: {ctx.shown_url}")
    out(f"current:  {', '.join(revisions) or 'none (no confman schema)'}")
    out(f"head:     {head}")
    out("up to date" if at_head else f"out of date: run `{ctx.hint('db upgrade')}`")
    if check and not at_head:
        raise CliError(f"the database schema is not at head; run `{ctx.hint('db upgrade')}`")
    return EXIT_OK


@db.command()
@click.option(
    "--keep-versions",
    type=click.IntRange(min=1),
    default=DEFAULT_KEEP_VERSIONS,
    show_default=True,
    help="keep this many newest versions of each document",
)
@click.option(
    "--older-than",
    "older_than_days",
    type=click.FloatRange(min=0),
    default=None if DEFAULT_MAX_AGE is None else DEFAULT_MAX_AGE.days,
    show_default=True,
    metavar="DAYS",
    help="delete change-log rows committed more than DAYS ago",
)
@shared_options
@pass_context
def prune(ctx: Context, keep_versions: int | None, older_than_days: float | None) -> int:
    """Apply change-log retention now (the newest version of a document always stays).

    A row goes when it is older than --older-than or not among the newest
    --keep-versions of its document; running servers do the same on their own.
    """
    older_than = None if older_than_days is None else timedelta(days=older_than_days)
    return asyncio.run(_prune(ctx, keep_versions, older_than))


async def _prune(ctx: Context, keep_versions: int | None, older_than: timedelta | None) -> int:
    from ..retention import prune_change_log

    ctx.require_database()
    deleted = await prune_change_log(
        ctx.database_url, keep_versions=keep_versions, older_than=older_than
    )
    out(f"pruned {deleted} change-log row(s) from {ctx.shown_url}")
    return EXIT_OK


def _revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    from ..store.schema import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in script.walk_revisions()]
