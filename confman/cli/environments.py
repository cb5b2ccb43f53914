"""``confman env list/create/delete`` (the environments themselves) and ``confman reset``
(fields of an environment's overlay back to the base's)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import click

from ..change import Action
from ..environments import UnknownEnvironment
from ..exceptions import ConcurrencyConflict, ValidationFailed
from .context import (
    BASE_NAME,
    Context,
    ManagerClass,
    actor_name,
    actor_option,
    environment,
    key_for,
    pass_context,
    reason,
    shared_options,
    write_options,
)
from .errors import EXIT_OK, CliError, UsageError
from .output import label, out, table, time

__all__ = ["env", "reset"]


class Exists(CliError):
    """``env create`` of a name the registry already lists (exit 3, as a conflict)."""

    exit_code = 3


@click.group(invoke_without_command=True)
@shared_options
@click.pass_context
def env(ctx: click.Context) -> None:
    """Environments: each stores overlays over the shared base."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("a COMMAND is required (list, create, delete)", ctx)


@env.command("list")
@shared_options
@pass_context
def list_(ctx: Context) -> int:
    """Environments with their description and how many documents each stores."""
    return asyncio.run(_list(ctx))


async def _list(ctx: Context) -> int:
    async with ctx.hub([], environment="") as hub:
        found = await hub.environments()
        counts = await hub.store.overlay_counts()
    rows = [
        [e.name, str(counts.get(e.name, 0)), e.description, e.updated_by or "", time(e.updated_at)]
        for e in found
    ]
    out(table(["name", "documents", "description", "by", "since"], rows))
    return EXIT_OK


@env.command()
@click.argument("name")
@click.option("--description", default="", help="what the environment is for")
@actor_option
@shared_options
@pass_context
def create(ctx: Context, name: str, description: str, actor: str | None) -> int:
    """Create the environment NAME (audited); it starts with no overlays."""
    return asyncio.run(_create(ctx, name, description, actor))


async def _create(ctx: Context, name: str, description: str, given_actor: str | None) -> int:
    async with ctx.hub([], environment="") as hub:
        try:
            created = await hub.create_environment(
                name, description=description, actor=actor_name(given_actor)
            )
        except ValidationFailed as e:
            why = "; ".join(f"{f.path}: {f.message}" for f in e.errors)
            raise UsageError(f"cannot create environment {name!r}: {why}") from None
        except ConcurrencyConflict:
            raise Exists(f"environment {name!r} already exists; nothing was written") from None
    out(f"created environment {created.name}: it inherits every base document")
    return EXIT_OK


@env.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="also delete the documents it still holds")
@reason
@actor_option
@shared_options
@pass_context
def delete(ctx: Context, name: str, force: bool, reason: str | None, actor: str | None) -> int:
    """Delete the environment NAME; one that still holds documents needs --force."""
    return asyncio.run(_delete(ctx, name, force, reason, actor))


async def _delete(
    ctx: Context, name: str, force: bool, given_reason: str | None, given_actor: str | None
) -> int:
    if name == BASE_NAME:
        raise UsageError("the base is no environment: it cannot be deleted")
    async with ctx.hub([], environment="") as hub:
        if name not in hub.known_environments:
            raise UnknownEnvironment(name, sorted(hub.known_environments))
        removed = await hub.delete_environment(
            name, force=force, actor=actor_name(given_actor), reason=given_reason
        )
    out(f"deleted environment {name} and the {removed} document(s) it held")
    return EXIT_OK


# --------------------------------------------------------------------------- reset


@click.command(
    help="Remove fields from an environment's overlay, so that they inherit from the base "
    "again; --all drops the whole overlay (and shows an item the environment hid)."
)
@click.argument("namespace")
@click.argument("words", nargs=-1, metavar="[KEY] [FIELD]...")
@click.option("--all", "everything", is_flag=True, help="drop the whole overlay")
@write_options
@environment
@shared_options
@pass_context
def reset(
    ctx: Context,
    namespace: str,
    words: tuple[str, ...],
    everything: bool,
    expect_version: int | None,
    reason: str | None,
    actor: str | None,
) -> int:
    return asyncio.run(_reset(ctx, namespace, words, everything, expect_version, reason, actor))


def _reset_arguments(
    cls: ManagerClass, words: Sequence[str], everything: bool
) -> tuple[str, list[str] | None]:
    rest = list(words)
    given_key = rest.pop(0) if cls.keyed and rest else None
    key = key_for(cls, given_key)
    assert key is not None
    if everything == bool(rest):
        raise UsageError(
            "name the FIELDs to reset, or --all for the whole overlay"
            if not rest
            else "--all resets every field: name no FIELD with it"
        )
    unknown = [f for f in rest if f.split(".")[0] not in cls.model.model_fields]
    if unknown:
        raise UsageError(f"{cls.namespace} has no field {unknown[0]!r}")
    return key, None if everything else rest


async def _reset(
    ctx: Context,
    namespace: str,
    words: Sequence[str],
    everything: bool,
    expect_version: int | None,
    reason: str | None,
    given_actor: str | None,
) -> int:
    cls = ctx.manager_class(namespace)
    if ctx.environment is None:
        raise UsageError(
            "reset works on an environment's overlay: name it with -e NAME "
            "(the base has no overlay)"
        )
    if not cls.inherits:
        raise UsageError(
            f"{cls.namespace} does not inherit: each environment holds its own documents, "
            "so there is nothing to reset to (use set or delete)"
        )
    key, fields = _reset_arguments(cls, words, everything)
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        change = await manager.reset(
            key,
            fields,
            environment=ctx.environment,
            expected_version=expect_version,
            actor=actor_name(given_actor),
            reason=reason,
        )
    where = f"{label(cls.namespace, key)} in {ctx.environment}"
    if change.unchanged:
        out(f"unchanged {where}: still version {change.version} (nothing to reset)")
        return EXIT_OK
    gone = " (no overlay left)" if change.action is Action.DELETE else ""
    out(f"reset {where}: now version {change.version}{gone}")
    out(f"inherited again: {'every field' if fields is None else ', '.join(fields)}")
    if change.changed_fields:
        out(f"changed: {', '.join(change.changed_fields)}")
    return EXIT_OK
