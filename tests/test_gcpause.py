"""`full_collections_paused`: the oldest generation waits while hubs load, then is back."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from confman import ConfigHub
from confman.gcpause import _PAUSED, full_collections_paused
from confman.managers.cache import CacheConfigurationManager


@pytest.fixture(autouse=True)
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_pauses_the_oldest_generation_only_and_restores_it(
    thresholds: tuple[int, int, int],
) -> None:
    with full_collections_paused():
        young, middle, oldest = gc.get_threshold()
        assert (young, middle) == thresholds[:2]
        assert oldest == _PAUSED
    assert gc.get_threshold() == thresholds


def test_overlapping_pauses_restore_once_the_last_ends(
    thresholds: tuple[int, int, int],
) -> None:
    first, second = full_collections_paused(), full_collections_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # not nested: the first to start ends first
    assert gc.get_threshold()[2] == _PAUSED
    second.__exit__(None, None, None)
    assert gc.get_threshold() == thresholds


def test_restored_after_an_error(thresholds: tuple[int, int, int]) -> None:
    with pytest.raises(RuntimeError), full_collections_paused():
        raise RuntimeError("load failed")
    assert gc.get_threshold() == thresholds


def test_a_threshold_changed_meanwhile_is_kept(thresholds: tuple[int, int, int]) -> None:
    with full_collections_paused():
        gc.set_threshold(thresholds[0], thresholds[1], 3)
    assert gc.get_threshold()[2] == 3


async def test_hub_start_restores_the_threshold(
    database_url: str, hub_env: dict[str, str], thresholds: tuple[int, int, int]
) -> None:
    seen: list[int] = []

    async def watch() -> None:  # runs while the hubs start: sees the pause
        while True:
            seen.append(gc.get_threshold()[2])
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    hubs = await asyncio.gather(
        *(
            ConfigHub.connect(
                database_url, env=hub_env, env_files=(), managers=[CacheConfigurationManager]
            )
            for _ in range(2)
        )
    )
    try:
        assert gc.get_threshold() == thresholds
    finally:
        for hub in hubs:
            await hub.close()
        watcher.cancel()
    assert _PAUSED in seen
