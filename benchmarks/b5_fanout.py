"""B5: fan-out of one change to 1 / 100 / 10,000 subscribers, against a raw Rx subject.

confman side: the manager's emission path (``_emit``: the notification counter and
`IsolatingSubject.on_next`), which every committed or received change goes through,
with N subscribers attached through the public ``manager.changes.subscribe``. Raw side:
``reactivex.subject.Subject().on_next`` with the same N subscribers (the same callable).
Both are timed in alternating rounds; per-subscriber cost is the time divided by N.
"""

from __future__ import annotations

from typing import Any

from .common import Check, Context, FigureResult, Measurement, median, per_op_ns

ID = "B5"
TITLE = "fan-out of one change to N subscribers"


def _sink(_: Any) -> None:
    return None


async def run(ctx: Context, result: FigureResult) -> None:
    from reactivex.subject import Subject

    from confman import ConfigHub
    from confman.managers.cache import CacheConfigurationManager

    url = await ctx.new_sqlite()
    sizes = (1, 100, 10_000)
    rounds = ctx.scale(5, 15)
    async with ConfigHub.connect(
        url, managers=[CacheConfigurationManager], **ctx.hub_options()
    ) as hub:
        first = hub.manager(CacheConfigurationManager)
        change = await first.update({"default_ttl_seconds": 60}, actor="bench")
    for n in sizes:
        # A fresh manager per size (same hub type, same change) keeps subscriber lists exact.
        async with ConfigHub.connect(
            url, managers=[CacheConfigurationManager], **ctx.hub_options()
        ) as hub:
            cache = hub.manager(CacheConfigurationManager)
            subject: Subject[Any] = Subject()
            disposables = []
            for _ in range(n):
                disposables.append(cache.changes.subscribe(_sink))
                disposables.append(subject.subscribe(_sink))
            namespace: dict[str, Any] = {
                "emit": cache._emit,
                "on_next": subject.on_next,
                "change": change,
            }
            number = max(3, ctx.scale(20_000, 200_000) // n)
            samples: dict[str, list[float]] = {"raw": [], "confman": []}
            for _ in range(rounds):
                samples["raw"] += per_op_ns("on_next(change)", namespace, number=number, repeat=1)
                samples["confman"] += per_op_ns("emit(change)", namespace, number=number, repeat=1)
            for d in disposables:
                d.dispose()
        per_sub = {k: [s / n for s in v] for k, v in samples.items()}
        subs = f"{n:,} subscriber" + ("s" if n > 1 else "")
        for side, label in (("raw", "reactivex Subject.on_next"), ("confman", "manager emit")):
            result.add(
                Measurement(
                    f"{subs}: {label}",
                    median(per_sub[side]),
                    "ns/subscriber",
                    kind="baseline" if side == "raw" else "confman",
                    samples=rounds,
                    detail={"ns_per_change": median(samples[side]), "loops": number},
                )
            )
        ratio = median([c / r for c, r in zip(samples["confman"], samples["raw"], strict=True)])
        result.check(Check.at_most(f"{subs}: confman / raw per subscriber", ratio, 1.5))
