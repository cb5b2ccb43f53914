"""The raw floor: confman's write done by hand through the database driver.

One transaction: ``UPDATE config_documents ... WHERE version = ?`` (zero rows: a
conflict) and ``INSERT INTO config_changes ... RETURNING seq``, on the very tables the
migrations create, with the same JSON payloads confman writes. No ORM, no validation.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import make_url

UPDATE_PG = (
    "UPDATE config_documents SET data = $1::jsonb, version = version + 1, updated_at = $2, "
    "updated_by = $3 WHERE namespace = $4 AND key = $5 AND version = $6"
)
INSERT_PG = (
    "INSERT INTO config_changes (namespace, key, version, action, actor, reason, before, "
    "after, changed, data, origin, committed_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, "
    "$8::jsonb, $9::jsonb, $10::jsonb, $11, $12) RETURNING seq"
)
CREATE_PG = (
    "INSERT INTO config_documents (namespace, key, data, version, updated_at, updated_by) "
    "VALUES ($1, $2, $3::jsonb, 1, $4, $5) ON CONFLICT DO NOTHING"
)
UPDATE_SQLITE = (
    "UPDATE config_documents SET data = ?, version = version + 1, updated_at = ?, "
    "updated_by = ? WHERE namespace = ? AND key = ? AND version = ?"
)
INSERT_SQLITE = (
    "INSERT INTO config_changes (namespace, key, version, action, actor, reason, before, "
    "after, changed, data, origin, committed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "RETURNING seq"
)
CREATE_SQLITE = (
    "INSERT OR IGNORE INTO config_documents (namespace, key, data, version, updated_at, "
    "updated_by) VALUES (?, ?, ?, 1, ?, ?)"
)


class RawConflict(Exception):
    pass


class RawWriter(Protocol):
    async def write(
        self,
        namespace: str,
        key: str,
        version: int,
        data: dict[str, Any],
        before: dict[str, Any],
        changed: list[str],
        actor: str,
        reason: str,
    ) -> int: ...

    async def create(self, namespace: str, key: str, data: dict[str, Any]) -> None: ...

    async def read_change(self, namespace: str, key: str, version: int) -> dict[str, Any]: ...

    async def close(self) -> None: ...


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class PostgresWriter:
    """asyncpg on one connection (what a hand-written service would hold)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, url: str) -> PostgresWriter:
        import asyncpg  # type: ignore[import-untyped]

        parsed = make_url(url).set(drivername="postgresql")
        conn = await asyncpg.connect(parsed.render_as_string(hide_password=False))
        return cls(conn)

    async def create(self, namespace: str, key: str, data: dict[str, Any]) -> None:
        await self.conn.execute(CREATE_PG, namespace, key, _dumps(data), datetime.now(UTC), "raw")

    async def write(
        self,
        namespace: str,
        key: str,
        version: int,
        data: dict[str, Any],
        before: dict[str, Any],
        changed: list[str],
        actor: str,
        reason: str,
        notify: str | None = None,
    ) -> int:
        """Commit the write; with ``notify`` (a channel), NOTIFY its notice in the same
        transaction, as a hand-written LISTEN/NOTIFY service would."""
        now = datetime.now(UTC)
        payload = _dumps(data)
        async with self.conn.transaction():
            status = await self.conn.execute(
                UPDATE_PG, payload, now, actor, namespace, key, version - 1
            )
            if status != "UPDATE 1":
                raise RawConflict(f"{namespace}/{key} is not at v{version - 1}")
            seq: int = await self.conn.fetchval(
                INSERT_PG,
                namespace,
                key,
                version,
                "update",
                actor,
                reason,
                _dumps(before),
                payload,
                _dumps(changed),
                payload,
                "raw",
                now,
            )
            if notify is not None:
                notice = {"namespace": namespace, "key": key, "version": version, "seq": seq,
                          "origin": "prototype"}  # fmt: skip
                await self.conn.execute("SELECT pg_notify($1, $2)", notify, _dumps(notice))
        return seq

    async def read_change(self, namespace: str, key: str, version: int) -> dict[str, Any]:
        raw = await self.conn.fetchval(
            "SELECT data FROM config_changes WHERE namespace = $1 AND key = $2 AND version = $3",
            namespace,
            key,
            version,
        )
        data: dict[str, Any] = json.loads(raw)
        return data

    async def close(self) -> None:
        await self.conn.close()


class SqliteWriter:
    """aiosqlite (confman's own SQLite driver), WAL, ``BEGIN IMMEDIATE`` like confman."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, url: str) -> SqliteWriter:
        import aiosqlite

        path = make_url(url).database
        assert path is not None
        conn = await aiosqlite.connect(Path(path), isolation_level=None, timeout=30)
        await conn.execute("PRAGMA journal_mode=WAL")
        return cls(conn)

    async def create(self, namespace: str, key: str, data: dict[str, Any]) -> None:
        now = datetime.now(UTC).isoformat()
        await self.conn.execute(CREATE_SQLITE, (namespace, key, _dumps(data), now, "raw"))

    async def write(
        self,
        namespace: str,
        key: str,
        version: int,
        data: dict[str, Any],
        before: dict[str, Any],
        changed: list[str],
        actor: str,
        reason: str,
    ) -> int:
        now = datetime.now(UTC).isoformat()
        payload = _dumps(data)
        conn = self.conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = await conn.execute(
                UPDATE_SQLITE, (payload, now, actor, namespace, key, version - 1)
            )
            if cursor.rowcount != 1:
                raise RawConflict(f"{namespace}/{key} is not at v{version - 1}")
            cursor = await conn.execute(
                INSERT_SQLITE,
                (
                    namespace,
                    key,
                    version,
                    "update",
                    actor,
                    reason,
                    _dumps(before),
                    payload,
                    _dumps(changed),
                    payload,
                    "raw",
                    now,
                ),
            )
            row = await cursor.fetchone()
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        assert row is not None
        return int(row[0])

    async def read_change(self, namespace: str, key: str, version: int) -> dict[str, Any]:
        cursor = await self.conn.execute(
            "SELECT data FROM config_changes WHERE namespace = ? AND key = ? AND version = ?",
            (namespace, key, version),
        )
        row = await cursor.fetchone()
        assert row is not None
        data: dict[str, Any] = json.loads(row[0])
        return data

    async def close(self) -> None:
        await self.conn.close()


async def open_writer(url: str) -> RawWriter:
    if make_url(url).get_backend_name() == "sqlite":
        return await SqliteWriter.open(url)
    return await PostgresWriter.open(url)
