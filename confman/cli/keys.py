"""``confman keys``: encryption keys."""

from __future__ import annotations

import asyncio

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from ..secrets import generate_key
from .context import Context, actor_name, actor_option, pass_context, reason, shared_options
from .errors import EXIT_OK
from .output import out

__all__ = ["keys"]


@click.group(invoke_without_command=True)
@shared_options
@click.pass_context
def keys(ctx: click.Context) -> None:
    """Encryption keys."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("a COMMAND is required (generate, rotate)", ctx)


@keys.command()
@shared_options
def generate() -> int:
    """Print a new encryption key."""
    out(generate_key())
    return EXIT_OK


@keys.command()
@actor_option
@reason
@shared_options
@pass_context
def rotate(ctx: Context, actor: str | None, reason: str | None) -> int:
    """Re-encrypt every stored secret with the first key of CONFMAN_ENCRYPTION_KEY."""
    return asyncio.run(_rotate(ctx, actor, reason))


async def _rotate(ctx: Context, given_actor: str | None, reason: str | None) -> int:
    from ..rotation import rotate_keys

    # Progress on stderr, and only on a terminal: stdout carries the result line alone.
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("re-encrypting stored secrets", total=None)

        def done(table: str, rows: int) -> None:
            progress.update(task, description=f"re-encrypted {rows} row(s) of {table}")

        # Every environment's secrets at once: the hub's own environment does not matter.
        async with ctx.hub(ctx.known.values(), environment="") as hub:
            count = await rotate_keys(
                hub, actor=actor_name(given_actor), reason=reason or None, on_progress=done
            )
    out(f"re-encrypted {count} stored secret(s) under the newest key")
    return EXIT_OK
