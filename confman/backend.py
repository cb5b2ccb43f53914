"""The seam under every manager: where its documents come from and where its writes go.

`ConfigurationManager` and `ChangeSet` read and write documents through
``hub.backend`` and nothing else, the way an httpx client sends through its transport.
Two backends sit behind it:

- direct mode: `confman.store.ConfigStore`, the SQL database itself (changes fan out
  through the hub's bus and catch-up);
- remote mode: `confman.remote.HttpBackend`, a ``confman serve`` server's HTTP API
  (changes arrive on its event stream).

Documents cross the seam in stored form (`StoredDocument`, secrets encrypted with
``hub.keyring``), so the manager never knows which one it talks to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from .change import BASE, ChangeRecord
from .store import LoggedChange, StoredDocument, Write

__all__ = ["DocumentBackend"]


class DocumentBackend(Protocol):
    """What a manager loads from and writes to. Every call has a deadline."""

    async def load(
        self, namespace: str, key: str, *, environment: str = BASE
    ) -> StoredDocument | None:
        """One document (a tombstone included), or None if never stored."""
        ...

    async def load_namespace(
        self,
        namespace: str,
        *,
        keys: Iterable[str] | None = None,
        environments: Sequence[str] = (BASE,),
    ) -> list[StoredDocument]:
        """A namespace's documents in ``environments``, optionally only ``keys``."""
        ...

    async def load_everywhere(self, namespace: str, key: str) -> list[StoredDocument]:
        """``namespace/key`` in the base and every environment the backend may read."""
        ...

    async def change_at(
        self, namespace: str, key: str, version: int, *, environment: str = BASE
    ) -> LoggedChange:
        """One version from the change log. Raises `NotFound` when it is not there."""
        ...

    async def history(
        self,
        namespace: str,
        key: str,
        *,
        limit: int = 50,
        before_version: int | None = None,
        environment: str = BASE,
    ) -> list[ChangeRecord]:
        """Committed changes of one document, newest first, secrets masked."""
        ...

    async def write(self, w: Write) -> tuple[StoredDocument, ChangeRecord]:
        """Commit one version-checked write. Raises `ConcurrencyConflict`."""
        ...

    async def write_all(self, writes: Sequence[Write]) -> list[tuple[StoredDocument, ChangeRecord]]:
        """Commit several writes at once: all of them, or none."""
        ...
