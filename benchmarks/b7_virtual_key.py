"""B7: virtual keys. ``authenticate`` on a cache hit and a miss, and memory with 200,000 keys.

Hit: ``await keys.authenticate(plaintext)`` cycling over 1,000 cached keys, against a
bare cachetools hit ``ttl_cache[key]`` over the same keys (a ``TTLCache`` of the
manager's size and TTL), both in a plain loop inside a coroutine, in alternating rounds.
A hit finds the key id of a recently presented plaintext in the key-id memo (each call
presents a fresh string, as a request does, so its hash is computed); the same
hit with the memo turned off (``key_id_memo_size = 0``: an HMAC per request) is reported
too, with what that path cannot avoid: the HMAC of the plaintext (as confman computes it,
keyed once, and as the stdlib's ``hmac.new`` does per call), the ``await`` of a
coroutine, and its floor without the ``await``: the HMAC keyed once, then
``ttl_cache[hex]``. ``ttl_cache.get(key)`` (three times slower in cachetools 8) is
reported for reference.

Miss: every call reads the database (the cache was cleared): known keys, and unknown
ones (then answered by the negative cache).

Memory: what the manager holds (every object reachable from it, each counted once with
``sys.getsizeof``, not crossing into the hub, classes or code) after looking up 1.5x its
cache size of distinct keys, with 20,000 and with 200,000 keys stored. Bounded by the
cache size means the two are about equal and the cache holds at most ``cache_size`` keys.
A smaller cache (2,000) keeps this part quick; the bound at the default size (10,000) is
the measured bytes per key times 10,000.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import os
import sys
import time
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .common import Check, Context, FigureResult, Measurement, NotAvailable, latency, median
from .gateway import managers, plaintext, seed_gateway

ID = "B7"
TITLE = "virtual key authenticate: hit, miss, memory"

CYCLE = 1_000
DEFAULT_CACHE = 10_000
_SHARED = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    asyncio.AbstractEventLoop,
)


def _manager_class(base: Any, cache_size: int, **options: Any) -> Any:
    return type(
        "BenchVirtualKeys",
        (base,),
        {"cache_size": cache_size, "negative_cache_size": cache_size, **options},
    )


async def run(ctx: Context, result: FigureResult) -> None:
    from cachetools import TTLCache

    from confman import ConfigHub

    m = managers()
    backend = "postgresql" if ctx.postgres_reachable() else "sqlite"
    timing_cache = ctx.scale(250, DEFAULT_CACHE)
    memory_cache = ctx.scale(250, 2_000)
    big = ctx.scale(5_000, 200_000)
    small = big // 10
    timing_cls = _manager_class(m["virtual_key"], timing_cache)
    hashing_cls = _manager_class(m["virtual_key"], timing_cache, key_id_memo_size=0)
    memory_cls = _manager_class(m["virtual_key"], memory_cache)
    result.facts.update(
        database=backend,
        stored_keys=big,
        timing_cache_size=timing_cache,
        memory_cache_size=memory_cache,
    )
    memory: dict[int, dict[str, Any]] = {}

    for stored in (small, big):
        async with ctx.database(backend) as url:
            began = time.perf_counter()
            secret = await seed_gateway(ctx, url, providers=0, virtual_keys=stored, log_keys=False)
            result.facts[f"seed_seconds_{stored}"] = round(time.perf_counter() - began, 2)
            if stored == big:
                async with (
                    ConfigHub.connect(url, managers=[timing_cls], **ctx.hub_options()) as hub,
                    ConfigHub.connect(url, managers=[hashing_cls], **ctx.hub_options()) as other,
                ):
                    keys, hashing = hub.manager(timing_cls), other.manager(hashing_cls)
                    await timings(
                        ctx, result, keys, hashing, secret, timing_cache, stored, TTLCache
                    )
            async with ConfigHub.connect(url, managers=[memory_cls], **ctx.hub_options()) as hub:
                keys = hub.manager(memory_cls)
                memory[stored] = await held_memory(keys, hub, min(stored, memory_cache * 3 // 2))

    for stored, facts in memory.items():
        result.add(
            Measurement(
                f"memory held after {facts['looked_up']:,} lookups, {stored:,} keys stored",
                facts["bytes"] / 2**20,
                "MiB",
                detail=facts,
            )
        )
    per_key = memory[big]["bytes_per_cached_key"]
    result.add(Measurement("memory per cached key", per_key / 1024, "KiB", kind="info"))
    result.add(
        Measurement(
            f"bound at the default cache size ({DEFAULT_CACHE:,} keys)",
            per_key * DEFAULT_CACHE / 2**20,
            "MiB",
            kind="info",
        )
    )
    grow = memory[big]["bytes"] / max(1, memory[small]["bytes"])
    result.check(
        Check.fact(
            f"cache holds <= cache_size ({memory_cache:,}) keys",
            memory[big]["cached"] <= memory_cache,
            "bounded",
        )
    )
    result.check(Check.at_most(f"memory, {big:,} / {small:,} keys stored", grow, 1.25))


async def timings(
    ctx: Context,
    result: FigureResult,
    keys: Any,
    hashing: Any,
    secret: bytes,
    cache_size: int,
    stored: int,
    ttl_cache: Any,
) -> None:
    cycle = min(CYCLE, cache_size)
    texts = [plaintext(i) for i in range(cycle)]
    for t in texts:  # load them: every later call is a hit
        assert await keys.authenticate(t) is not None
        assert await hashing.authenticate(t) is not None
    ids = [keys.key_id(t) for t in texts]
    bare: Any = ttl_cache(maxsize=cache_size, ttl=60.0)
    for k in ids:
        bare[k] = keys.get(k)

    auth, get, item = keys.authenticate, bare.get, bare.__getitem__
    hashing_auth = hashing.authenticate
    try:  # the helper `authenticate` hashes with (keyed once per secret)
        from confman.managers.virtual_key import _hmac_sha256
    except ImportError as e:
        raise NotAvailable(f"missing confman.managers.virtual_key._hmac_sha256 ({e})") from e
    keyed = _hmac_sha256(secret)
    assert keyed(texts[0].encode()) == ids[0]

    # Inline loops (no per-call wrapper), so each figure is the call and its argument only.
    async def hit_loop(n: int) -> float:
        # A request's plaintext is a new string, whose hash Python has not cached yet:
        # the memo lookup pays for it, so every call gets a fresh copy.
        fresh = [texts[i % cycle].encode().decode() for i in range(n)]
        began = time.perf_counter_ns()
        for i in range(n):
            await auth(fresh[i % n])
        return (time.perf_counter_ns() - began) / n

    async def hashing_loop(n: int) -> float:
        began = time.perf_counter_ns()
        for i in range(n):
            await hashing_auth(texts[i % cycle])
        return (time.perf_counter_ns() - began) / n

    async def bare_loop(n: int) -> float:
        began = time.perf_counter_ns()
        for i in range(n):
            item(ids[i % cycle])
        return (time.perf_counter_ns() - began) / n

    async def bare_get_loop(n: int) -> float:
        began = time.perf_counter_ns()
        for i in range(n):
            get(ids[i % cycle])
        return (time.perf_counter_ns() - began) / n

    async def digest_loop(n: int) -> float:
        began = time.perf_counter_ns()
        for i in range(n):
            hmac.new(secret, texts[i % cycle].encode(), hashlib.sha256).hexdigest()
        return (time.perf_counter_ns() - began) / n

    async def keyed_loop(n: int) -> float:
        began = time.perf_counter_ns()
        for i in range(n):
            keyed(texts[i % cycle].encode())
        return (time.perf_counter_ns() - began) / n

    async def empty(text: str) -> None:
        pass

    async def await_loop(n: int) -> float:
        began = time.perf_counter_ns()
        for i in range(n):
            await empty(texts[i % cycle])
        return (time.perf_counter_ns() - began) / n

    async def floor_loop(n: int) -> float:
        began = time.perf_counter_ns()
        for i in range(n):
            item(keyed(texts[i % cycle].encode()))
        return (time.perf_counter_ns() - began) / n

    n = ctx.scale(2_000, 50_000)
    rounds = ctx.scale(5, 15)
    loops = {
        "cachetools": bare_loop,
        "authenticate": hit_loop,
        "memo off": hashing_loop,
        "hmac": digest_loop,
        "cachetools get": bare_get_loop,
        "hmac keyed": keyed_loop,
        "await": await_loop,
        "floor": floor_loop,
    }
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for loop in loops.values():
        await loop(n // 5)
    for _ in range(rounds):
        for name, loop in loops.items():
            samples[name].append(await loop(n))
    assert keys.cache_info().misses == cycle and hashing.cache_info().misses == cycle
    assert keys.cache_info().memo_size == cycle and hashing.cache_info().memo_size == 0
    result.add(
        Measurement(
            "hit: await authenticate(plaintext)",
            median(samples["authenticate"]),
            "ns/call",
            samples=rounds,
            detail={"rounds_ns": samples["authenticate"]},
        )
    )
    result.add(
        Measurement(
            "bare cachetools hit: ttl_cache[key]",
            median(samples["cachetools"]),
            "ns/call",
            samples=rounds,
            kind="baseline",
            detail={"rounds_ns": samples["cachetools"]},
        )
    )
    result.add(
        Measurement(
            "bare cachetools ttl_cache.get(key) (slower than [key] in cachetools 8)",
            median(samples["cachetools get"]),
            "ns/call",
            samples=rounds,
            kind="info",
        )
    )
    for name, label in (
        ("memo off", "hit with the key-id memo off: an HMAC per request"),
        ("hmac keyed", "HMAC-SHA256 of the plaintext, keyed once (a memo miss)"),
        ("hmac", "the same with the stdlib, keyed per call: hmac.new(...).hexdigest()"),
        ("await", "await of an empty coroutine (part of every hit)"),
        ("floor", "memo off, floor without the await: ttl_cache[HMAC keyed once]"),
    ):
        result.add(
            Measurement(
                label,
                median(samples[name]),
                "ns/call",
                samples=rounds,
                kind="info",
                detail={"rounds_ns": samples[name]},
            )
        )
    ratio = median(
        [a / b for a, b in zip(samples["authenticate"], samples["cachetools"], strict=True)]
    )
    result.check(Check.at_most("hit / bare cachetools hit", ratio, 4.0))
    for name, label in (
        ("memo off", "hit with the memo off / bare cachetools hit"),
        ("floor", "memo off, floor without the await / bare cachetools hit"),
    ):
        value = median([a / b for a, b in zip(samples[name], samples["cachetools"], strict=True)])
        result.check(Check(label, value, "reported", None))

    misses = ctx.scale(50, 2_000)
    keys.clear_cache()
    took: list[int] = []
    for i in range(cycle, cycle + misses):
        t0 = time.perf_counter_ns()
        found = await keys.authenticate(plaintext(i % stored))
        took.append(time.perf_counter_ns() - t0)
        assert found is not None
    result.add(latency("miss: authenticate a stored key (database read)", took))
    unknown: list[int] = []
    for i in range(misses):
        t0 = time.perf_counter_ns()
        assert await keys.authenticate(f"sk-cm-unknown-{i}") is None
        unknown.append(time.perf_counter_ns() - t0)
    result.add(latency("miss: authenticate an unknown key (database read)", unknown))
    again: list[int] = []
    for i in range(misses):
        t0 = time.perf_counter_ns()
        await keys.authenticate(f"sk-cm-unknown-{i}")
        again.append(time.perf_counter_ns() - t0)
    result.add(
        Measurement(
            "negative hit: the same unknown key again", median(again) / 1000, "us", kind="info"
        )
    )


def deep_size(root: object, *, stop: Iterable[object]) -> int:
    """Bytes reachable from ``root`` (``sys.getsizeof``, each object once), not crossing
    into ``stop``, classes, modules, functions, bound methods or event loops: what the
    manager itself holds, not the hub, the engine or the code it shares."""
    seen = {id(o) for o in stop}
    total = 0
    todo: list[object] = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _SHARED):
            continue
        total += sys.getsizeof(obj)
        todo.extend(gc.get_referents(obj))
    return total


async def held_memory(keys: Any, hub: Any, lookups: int) -> dict[str, Any]:
    """What the manager holds after ``lookups`` distinct stored keys were authenticated."""
    keys.clear_cache()
    gc.collect()
    empty = deep_size(keys, stop=[hub])
    batch = 100
    for start in range(0, lookups, batch):
        texts = [plaintext(i) for i in range(start, min(lookups, start + batch))]
        found = await asyncio.gather(*(keys.authenticate(t) for t in texts))
        assert all(v is not None for v in found)
    gc.collect()
    held = deep_size(keys, stop=[hub]) - empty
    info = keys.cache_info()
    return {
        "bytes": held,
        "looked_up": lookups,
        "cached": info.size,
        "maxsize": info.maxsize,
        "bytes_per_cached_key": held / max(1, info.size),
        "rss_mib": _rss_mib(),
    }


def _rss_mib() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
