"""``confman history/rollback``: the audit trail and restoring from it (each document's
versions count per environment: ``-e``)."""

from __future__ import annotations

import asyncio

import click

from ..change import BASE, ChangeRecord
from .context import (
    Context,
    actor_name,
    environment,
    key_for,
    pass_context,
    shared_options,
    write_options,
)
from .documents import describe_change
from .errors import EXIT_OK
from .output import fields, label, out, table, time

__all__ = ["MAX_HISTORY_LIMIT", "history", "rollback"]

# As the API's history route: a larger --limit is a mistake, not a wish for everything.
MAX_HISTORY_LIMIT = 1000


@click.command()
@click.argument("namespace")
@click.argument("key", required=False)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_HISTORY_LIMIT),
    default=20,
    metavar="N",
    help=f"at most N (default 20, at most {MAX_HISTORY_LIMIT:,})",
)
@environment
@shared_options
@pass_context
def history(ctx: Context, namespace: str, key: str | None, limit: int) -> int:
    """Audited changes, newest first."""
    return asyncio.run(_history(ctx, namespace, key, limit))


async def _history(ctx: Context, namespace: str, given_key: str | None, limit: int) -> int:
    cls = ctx.manager_class(namespace)
    key = key_for(cls, given_key)
    assert key is not None
    # Read the log directly: history must work even when the current value cannot load.
    async with ctx.hub([]) as hub:
        records: list[ChangeRecord] = await hub.store.history(
            cls.namespace, key, limit=limit, environment=ctx.environment or BASE
        )
    if not records:
        out(f"{label(cls.namespace, key)} has no recorded changes{ctx.where}")
        return EXIT_OK
    rows = [
        [
            str(r.seq),
            str(r.version),
            str(r.action),
            r.actor or "",
            r.reason or "",
            time(r.committed_at),
            fields(r.changed),
        ]
        for r in records
    ]
    out(table(["seq", "version", "action", "actor", "reason", "time", "changed"], rows))
    return EXIT_OK


@click.command()
@click.argument("namespace")
@click.argument("key", required=False)
@click.option(
    "--to-version",
    type=click.IntRange(min=1),
    required=True,
    metavar="N",
    help="the version to restore",
)
@write_options
@environment
@shared_options
@pass_context
def rollback(
    ctx: Context,
    namespace: str,
    key: str | None,
    to_version: int,
    expect_version: int | None,
    reason: str | None,
    actor: str | None,
) -> int:
    """Restore an earlier version as a new one (versions count per environment)."""
    return asyncio.run(_rollback(ctx, namespace, key, to_version, expect_version, reason, actor))


async def _rollback(
    ctx: Context,
    namespace: str,
    given_key: str | None,
    to_version: int,
    expect_version: int | None,
    reason: str | None,
    given_actor: str | None,
) -> int:
    cls = ctx.manager_class(namespace)
    key = key_for(cls, given_key)
    assert key is not None
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        change = await manager.rollback(
            key,
            to_version=to_version,
            expected_version=expect_version,
            actor=actor_name(given_actor),
            reason=reason,
            environment=ctx.environment,
        )
        describe_change(change, manager)
    return EXIT_OK
