"""Change-log retention: what goes, who runs it, and a one-off prune.

A change-log row goes when it is older than ``max_age`` or not among the newest
``keep_versions`` of its document; the newest version of a document always stays.

Who runs it: with Redis, the elected leader (`confman.cluster`). Without Redis there is
no election, so the instances sharing a database take turns through a lease row in the
database (``config_fencing``, named ``<cluster>:retention``): every
``housekeeping_interval`` each instance asks for it; the holder renews it and prunes,
the others find it held and do nothing. A holder that stops renewing for
``3 * housekeeping_interval`` is replaced, and the lease's fencing token then refuses
its late work. An operator's one-off prune (`prune_change_log`, ``confman db prune``)
takes no lease: pruning twice is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .exceptions import ConfmanError, StoreUnavailable
from .store import ConfigStore, FencingTokenRejected, create_engine, normalize_url

__all__ = [
    "DEFAULT_HOUSEKEEPING_INTERVAL",
    "DEFAULT_KEEP_VERSIONS",
    "DEFAULT_MAX_AGE",
    "DatabaseRetention",
    "prune_change_log",
]

log = logging.getLogger("confman.retention")

#: Seconds between retention runs (`ClusterOptions.housekeeping_interval`).
DEFAULT_HOUSEKEEPING_INTERVAL = 60.0
#: Change-log versions kept per document (`ClusterOptions.retention_keep_versions`).
DEFAULT_KEEP_VERSIONS: int | None = 1000
#: Change-log rows older than this go (`ClusterOptions.retention_max_age`).
DEFAULT_MAX_AGE: timedelta | None = timedelta(days=90)


def _cutoff(older_than: timedelta | datetime | None) -> datetime | None:
    if isinstance(older_than, timedelta):
        return datetime.now(UTC) - older_than
    if isinstance(older_than, datetime) and older_than.tzinfo is None:
        return older_than.replace(tzinfo=UTC)
    return older_than


async def prune_change_log(
    database: str | ConfigStore,
    *,
    keep_versions: int | None = DEFAULT_KEEP_VERSIONS,
    older_than: timedelta | datetime | None = DEFAULT_MAX_AGE,
) -> int:
    """Apply change-log retention to a database now; returns how many rows were deleted.

    Args:
        database: a database URL (as for `ConfigHub.connect`; its schema must be at the
            migrations' head) or an open `ConfigStore`.
        keep_versions: keep this many newest versions of each document (at least 1;
            ``None``: no limit by count).
        older_than: delete rows committed before this: an age (``timedelta``) or a
            time (naive means UTC); ``None``: no limit by age.

    Raises:
        ConfmanError: ``keep_versions`` below 1 or a negative age.
        StoreUnavailable: the database cannot be reached.
        SchemaOutOfDate: the database needs ``confman db upgrade`` first.
    """
    if keep_versions is not None and keep_versions < 1:
        raise ConfmanError(f"keep_versions must be at least 1, not {keep_versions}")
    if isinstance(older_than, timedelta) and older_than < timedelta(0):
        raise ConfmanError(f"older_than must not be negative, not {older_than}")
    cutoff = _cutoff(older_than)
    if isinstance(database, ConfigStore):
        return await database.prune_expired(keep_versions=keep_versions, older_than=cutoff)
    engine = create_engine(normalize_url(database))
    try:
        store = ConfigStore(engine)
        await store.check_schema()  # under the store's deadline, as every call after it
        return await store.prune_expired(keep_versions=keep_versions, older_than=cutoff)
    finally:
        await engine.dispose()


@dataclass
class DatabaseRetention:
    """Retention for instances without an election: one of them, the holder of a lease
    row in the database, prunes every ``interval`` seconds.

    Args:
        store: the instance's store.
        cluster: the fleet's name; the lease row is ``<cluster>:retention``.
        holder: this instance's id.
        interval: seconds between runs; the lease lasts three of them.
        keep_versions: as for `prune_change_log`.
        max_age: as ``older_than`` for `prune_change_log`.
    """

    store: ConfigStore
    cluster: str
    holder: str
    interval: float = DEFAULT_HOUSEKEEPING_INTERVAL
    keep_versions: int | None = DEFAULT_KEEP_VERSIONS
    max_age: timedelta | None = DEFAULT_MAX_AGE
    #: Runs done as the lease's holder, and the rows they deleted.
    runs: int = 0
    pruned: int = 0
    #: Whether the last run took or renewed the lease.
    holding: bool = False

    @classmethod
    def from_options(
        cls, store: ConfigStore, cluster: str, holder: str, options: Any
    ) -> DatabaseRetention:
        """Settings from a `ClusterOptions` (``None``: the defaults)."""
        if options is None:
            return cls(store, cluster, holder)
        return cls(
            store,
            cluster,
            holder,
            interval=options.housekeeping_interval,
            keep_versions=options.retention_keep_versions,
            max_age=options.retention_max_age,
        )

    @property
    def lease(self) -> str:
        """The name of the lease row in ``config_fencing``."""
        return f"{self.cluster}:retention"

    async def release(self) -> None:
        """Give the lease up if this instance holds it (at close), so another instance
        takes it at its next run instead of after three intervals; best effort."""
        if not self.holding:
            return  # nothing to give up (and the database may not even have the table)
        self.holding = False
        try:
            await self.store.release_lease(self.lease, self.holder)
        except StoreUnavailable as e:
            log.info("could not release the retention lease (%s); it runs out by itself", e)

    async def run(self) -> int | None:
        """One run: prune if this instance holds the lease (taking it if free); returns
        the rows deleted, ``None`` when another instance holds it.

        Raises:
            StoreUnavailable: the database cannot be reached.
            FencingTokenRejected: another instance took the lease meanwhile.
        """
        token = await self.store.hold_lease(self.lease, self.holder, ttl=3 * self.interval)
        self.holding = token is not None
        if token is None:
            return None
        deleted = await self.store.prune_changes(
            cluster=self.lease,
            token=token,
            holder=self.holder,
            keep_versions=self.keep_versions,
            older_than=_cutoff(self.max_age),
        )
        self.runs += 1
        self.pruned += deleted
        if deleted:
            log.info("retention removed %d change-log rows (%s)", deleted, self.lease)
        return deleted

    async def run_forever(self) -> None:
        """`run` every ``interval`` seconds until cancelled; a failed run is logged and
        the next one tries again."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run()
            except (StoreUnavailable, FencingTokenRejected) as e:
                log.warning("retention skipped: %s", e)
            except Exception:
                log.exception("retention failed")
