"""S2: catch-up at ten times the changes. B6's one-change-per-key shape at 10,000 and
100,000 changes, on SQLite and PostgreSQL, in the same run: the larger must take at most
ten times the smaller (catch-up reads the log in batches, so it should be linear)."""

from __future__ import annotations

from .b6_catchup import once
from .common import Check, Context, FigureResult, Measurement

ID = "S2"
TITLE = "catch-up, 10,000 vs 100,000 changes"


async def run(ctx: Context, result: FigureResult) -> None:
    small, large = ctx.scale(500, 10_000), ctx.scale(5_000, 100_000)
    backends = ["sqlite"] + (["postgresql"] if ctx.postgres_reachable() else [])
    if "postgresql" not in backends:
        result.facts["postgresql"] = "skipped: PostgreSQL not reachable"
    result.facts["sizes"] = [small, large]
    for backend in backends:
        took: dict[int, float] = {}
        for n in (small, large):
            seconds, read, emitted = await once(ctx, backend, n, n)
            took[n] = seconds
            result.add(
                Measurement(
                    f"{backend}: {n:,} changes, one change per key",
                    seconds * 1000,
                    "ms",
                    samples=1,
                    detail={"rows_read": read, "changes_emitted": emitted},
                )
            )
        result.check(
            Check.at_most(
                f"{backend}: catch-up {large:,} / {small:,}", took[large] / took[small], 10.0
            )
        )
