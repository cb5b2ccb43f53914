"""Progress for long commands (backup, restore, import): Rich on a terminal, quiet when piped.

Progress goes to stderr so stdout carries the result alone (a backup's stdout is the
backup). When stderr is not a terminal (a pipe, a log file, CliRunner) nothing is
drawn at all: a log gets no spinner frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

__all__ = ["Update", "progress"]

Update = Callable[[str, int, int], None]  # (what, done, total)


@contextlib.contextmanager
def progress(description: str) -> Iterator[Update]:
    """Yield ``update(what, done, total)``; the bar is gone (transient) when the block ends."""
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"{description}: {what}", completed=done, total=total)

        yield update
