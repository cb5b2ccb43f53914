"""``confman watch``: print changes live, from any process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any

from ..change import ConfigChange
from .base import (
    EXIT_OK,
    CliError,
    Context,
    UsageError,
    _fields,
    _json,
    _label,
    _one_line,
    _out,
    _report_problems,
    _time,
)


def _watch_line(change: ConfigChange[Any]) -> str:
    parts = [
        _time(change.at),
        f"#{change.seq}",
        _label(change.namespace, change.key),
        f"v{change.version}",
        str(change.action),
        f"by {change.actor or '-'}:",
        _fields(change.changed_fields)
        if change.changed_fields or (change.old is None) == (change.new is None)
        else ("(new item)" if change.old is None else "(item removed)"),
    ]
    if change.pinned:
        parts.append(f"[pinned: {', '.join(change.pinned)}]")
    if change.reason:
        parts.append(f"({_one_line(change.reason)})")
    return " ".join(parts)


def _watch_json(change: ConfigChange[Any]) -> str:
    return _json(
        {
            "seq": change.seq,
            "namespace": change.namespace,
            "key": change.key,
            "version": change.version,
            "action": str(change.action),
            "actor": change.actor,
            "reason": change.reason,
            "changed": list(change.changed_fields),
            "pinned": list(change.pinned),
            "origin": change.origin,
            "at": _time(change.at),
        }
    )


async def cmd_watch(args: argparse.Namespace, ctx: Context) -> int:
    classes = [ctx.manager_class(n) for n in args.namespaces] or list(ctx.known.values())
    if not classes:
        raise CliError("no managers to watch")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    fmt: Callable[[ConfigChange[Any]], str] = _watch_json if args.json else _watch_line
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    queue: asyncio.Queue[ConfigChange[Any]] = asyncio.Queue()
    seen = 0
    async with ctx.hub(classes, catch_up_interval=args.interval) as hub:
        names = []
        for cls in classes:
            manager = hub.manager(cls)
            _report_problems(manager)
            manager.changes.subscribe(on_next=queue.put_nowait)
            names.append(cls.namespace)
        print(
            f"confman: watching {', '.join(names)} on {ctx.shown_url} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )

        async def consume() -> None:
            nonlocal seen
            while args.count is None or seen < args.count:
                change = await queue.get()
                _out(fmt(change))
                seen += 1

        consumer = asyncio.ensure_future(consume())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {consumer, stopper}, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (consumer, stopper):
                task.cancel()
            await asyncio.gather(consumer, stopper, return_exceptions=True)
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)
        if consumer in done:
            consumer.result()  # re-raise a failure (a closed stdout, say)
        elif not done and args.count is not None:
            raise CliError(f"timed out after {args.timeout:g}s with {seen} of {args.count} changes")
    return EXIT_OK
