"""Helpers for testing code that uses confman, in your tests as in ours.

```python
from confman.testing import temporary_hub, record_changes

async def test_ttl_change_reaches_my_cache(tmp_path):
    async with temporary_hub(tmp_path, managers=[CacheConfigurationManager]) as hub:
        cache = hub.manager(CacheConfigurationManager)
        seen = record_changes(cache)
        await cache.update({"default_ttl_seconds": 60})
        assert seen.versions() == [1]
```

A temporary hub runs on a real, migrated SQLite file and reads no environment variables
or env files unless you pass them, so tests neither depend on nor leak into the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from reactivex import abc

from .change import ConfigChange
from .hub import ConfigHub
from .manager import ConfigurationManager
from .secrets import generate_key
from .store import upgrade_async

__all__ = ["ChangeRecorder", "migrated_sqlite", "record_changes", "temporary_hub"]

T = TypeVar("T", bound=BaseModel)


async def migrated_sqlite(directory: str | os.PathLike[str], name: str = "confman.db") -> str:
    """Create a SQLite database at head in ``directory``; return its URL."""
    path = Path(directory) / name
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_async(url)
    return url


@contextlib.asynccontextmanager
async def temporary_hub(
    directory: str | os.PathLike[str],
    *,
    managers: Iterable[type[ConfigurationManager[Any]]] = (),
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    env_files: Iterable[str | os.PathLike[str]] = (),
    environments: Iterable[str] = (),
    **options: Any,
) -> AsyncIterator[ConfigHub]:
    """A hub on a fresh migrated SQLite database in ``directory`` (or on ``database_url``).

    ``env`` defaults to an empty environment plus a generated encryption key, so secrets
    work without touching the real environment. ``environments`` are created first if
    missing (and the hub's own ``environment=``, if given), so that a test can start a
    hub in one at once.
    """
    url = database_url or await migrated_sqlite(directory)
    environment = {"CONFMAN_ENCRYPTION_KEY": generate_key()} if env is None else dict(env)
    wanted = [*environments, *([options["environment"]] if options.get("environment") else [])]
    if wanted:
        async with ConfigHub.connect(url, env=environment, env_files=(), managers=[]) as base:
            for name in dict.fromkeys(wanted):
                if name not in base.known_environments:
                    await base.create_environment(name)
    async with ConfigHub.connect(
        url,
        env=environment,
        env_files=[Path(p) for p in env_files],
        managers=list(managers),
        **options,
    ) as hub:
        yield hub


class ChangeRecorder(Generic[T], abc.ObserverBase[ConfigChange[T]]):
    """Collects a manager's `ConfigChange` events for assertions."""

    def __init__(self) -> None:
        self.changes: list[ConfigChange[T]] = []
        self.errors: list[Exception] = []
        self.completed = False
        self._arrived = asyncio.Event()

    def on_next(self, value: ConfigChange[T]) -> None:
        self.changes.append(value)
        self._arrived.set()

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)

    def on_completed(self) -> None:
        self.completed = True

    def versions(self, key: str | None = None) -> list[int]:
        return [c.version for c in self.changes if key is None or c.key == key]

    async def wait_for(
        self, *, version: int, key: str = "default", timeout: float = 10.0
    ) -> ConfigChange[T]:
        """Wait until a change of ``key`` at ``version`` (or newer) was recorded."""

        async def arrived() -> ConfigChange[T]:
            while True:
                for change in reversed(self.changes):
                    if change.key == key and change.version >= version:
                        return change
                self._arrived.clear()
                await self._arrived.wait()

        return await asyncio.wait_for(arrived(), timeout)


def record_changes(manager: ConfigurationManager[T]) -> ChangeRecorder[T]:
    """Subscribe a new `ChangeRecorder` to ``manager.changes``."""
    recorder: ChangeRecorder[T] = ChangeRecorder()
    manager.changes.subscribe(recorder)
    return recorder
