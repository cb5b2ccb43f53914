"""Queries: documents, version-checked writes with their change-log row, history, catch-up."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..change import Action, ChangeRecord
from ..exceptions import ConcurrencyConflict, NotFound, StoreUnavailable
from .engine import WRITE
from .tables import config_changes, config_documents

__all__ = ["ConfigStore", "LoggedChange", "StoredDocument", "Write"]


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

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @contextlib.asynccontextmanager
    async def _connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                if write:
                    conn = await conn.execution_options(**{WRITE: True})
                async with conn.begin():
                    yield conn
        except (OperationalError, InterfaceError, OSError) as e:
            raise StoreUnavailable(
                f"database unavailable ({type(e).__name__}: {str(e).splitlines()[0]})"
            ) from e

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

    async def replace_data(
        self, rows: Iterable[tuple[str, str, int, dict[str, Any] | None]]
    ) -> None:
        """Rewrite stored forms in place without a new version (key rotation only)."""
        docs = config_documents.c
        async with self._connect(write=True) as conn:
            for namespace, key, version, data in rows:
                await conn.execute(
                    update(config_documents)
                    .where(docs.namespace == namespace, docs.key == key, docs.version == version)
                    .values(data=data)
                )
