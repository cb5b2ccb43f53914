"""``confman promote --from A --to B [NAMESPACE]...``: make B's stored effective values
equal A's (B's overlays only, one change set of action ``promote``), shown as a diff
first; and ``confman change-set show/rollback ID``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from ..change import ConfigChange
from .context import (
    BASE_NAME,
    Context,
    ManagerClass,
    actor_name,
    actor_option,
    pass_context,
    reason,
    shared_options,
)
from .documents import ITEM, hidden_namespaces
from .errors import EXIT_OK, UsageError
from .output import fields, out, table, time, to_json

__all__ = ["change_set", "promote"]


@click.command()
@click.option("--from", "source", required=True, metavar="ENV", help="the environment to copy")
@click.option("--to", "target", required=True, metavar="ENV", help="the environment to write")
@click.argument("namespaces", nargs=-1, metavar="[NAMESPACE]...")
@click.option("--dry-run", is_flag=True, help="show what it would write; write nothing")
@click.option("--json", "as_json", is_flag=True, help="one JSON object, as the API's promote")
@reason
@actor_option
@shared_options
@pass_context
def promote(
    ctx: Context,
    source: str,
    target: str,
    namespaces: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    reason: str | None,
    actor: str | None,
) -> int:
    """Make TO's stored effective values equal FROM's, for every namespace that
    inherits (or those named), by writing TO's overlays, never the base.

    The diff is shown first; then the whole promotion commits as one change set
    (unless --dry-run). Credentials (namespaces that never inherit) are never promoted.
    """
    return asyncio.run(
        _promote(ctx, source, target, namespaces, dry_run, as_json, reason, actor_name(actor))
    )


def _classes(ctx: Context, given: tuple[str, ...]) -> list[ManagerClass]:
    hidden = hidden_namespaces()
    if not given:
        return [cls for name, cls in ctx.known.items() if name not in hidden and cls.inherits]
    classes = [ctx.manager_class(n) for n in dict.fromkeys(given)]
    for cls in classes:
        if cls.namespace in hidden or not cls.inherits:
            raise UsageError(
                f"{cls.namespace} never inherits across environments (credentials): "
                "it is never promoted"
            )
    return classes


async def _promote(
    ctx: Context,
    source: str,
    target: str,
    given: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    why: str | None,
    actor: str | None,
) -> int:
    for name in (source, target):
        if name == BASE_NAME:
            raise UsageError("promote copies between environments; the base is not one")
    if source == target:
        raise UsageError("promote needs two different environments")
    classes = _classes(ctx, given)
    async with ctx.hub(classes, environment="") as hub:
        names = [cls.namespace for cls in classes]
        preview = await hub.promote(source, target, namespaces=names, dry_run=True)
        if not preview:
            if as_json:
                out(json.dumps(_json([], dry_run=dry_run, change_set=None), indent=2))
            else:
                out(f"nothing to promote: {target} already has {source}'s values")
            return EXIT_OK
        if not (as_json and not dry_run):
            _show(preview, source, target, as_json=as_json, dry_run=True)
        if dry_run:
            if not as_json:
                out(
                    f"dry run: {len(preview)} document(s) would change in {target}; nothing written"
                )
            return EXIT_OK
        changes = await hub.promote(source, target, namespaces=names, actor=actor, reason=why)
    change_set = changes[0].change_set if changes else None
    if as_json:
        out(json.dumps(_json(changes, dry_run=False, change_set=change_set), indent=2))
        return EXIT_OK
    written = sum(1 for c in changes if not c.unchanged)
    out(f"promoted {source} to {target}: change set {change_set} ({written} document(s))")
    return EXIT_OK


def _json(changes: list[ConfigChange[Any]], *, dry_run: bool, change_set: str | None) -> Any:
    """The API's promote answer (``ChangeSetResult``), field for field."""
    from ..api.change_sets import change_set_result

    result = change_set_result(changes, dry_run=dry_run, change_set=change_set)
    return result.model_dump(mode="json")


