"""``confman tokens``: API bearer tokens (for ``confman serve``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import click

from ..environments import UnknownEnvironment
from .context import (
    BASE_NAME,
    Context,
    actor_name,
    actor_option,
    environment,
    pass_context,
    shared_options,
)
from .errors import EXIT_OK, UsageError
from .output import out, table, time

if TYPE_CHECKING:
    from ..api.tokens import ApiTokenManager

__all__ = ["token_manager", "tokens"]

ROLES = ("viewer", "editor", "admin", "service")


def token_manager() -> type[ApiTokenManager]:
    # Imported on use: the other commands need nothing of the api package.
    from ..api.tokens import ApiTokenManager

    return ApiTokenManager


@contextlib.asynccontextmanager
async def _tokens(ctx: Context) -> AsyncIterator[ApiTokenManager]:
    cls = token_manager()
    async with ctx.hub([cls]) as hub:
        yield hub.manager(cls)


def _servers(ctx: Context) -> str:
    # Tokens are per environment (they never inherit): a server in E knows E's alone.
    return "" if ctx.environment is None else f" for servers in {ctx.environment}"


@click.group(invoke_without_command=True)
@shared_options
@click.pass_context
def tokens(ctx: click.Context) -> None:
    """API bearer tokens (confman serve); each environment's servers have their own (-e)."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("a COMMAND is required (create, list, revoke)", ctx)


@tokens.command()
@click.option("--name", required=True, help="also the actor its writes are audited as")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--namespaces", metavar="A,B", help="only these namespaces (default: all)")
@click.option(
    "--environments",
    metavar="A,B",
    help="only these environments' documents ('base' for the base's; default: all)",
)
@actor_option
@environment
@shared_options
@pass_context
def create(
    ctx: Context,
    name: str,
    role: str,
    namespaces: str | None,
    environments: str | None,
    actor: str | None,
) -> int:
    """Create a token and print it (only the hash is stored; it is shown once).

    -e says which environment's servers accept it; --environments which environments'
    documents it may use on them (a server serves every environment: ?environment=).
    """
    granted = _names("--namespaces", "namespace", namespaces)
    unknown = [n for n in granted or () if n not in ctx.known]
    if unknown:
        raise UsageError(f"unknown namespace(s): {', '.join(unknown)}")
    stages = _names("--environments", "environment", environments)
    return asyncio.run(_create(ctx, name, role, granted, stages, actor))


def _names(option: str, what: str, given: str | None) -> list[str] | None:
    if given is None:
        return None
    names = list(dict.fromkeys(n.strip() for n in given.split(",") if n.strip()))
    if not names:
        # A token limited to nothing can see nothing: a typo, never what was meant.
        raise UsageError(f"{option} names no {what}; name at least one, or omit it for all")
    return names


async def _create(
    ctx: Context,
    name: str,
    role: str,
    granted: list[str] | None,
    stages: list[str] | None,
    given_actor: str | None,
) -> int:
    async with _tokens(ctx) as manager:
        for stage in stages or ():
            if stage != BASE_NAME and stage not in manager.hub.known_environments:
                raise UnknownEnvironment(stage, sorted(manager.hub.known_environments))
        issued = await manager.create_token(
            name, role, namespaces=granted, environments=stages, actor=actor_name(given_actor)
        )
    grants = ", ".join(issued.namespaces) if issued.namespaces is not None else "all namespaces"
    if issued.environments is not None:
        grants += f"; environments {', '.join(issued.environments)}"
    click.echo(
        f"confman: created {issued.role} token {issued.name!r} ({grants}){_servers(ctx)}; "
        "it is shown only now:",
        err=True,
    )
    out(issued.plaintext)
    return EXIT_OK


@tokens.command("list")
@environment
@shared_options
@pass_context
def list_(ctx: Context) -> int:
    """List tokens (never their values)."""
    return asyncio.run(_list(ctx))


async def _list(ctx: Context) -> int:
    async with _tokens(ctx) as manager:
        rows = [
            [
                name,
                str(token.role),
                ", ".join(token.namespaces) if token.namespaces is not None else "all",
                ", ".join(token.environments) if token.environments is not None else "all",
                time(token.created_at),
            ]
            for name, token in sorted(manager.items())
        ]
    out(table(["name", "role", "namespaces", "environments", "created"], rows))
    return EXIT_OK


@tokens.command()
@click.argument("name")
@actor_option
@environment
@shared_options
@pass_context
def revoke(ctx: Context, name: str, actor: str | None) -> int:
    """Revoke a token on every instance."""
    return asyncio.run(_revoke(ctx, name, actor))


async def _revoke(ctx: Context, name: str, given_actor: str | None) -> int:
    async with _tokens(ctx) as manager:
        await manager.revoke(name, actor=actor_name(given_actor))
    out(f"revoked token {name!r}{_servers(ctx)}")
    return EXIT_OK
