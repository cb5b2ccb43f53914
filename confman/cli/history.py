"""``confman history/rollback``: the audit trail and restoring from it."""

from __future__ import annotations

import argparse

from ..change import ChangeRecord
from .base import (
    EXIT_OK,
    Context,
    UsageError,
    _actor,
    _fields,
    _key_for,
    _label,
    _out,
    _table,
    _time,
)
from .documents import _describe_change


async def cmd_history(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    key = _key_for(cls, args.key)
    assert key is not None
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    # Read the log directly: history must work even when the current value cannot load.
    async with ctx.hub([]) as hub:
        records: list[ChangeRecord] = await hub.store.history(cls.namespace, key, limit=args.limit)
    if not records:
        _out(f"{_label(cls.namespace, key)} has no recorded changes")
        return EXIT_OK
    rows = [
        [
            str(r.seq),
            str(r.version),
            str(r.action),
            r.actor or "",
            r.reason or "",
            _time(r.committed_at),
            _fields(r.changed),
        ]
        for r in records
    ]
    _out(_table(["seq", "version", "action", "actor", "reason", "time", "changed"], rows))
    return EXIT_OK


async def cmd_rollback(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    key = _key_for(cls, args.key)
    assert key is not None
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        change = await manager.rollback(
            key,
            to_version=args.to_version,
            expected_version=args.expect_version,
            actor=_actor(args),
            reason=args.reason,
        )
        _describe_change(change, manager)
    return EXIT_OK
