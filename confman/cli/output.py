"""What commands print: plain lines on stdout, warnings on stderr, Rich tables, JSON."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..secrets import mask_document
from .errors import one_line

__all__ = ["fields", "label", "masked", "out", "table", "time", "to_json", "warn"]

# Wide enough that no cell is ever wrapped or cut: scripts split these tables on spaces.
_TABLE_WIDTH = 100_000


def out(text: str = "") -> None:
    click.echo(text)


def warn(text: str) -> None:
    click.echo(f"confman: warning: {one_line(text)}", err=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A borderless table: upper-case headers, one line per row, ``-`` for an empty cell."""
    grid = Table(box=None, show_edge=False, pad_edge=False)
    for header in headers:
        grid.add_column(header.upper(), no_wrap=True, overflow="ignore")
    for row in rows:
        grid.add_row(*(one_line(cell) or "-" for cell in row))
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=_TABLE_WIDTH, color_system=None, highlight=False, markup=False
    )
    console.print(grid, crop=False)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def masked(value: Any) -> dict[str, Any]:
    return mask_document(value.model_dump(mode="python"))


def label(namespace: str, key: str) -> str:
    return f"{namespace}/{key}"


def fields(paths: Sequence[str]) -> str:
    return ", ".join(paths) if paths else "-"
