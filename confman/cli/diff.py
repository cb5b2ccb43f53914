"""``confman diff LEFT RIGHT [NAMESPACE]...``: two environments' stored effective values,
field by field, with the layer each came from (secrets by fingerprint only)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from ..compare import Comparison, FieldComparison
from ..environments import UnknownEnvironment
from .context import BASE_NAME, Context, pass_context, shared_options
from .documents import ITEM, hidden_namespaces
from .errors import EXIT_OK, UsageError
from .output import out, table, to_json

__all__ = ["diff", "diff_json"]


@click.command()
@click.argument("left")
@click.argument("right")
@click.argument("namespaces", nargs=-1, metavar="[NAMESPACE]...")
@click.option("--all", "everything", is_flag=True, help="every field, not only differences")
@click.option("--json", "as_json", is_flag=True, help="one JSON object, as the API's compare")
@shared_options
@pass_context
def diff(
    ctx: Context,
    left: str,
    right: str,
    namespaces: tuple[str, ...],
    everything: bool,
    as_json: bool,
) -> int:
    """Compare two environments (`base` for the base): the fields that differ.

    Values are the stored effective ones (model defaults, base, overlay), not any
    instance's env files or variables; secrets show as fingerprints valid for this
    comparison only.
    """
    return asyncio.run(_diff(ctx, left, right, namespaces, everything, as_json))


def _side(name: str) -> str | None:
    return None if name == BASE_NAME else name


async def _diff(
    ctx: Context,
    left: str,
    right: str,
    given: tuple[str, ...],
    everything: bool,
    as_json: bool,
) -> int:
    hidden = hidden_namespaces()  # credentials: nothing to compare, even by fingerprint
    if given:
        classes = [ctx.manager_class(n) for n in dict.fromkeys(given)]
        for cls in classes:
            if cls.namespace in hidden:
                raise UsageError(f"{cls.namespace} holds credentials: it is never compared")
    else:
        classes = [cls for name, cls in ctx.known.items() if name not in hidden]
    async with ctx.hub(classes, environment="") as hub:
        for side in (left, right):
            if side != BASE_NAME and side not in hub.known_environments:
                raise UnknownEnvironment(side, sorted(hub.known_environments))
        comparison = await hub.compare(
            _side(left),
            _side(right),
            namespaces=[cls.namespace for cls in classes],
            everything=everything,
        )
    if as_json:
        out(json.dumps(diff_json(comparison), indent=2, ensure_ascii=False))
        return EXIT_OK
    rows = [_row(f) for f in comparison.fields if everything or not f.same]
    if not rows:
        what = "no fields to compare" if everything else "no differences"
        out(f"{what} between {left} and {right}")
        return EXIT_OK
    out(table(["namespace", "key", "path", left, "source", right, "source"], rows))
    return EXIT_OK


def _row(f: FieldComparison) -> list[str]:
    if f.path == "":  # the item exists on one side only
        return [
            f.namespace,
            f.key,
            ITEM,
            "exists" if f.left_present else "-",
            "" if f.left_present else f.left_source,
            "exists" if f.right_present else "-",
            "" if f.right_present else f.right_source,
        ]
    return [
        f.namespace,
        f.key,
        f.path,
        to_json(f.left) if f.left_present else "-",
        f.left_source,
        to_json(f.right) if f.right_present else "-",
        f.right_source,
    ]


def diff_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as the API's compare route shapes it (``null``: the base)."""
    return {
        "left": comparison.left,
        "right": comparison.right,
        "fields": [
            {
                "namespace": f.namespace,
                "key": f.key,
                "path": f.path,
                "left": f.left,
                "right": f.right,
                "left_source": f.left_source,
                "right_source": f.right_source,
                "left_present": f.left_present,
                "right_present": f.right_present,
                "secret": f.secret,
                "same": f.same,
            }
            for f in comparison.fields
        ],
    }
