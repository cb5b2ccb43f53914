"""``confman watch``: print changes live, from any process."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ..change import ConfigChange
from .context import Context, environment, pass_context, report_problems, shared_options
from .errors import EXIT_OK, CliError, one_line
from .output import fields, label, out, time, to_json

__all__ = ["watch"]


# Seconds: positive (``--timeout -5`` is a usage error, not an instant exit) and finite.
SECONDS = click.FloatRange(min=0, min_open=True)
SECONDS.name = "number of seconds"  # in "'x' is not a valid number of seconds"


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds", ctx, param)
    return value


@dataclass(frozen=True, slots=True)
class _Options:
    namespaces: tuple[str, ...]
    count: int | None
    timeout: float | None
    interval: float
    json: bool


@click.command()
@click.argument("namespaces", nargs=-1, metavar="[NAMESPACE]...")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="exit after N changes")
@click.option(
    "--timeout",
    type=SECONDS,
    callback=_finite,
    metavar="S",
    help="exit after S seconds (error if --count unmet)",
)
@click.option(
    "--interval",
    type=SECONDS,
    callback=_finite,
    default=0.5,
    metavar="S",
    help="seconds between change-log polls (default 0.5)",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@environment
@shared_options
@pass_context
def watch(
    ctx: Context,
    namespaces: tuple[str, ...],
    count: int | None,
    timeout: float | None,
    interval: float,
    as_json: bool,
) -> int:
    """Print changes live, from any process (all namespaces by default).

    In an environment (-e): the base's changes and that environment's, no other's.
    """
    return asyncio.run(_watch(ctx, _Options(namespaces, count, timeout, interval, as_json)))


def _watch_line(change: ConfigChange[Any]) -> str:
    parts = [
        time(change.at),
        f"#{change.seq}",
        label(change.namespace, change.key),
        *([f"in {change.environment}"] if change.environment is not None else []),
        f"v{change.version}",
        str(change.action),
        f"by {change.actor or '-'}:",
        fields(change.changed_fields)
        if change.changed_fields or (change.old is None) == (change.new is None)
        else ("(new item)" if change.old is None else "(item removed)"),
    ]
    if change.pinned:
        parts.append(f"[pinned: {', '.join(change.pinned)}]")
    if change.reason:
        parts.append(f"({one_line(change.reason)})")
    return " ".join(parts)


def _watch_json(change: ConfigChange[Any]) -> str:
    return to_json(
        {
            "seq": change.seq,
            "namespace": change.namespace,
            "key": change.key,
            "environment": change.environment,
            "version": change.version,
            "action": str(change.action),
            "actor": change.actor,
            "reason": change.reason,
            "changed": list(change.changed_fields),
            "pinned": list(change.pinned),
            "origin": change.origin,
            "at": time(change.at),
        }
    )


async def _watch(ctx: Context, opts: _Options) -> int:
    classes = [ctx.manager_class(n) for n in opts.namespaces] or list(ctx.known.values())
    if not classes:
        raise CliError("no managers to watch")
    fmt: Callable[[ConfigChange[Any]], str] = _watch_json if opts.json else _watch_line
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    queue: asyncio.Queue[ConfigChange[Any]] = asyncio.Queue()
    seen = 0
    async with ctx.hub(classes, catch_up_interval=opts.interval) as hub:
        names = []
        for cls in classes:
            manager = hub.manager(cls)
            report_problems(manager)
            manager.changes.subscribe(on_next=queue.put_nowait)
            names.append(cls.namespace)
        scope = "" if ctx.environment is None else f" (base and {ctx.environment})"
        click.echo(
            f"confman: watching {', '.join(names)}{scope} on {ctx.shown_url} (Ctrl-C to stop)",
            err=True,
        )

        async def consume() -> None:
            nonlocal seen
            while opts.count is None or seen < opts.count:
                change = await queue.get()
                out(fmt(change))
                seen += 1

        consumer = asyncio.ensure_future(consume())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait(
                {consumer, stopper}, timeout=opts.timeout, return_when=asyncio.FIRST_COMPLETED
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
        elif not done and opts.count is not None:
            raise CliError(f"timed out after {opts.timeout:g}s with {seen} of {opts.count} changes")
    return EXIT_OK