def _show(
    changes: list[ConfigChange[Any]], source: str, target: str, *, as_json: bool, dry_run: bool
) -> None:
    if as_json:
        out(json.dumps(_json(changes, dry_run=dry_run, change_set=None), indent=2))
        return
    from ..api.diffs import diff
    from ..api.views import masked

    rows: list[list[str]] = []
    for c in changes:
        if c.new is None or c.old is None:
            rows.append([
                c.namespace, c.key, ITEM,
                "exists" if c.old is not None else "-",
                "exists" if c.new is not None else "-",
            ])  # fmt: skip
            continue
        for d in diff(masked(c.old), masked(c.new)):
            before = to_json(d.before) if d.change != "added" else "-"
            after = to_json(d.after) if d.change != "removed" else "-"
            rows.append([c.namespace, c.key, d.path, before, after])
        if not c.changed_fields:
            rows.append([c.namespace, c.key, "(overlay)", "stored differently", "same values"])
    out(table(["namespace", "key", "path", f"{target} now", f"from {source}"], rows))


# --------------------------------------------------------------------------- change-set


@click.group("change-set", invoke_without_command=True)
@shared_options
@click.pass_context
def change_set(ctx: click.Context) -> None:
    """Change sets: several documents written in one transaction."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("a COMMAND is required (show, rollback)", ctx)


@change_set.command("show")
@click.argument("set_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="one JSON object, as the API's")
@shared_options
@pass_context
def show(ctx: Context, set_id: str, as_json: bool) -> int:
    """A committed change set: who, why, when, and each member's change."""
    return asyncio.run(_show_set(ctx, set_id, as_json))


async def _show_set(ctx: Context, set_id: str, as_json: bool) -> int:
    async with ctx.hub([], environment="") as hub:
        records = await hub.change_set_records(set_id)
    first = records[0]
    if as_json:
        members = [
            {
                "seq": r.seq,
                "namespace": r.namespace,
                "key": r.key,
                "environment": r.environment,
                "version": r.version,
                "action": str(r.action),
                "changed": list(r.changed),
            }
            for r in records
        ]
        shown = {
            "change_set": set_id,
            "actor": first.actor,
            "reason": first.reason,
            "at": time(first.committed_at),
            "members": members,
        }
        out(json.dumps(shown, indent=2, ensure_ascii=False))
        return EXIT_OK
    by = first.actor or "-"
    out(f"change set {set_id} by {by} at {time(first.committed_at)}: {first.reason or '-'}")
    rows = [
        [str(r.seq), r.namespace, r.key, r.environment or BASE_NAME, str(r.version),
         str(r.action), fields(r.changed)]
        for r in records
    ]  # fmt: skip
    out(table(["seq", "namespace", "key", "environment", "version", "action", "changed"], rows))
    return EXIT_OK


@change_set.command("rollback")
@click.argument("set_id", metavar="ID")
@reason
@actor_option
@shared_options
@pass_context
def rollback(ctx: Context, set_id: str, reason: str | None, actor: str | None) -> int:
    """Undo a change set as a new one (nothing is written if a member changed since)."""
    return asyncio.run(_rollback(ctx, set_id, reason, actor_name(actor)))


async def _rollback(ctx: Context, set_id: str, why: str | None, actor: str | None) -> int:
    async with ctx.hub([], environment="") as probe:
        records = await probe.change_set_records(set_id)
    classes = [ctx.manager_class(n) for n in dict.fromkeys(r.namespace for r in records)]
    async with ctx.hub(classes, environment="") as hub:
        changes = await hub.rollback_change_set(set_id, actor=actor, reason=why)
    new_id = changes[0].change_set if changes else None
    out(f"rolled back change set {set_id}: change set {new_id} ({len(changes)} document(s))")
    return EXIT_OK
