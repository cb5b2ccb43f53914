"""``confman backup`` and ``confman restore``: a whole database as one JSON document."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from .context import Context, pass_context, shared_options
from .errors import EXIT_OK, CliError
from .output import out
from .progress import progress

__all__ = ["backup", "restore"]


@click.command()
@shared_options
@pass_context
def backup(ctx: Context) -> int:
    """Write the whole database to stdout as a backup (`confman backup > file`).

    Every environment's documents, the full change log, tokens (hashes), the
    environments and the fencing tokens; secrets stay encrypted as stored.
    """
    return asyncio.run(_backup(ctx))


async def _backup(ctx: Context) -> int:
    from ..backup import backup as write_backup

    stdout = sys.stdout
    # Only the store is needed: no managers, the base (CONFMAN_ENVIRONMENT is irrelevant).
    async with ctx.hub([], environment="") as hub:
        with progress("backing up") as update:
            await write_backup(hub.store, stdout, on_progress=update)
    stdout.flush()
    return EXIT_OK


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--force", is_flag=True, help="replace everything in a database that is not empty")
@shared_options
@pass_context
def restore(ctx: Context, file: Path, force: bool) -> int:
    """Restore a backup into an empty database (migrated with `confman db upgrade`).

    The encryption keys of the backed-up database must be configured
    (CONFMAN_ENCRYPTION_KEY): restore checks they decrypt every secret first.
    """
    return asyncio.run(_restore(ctx, file, force))


async def _restore(ctx: Context, file: Path, force: bool) -> int:
    from ..backup import check_keys, read_backup
    from ..backup import restore as restore_rows

    name = "stdin" if str(file) == "-" else str(file)
    try:
        with click.open_file(str(file), encoding="utf-8") as stream:
            tables = read_backup(stream, name)
    except OSError as e:
        raise CliError(f"cannot read {name}: {e.strerror or e}") from None
    async with ctx.hub([], environment="") as hub:
        check_keys(tables, hub.keyring, name)
        with progress("restoring") as update:
            counts = await restore_rows(hub.store, tables, force=force, on_progress=update)
    out(
        f"restored {counts['config_documents']} document row(s), "
        f"{counts['config_changes']} change(s) and {counts['config_fencing']} fencing "
        f"token(s) from {name} into {ctx.shown_url}"
    )
    return EXIT_OK
