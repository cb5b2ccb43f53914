"""``confman keys``: encryption keys."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Awaitable, Callable

from ..secrets import generate_key
from .base import EXIT_OK, CliError, Context, _actor, _out


def cmd_keys_generate(args: argparse.Namespace, ctx: Context) -> int:
    _out(generate_key())
    return EXIT_OK


async def cmd_keys_rotate(args: argparse.Namespace, ctx: Context) -> int:
    # Imported lazily: the command exists before (and without) the rotation module.
    try:
        rotation = importlib.import_module("confman.rotation")
    except ModuleNotFoundError as e:
        if e.name != "confman.rotation":
            raise
        raise CliError("key rotation is not available in this version of confman") from None
    rotate_keys: Callable[..., Awaitable[int]] = rotation.rotate_keys
    options = {"reason": args.reason} if args.reason else {}
    async with ctx.hub(ctx.known.values()) as hub:
        count: int = await rotate_keys(hub, actor=_actor(args), **options)
    _out(f"re-encrypted {count} stored secret(s) under the newest key")
    return EXIT_OK
