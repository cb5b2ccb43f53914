"""Queries: documents, version-checked writes with their change-log row, history, catch-up."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..change import Action, ChangeRecord
from ..exceptions import ConcurrencyConflict, ConfmanError, NotFound, StoreUnavailable
from .engine import WRITE
from .tables import config_changes, config_documents, config_fencing

__all__ = [
    "ConfigStore",
    "FencingTokenRejected",
    "LoggedChange",
    "StoredDocument",
    "Write",
]


class FencingTokenRejected(ConfmanError):
    """Leader work refused: a newer leader (higher fencing token) has acted already."""

    def __init__(self, cluster: str, token: int, current: int) -> None:
        self.cluster = cluster
        self.token = token
        self.current = current
        super().__init__(
            f"cluster {cluster!r}: fencing token {token} is stale (a leader with token "
            f"{current} has acted since); this instance is no longer the leader"
        )


@dataclass(frozen=True, slots=True)
class StoredDocument:
    namespace: str
    key: str
    data: dict[str, Any] | None  # None: deleted (a tombstone)
    version: int
    updated_at: datetime
    updated_by: str | None


@dataclass(frozen=True, slots=True)
class Write:
    """One version-checked write. ``expected_version`` 0 means "must not exist yet"."""

    namespace: str
    key: str
    data: dict[str, Any] | None
    expected_version: int
    action: Action
    actor: str | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed: Sequence[str]
    origin: str


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """A change-log row together with the document it wrote (stored form)."""

    record: ChangeRecord
    data: dict[str, Any] | None


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything confman stores is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _record(row: Row[Any]) -> ChangeRecord:
    m = row._mapping
    return ChangeRecord(
        seq=m["seq"],
        namespace=m["namespace"],
        key=m["key"],
        version=m["version"],
        action=Action(m["action"]),
        actor=m["actor"],
        reason=m["reason"],
        before=m["before"],
        after=m["after"],
        changed=tuple(m["changed"]),
        origin=m["origin"],
        committed_at=_utc(m["committed_at"]),
    )


def _document(row: Row[Any]) -> StoredDocument:
    m = row._mapping
    return StoredDocument(
        m["namespace"], m["key"], m["data"], m["version"], _utc(m["updated_at"]), m["updated_by"]
    )


class ConfigStore:
    """All SQL confman runs. Owns no engine: the hub creates and disposes of it."""

    #: After a failure, writes fail at once for this long (seconds) instead of each
    #: waiting on a dead database; any successful read (the hub's catch-up) ends it.
    fail_fast_for: float = 2.0

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pid = os.getpid()
        self._failed_at: float | None = None
        self._last_error = ""

    @property
    def available(self) -> bool:
        """False since the last failed database call, until one succeeds again."""
        return self._failed_at is None

    @contextlib.asynccontextmanager
    async def _connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        if os.getpid() != self._pid:
            raise ConfmanError(
                f"this confman hub was started in process {self._pid} and process "
                f"{os.getpid()} was forked from it: database connections (and the hub's "
                "background tasks) do not survive a fork, so this copy would never hear "
                "of changes. Create the ConfigHub after forking (e.g. in each worker's "
                "startup, not at import time with gunicorn --preload)."
            )
        failed_at = self._failed_at
        if write and failed_at is not None and time.monotonic() - failed_at < self.fail_fast_for:
            raise StoreUnavailable(f"database unavailable ({self._last_error}); not retried yet")
        try:
            async with self.engine.connect() as conn:
                if write:
                    conn = await conn.execution_options(**{WRITE: True})
                async with conn.begin():
                    yield conn
        except (OperationalError, InterfaceError, OSError) as e:
            self._last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self._failed_at = time.monotonic()
            raise StoreUnavailable(f"database unavailable ({self._last_error})") from e
        self._failed_at = None

    async def load_namespace(
        self, namespace: str, *, keys: Iterable[str] | None = None
    ) -> list[StoredDocument]:
        """Documents of a namespace (tombstones included), optionally only ``keys``."""
        query = select(config_documents).where(config_documents.c.namespace == namespace)
        if keys is not None:
            query = query.where(config_documents.c.key.in_(list(keys)))
        async with self._connect() as conn:
            return [_document(r) for r in await conn.execute(query)]

    async def load(self, namespace: str, key: str) -> StoredDocument | None:
        found = await self.load_namespace(namespace, keys=[key])
        return found[0] if found else None

    async def namespaces(self) -> dict[str, int]:
        """Namespace to number of live (not deleted) documents."""
        query = (
            select(config_documents.c.namespace, func.count())
            .where(config_documents.c.data.is_not(None))
            .group_by(config_documents.c.namespace)
        )
        async with self._connect() as conn:
            return {ns: n for ns, n in await conn.execute(query)}

    async def write(self, w: Write) -> tuple[StoredDocument, ChangeRecord]:
        """Commit the document and its change-log row in one transaction.

        Raises:
            ConcurrencyConflict: the stored version is not ``w.expected_version``.
            StoreUnavailable: the database cannot be reached.
        """
        now = datetime.now(UTC)
        version = w.expected_version + 1
        docs = config_documents.c
        try:
            async with self._connect(write=True) as conn:
                if w.expected_version == 0:
                    await conn.execute(
                        insert(config_documents).values(
                            namespace=w.namespace,
                            key=w.key,
                            data=w.data,
                            version=1,
                            updated_at=now,
                            updated_by=w.actor,
                        )
                    )
                else:
                    result = await conn.execute(
                        update(config_documents)
                        .where(
                            docs.namespace == w.namespace,
                            docs.key == w.key,
                            docs.version == w.expected_version,
                        )
                        .values(data=w.data, version=version, updated_at=now, updated_by=w.actor)
                    )
                    if result.rowcount != 1:
                        current = await conn.scalar(
                            select(docs.version).where(
                                docs.namespace == w.namespace, docs.key == w.key
                            )
                        )
                        raise ConcurrencyConflict(
                            w.namespace, w.key, expected=w.expected_version, current=current or 0
                        )
                seq = await conn.scalar(
                    insert(config_changes)
                    .values(
                        namespace=w.namespace,
                        key=w.key,
                        version=version,
                        action=w.action.value,
                        actor=w.actor,
                        reason=w.reason,
                        before=w.before,
                        after=w.after,
                        changed=list(w.changed),
                        data=w.data,
                        origin=w.origin,
                        committed_at=now,
                    )
                    .returning(config_changes.c.seq)
                )
        except IntegrityError:
            # Only the first-version INSERT can collide: someone created it first.
            current = await self.load(w.namespace, w.key)
            raise ConcurrencyConflict(
                w.namespace, w.key, expected=0, current=current.version if current else 0
            ) from None
        assert seq is not None
        record = ChangeRecord(
            seq, w.namespace, w.key, version, w.action, w.actor, w.reason, w.before, w.after,
            tuple(w.changed), w.origin, now,
        )  # fmt: skip
        return StoredDocument(w.namespace, w.key, w.data, version, now, w.actor), record

    async def history(
        self, namespace: str, key: str, *, limit: int = 50, before_version: int | None = None
    ) -> list[ChangeRecord]:
        c = config_changes.c
        query = select(config_changes).where(c.namespace == namespace, c.key == key)
        if before_version is not None:
            query = query.where(c.version < before_version)
        query = query.order_by(c.version.desc()).limit(limit)
        async with self._connect() as conn:
            return [_record(r) for r in await conn.execute(query)]

    async def change_at(self, namespace: str, key: str, version: int) -> LoggedChange:
        c = config_changes.c
        query = select(config_changes).where(
            c.namespace == namespace, c.key == key, c.version == version
        )
        async with self._connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"{namespace}/{key} has no version {version} in the change log")
        return LoggedChange(_record(row), row._mapping["data"])

    async def changes_since(
        self, after_seq: int, *, also: Iterable[int] = (), limit: int = 1000
    ) -> list[LoggedChange]:
        """Changes with ``seq > after_seq``, plus the listed older seqs that now exist.

        ``also`` carries the gaps a reader saw: ids handed out to transactions that had
        not committed yet when it last looked (see `confman.hub` on catch-up).
        """
        c = config_changes.c
        older = list(also)
        condition = c.seq > after_seq
        if older:
            condition = or_(condition, c.seq.in_(older))
        query = select(config_changes).where(condition).order_by(c.seq).limit(limit)
        async with self._connect() as conn:
            return [LoggedChange(_record(r), r._mapping["data"]) for r in await conn.execute(query)]

    async def max_seq(self) -> int:
        async with self._connect() as conn:
            found = await conn.scalar(select(func.max(config_changes.c.seq)))
            return int(found or 0)

    async def seqs_between(self, low: int, high: int) -> list[int]:
        c = config_changes.c
        async with self._connect() as conn:
            return list(await conn.scalars(select(c.seq).where(and_(c.seq > low, c.seq <= high))))

    async def all_documents(self) -> AsyncIterator[StoredDocument]:
        """Every document, streamed (for export and key rotation)."""
        async with self._connect() as conn:
            result = await conn.stream(select(config_documents))
            async for row in result:
                yield _document(row)

    # ----------------------------------------------------------------- leader work

    async def _fence(self, conn: AsyncConnection, cluster: str, token: int, holder: str) -> None:
        """Check and raise the cluster's fencing token inside the caller's transaction."""
        f = config_fencing.c
        now = datetime.now(UTC)
        current = await conn.scalar(select(f.token).where(f.cluster == cluster).with_for_update())
        if current is None:
            await conn.execute(
                insert(config_fencing).values(
                    cluster=cluster, token=token, holder=holder, updated_at=now
                )
            )
        elif current > token:
            raise FencingTokenRejected(cluster, token, current)
        else:
            await conn.execute(
                update(config_fencing)
                .where(f.cluster == cluster)
                .values(token=token, holder=holder, updated_at=now)
            )

    async def fencing_token(self, cluster: str) -> int:
        """The highest fencing token that acted on this database (0: none yet)."""
        f = config_fencing.c
        async with self._connect() as conn:
            return int(await conn.scalar(select(f.token).where(f.cluster == cluster)) or 0)

    async def prune_changes(
        self,
        *,
        cluster: str,
        token: int,
        holder: str,
        keep_versions: int | None,
        older_than: datetime | None,
    ) -> int:
        """Change-log retention, run by the leader; returns how many rows were deleted.

        A row goes when it is older than ``older_than`` or not among the newest
        ``keep_versions`` of its document; the newest version of a document always
        stays. Fenced: refused with `FencingTokenRejected` (nothing deleted) if a leader
        with a higher ``token`` has acted on this database.
        """
        c, d = config_changes.c, config_documents.c
        newest = (
            select(d.version).where(d.namespace == c.namespace, d.key == c.key).scalar_subquery()
        )
        expired = []
        if keep_versions is not None:
            expired.append(c.version <= newest - max(1, keep_versions))
        if older_than is not None:
            expired.append(c.committed_at < older_than)
        for attempt in range(2):
            try:
                async with self._connect(write=True) as conn:
                    await self._fence(conn, cluster, token, holder)
                    if not expired:
                        return 0
                    result = await conn.execute(
                        delete(config_changes).where(c.version < newest, or_(*expired))
                    )
                    return int(result.rowcount or 0)
            except IntegrityError:  # two leaders inserted the first fencing row at once
                if attempt:
                    raise
        raise AssertionError("unreachable")
