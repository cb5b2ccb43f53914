"""``confman export`` and ``confman import``: stored documents as an editable file."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from .context import (
    BASE_NAME,
    Context,
    actor_name,
    actor_option,
    pass_context,
    reason,
    shared_options,
)
from .errors import EXIT_OK, CliError
from .output import label, out
from .progress import progress

__all__ = ["export", "import_"]


@click.command()
@click.argument("namespaces", nargs=-1, metavar="[NAMESPACE]...")
@click.option(
    "-e",
    "--environment",
    metavar="NAME",
    help=f"the base and NAME's documents only ({BASE_NAME!r}: the base alone); "
    "default: the base and every environment's",
)
@click.option(
    "--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
@click.option(
    "--with-secrets",
    is_flag=True,
    help="write secrets as their ciphertext (only the same encryption keys read it); "
    'by default each is left out and marked {"$secret": "omitted"}',
)
@shared_options
@pass_context
def export(
    ctx: Context, namespaces: tuple[str, ...], environment: str | None, fmt: str, with_secrets: bool
) -> int:
    """Write the stored documents (base and overlays as written, not effective values)
    to stdout: `confman export > file`."""
    return asyncio.run(_export(ctx, namespaces, environment, fmt, with_secrets))


async def _export(
    ctx: Context, namespaces: tuple[str, ...], environment: str | None, fmt: str, secrets: bool
) -> int:
    from ..transfer import dump_export
    from ..transfer import export as build

    for namespace in namespaces:
        ctx.manager_class(namespace)  # an unknown one is a typo: say so (exit 2)
    everything = environment is None
    named = None if environment in (None, "", BASE_NAME) else environment
    async with ctx.hub([], environment="") as hub:
        doc = await build(
            hub,
            environment=named,
            everything=everything,
            namespaces=namespaces or None,
            with_secrets=secrets,
        )
    sys.stdout.write(dump_export(doc, fmt))
    return EXIT_OK


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="show the diff, write nothing")
@click.option(
    "--force", is_flag=True, help="overwrite whatever is stored (no version check against the file)"
)
@actor_option
@reason
@shared_options
@pass_context
def import_(
    ctx: Context,
    file: Path,
    dry_run: bool,
    force: bool,
    actor: str | None,
    reason: str | None,
) -> int:
    """Apply an export file as one change set (action import), showing the diff first.

    Each document is version-checked against the file's `version` (the one exported)
    unless --force; environments the file names are created when missing.
    """
    return asyncio.run(_import(ctx, file, dry_run, force, actor, reason))


async def _import(
    ctx: Context,
    file: Path,
    dry_run: bool,
    force: bool,
    given_actor: str | None,
    reason: str | None,
) -> int:
    from ..transfer import parse_export, plan_import

    name = "stdin" if str(file) == "-" else str(file)
    try:
        with click.open_file(str(file), encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read {name}: {getattr(e, 'strerror', None) or e}") from None
    doc = parse_export(text, name)
    async with ctx.hub(ctx.known.values(), environment="") as hub:
        with progress("importing") as update:
            plan = await plan_import(hub, doc, name, force=force, on_progress=update)
            update("judging the change set", 0, 1)
            preview = await plan.preview()
        for env, _description in plan.new_environments.items():
            count = sum(1 for e in plan.entries if e.environment == env)
            out(f"+ environment {env} (created first; its {count} document(s) are judged then)")
        _show(preview)
        changed = sum(1 for c in preview if not c.unchanged)
        if dry_run:
            out(f"dry run: {changed} document(s) would change; nothing was written")
            return EXIT_OK
        if not changed and not plan.new_environments:
            out(f"nothing to import: {name} matches what is stored")
            return EXIT_OK
        with progress("importing") as update:
            update("committing", 0, 1)
            set_id, changes = await plan.commit(actor=actor_name(given_actor), reason=reason)
    written = sum(1 for c in changes if not c.unchanged)
    out(f"imported {written} document(s) from {name} as change set {set_id}")
    return EXIT_OK


def _show(changes: list[Any]) -> None:
    for c in changes:
        where = label(c.namespace, c.key) + (f" in {c.environment}" if c.environment else "")
        if c.unchanged:
            continue
        if c.old is None:
            out(f"+ {where}")
        elif c.new is None:
            out(f"- {where}")
        else:
            fields = ", ".join(c.changed_fields or c.stored_changed) or "stored fields only"
            out(f"~ {where}: {fields}")
        for there in c.per_environment:  # a base change, as each environment sees it
            moved = ", ".join(there.changed_fields) or ("added" if there.old is None else "removed")
            out(f"    in {there.environment}: {moved}")
