"""``confman tokens``: API bearer tokens."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api.tokens import ApiTokenManager

from .base import EXIT_OK, Context, UsageError, _actor, _out, _table, _time


def _token_manager() -> type[ApiTokenManager]:
    # Imported on use: the other commands need nothing of the api package.
    from ..api.tokens import ApiTokenManager

    return ApiTokenManager


@contextlib.asynccontextmanager
async def _tokens(ctx: Context) -> AsyncIterator[ApiTokenManager]:
    cls = _token_manager()
    async with ctx.hub([cls]) as hub:
        yield hub.manager(cls)


async def cmd_tokens_create(args: argparse.Namespace, ctx: Context) -> int:
    namespaces = None
    if args.namespaces is not None:
        namespaces = [n.strip() for n in args.namespaces.split(",") if n.strip()]
        unknown = [n for n in namespaces if n not in ctx.known]
        if unknown:
            raise UsageError(f"unknown namespace(s): {', '.join(unknown)}")
    async with _tokens(ctx) as tokens:
        issued = await tokens.create_token(
            args.name, args.role, namespaces=namespaces, actor=_actor(args)
        )
    grants = ", ".join(issued.namespaces) if issued.namespaces is not None else "all namespaces"
    print(
        f"confman: created {issued.role} token {issued.name!r} ({grants}); it is shown only now:",
        file=sys.stderr,
        flush=True,
    )
    _out(issued.plaintext)
    return EXIT_OK


async def cmd_tokens_list(args: argparse.Namespace, ctx: Context) -> int:
    async with _tokens(ctx) as tokens:
        rows = [
            [
                name,
                str(token.role),
                ", ".join(token.namespaces) if token.namespaces is not None else "all",
                _time(token.created_at),
            ]
            for name, token in sorted(tokens.items())
        ]
    _out(_table(["name", "role", "namespaces", "created"], rows))
    return EXIT_OK


async def cmd_tokens_revoke(args: argparse.Namespace, ctx: Context) -> int:
    async with _tokens(ctx) as tokens:
        await tokens.revoke(args.name, actor=_actor(args))
    _out(f"revoked token {args.name!r}")
    return EXIT_OK
