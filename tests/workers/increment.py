"""Worker process: increment the shared counter N times; print what happened as JSON.

Usage: python -m tests.workers.increment DATABASE_URL N MODE
MODE "retry": update(fn, retries=...) so every increment lands eventually;
MODE "once": one attempt each with the version this instance last saw.
"""

from __future__ import annotations

import asyncio
import json
import sys

from confman import ConcurrencyConflict, ConfigHub
from tests.models import Counter, CounterManager


async def main(url: str, n: int, mode: str) -> None:
    ok = conflicts = 0
    async with ConfigHub.connect(url, env={}, env_files=(), managers=[CounterManager]) as hub:
        counter = hub.manager(CounterManager)
        for _ in range(n):
            try:
                await counter.update(
                    lambda c: Counter(value=c.value + 1),
                    retries=1000 if mode == "retry" else 0,
                    actor=hub.instance_id,
                )
                ok += 1
            except ConcurrencyConflict:
                conflicts += 1
                await hub.catch_up()
    print(json.dumps({"ok": ok, "conflicts": conflicts}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
