"""Backup and restore of a whole database, as one versioned JSON document.

A backup is every row of the three tables confman keeps, exactly as stored:

- ``config_documents``: every environment's documents, tombstones included; the
  environments registry (namespace ``_environments``) and API tokens (hashes) are
  documents too, so they come along;
- ``config_changes``: the full change log with its ``seq`` numbers, so history,
  rollbacks and instances catching up keep working on the restored database;
- ``config_fencing``: the cluster leaders' fencing tokens, which must never go back.

Secrets stay as stored, Fernet ciphertext: a backup reveals nothing a database dump
would not, and restoring needs the same encryption keys, which `restore` checks first.

The file is laid out one row per line (``{"format": "confman-backup/1", ...}``), rows
ordered by primary key and JSON keys sorted, so that backup -> restore -> backup gives
the same bytes apart from ``created_at``. Reading pages through one snapshot keeps the
backup's memory bounded and its content consistent while writers go on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import DateTime, RowMapping, Table, delete, func, insert, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from .exceptions import ConfmanError, SecretsUnavailable
from .secrets import _TOKEN_FIELD, KeyRing
from .store.engine import WRITE
from .store.tables import config_changes, config_documents, config_fencing

if TYPE_CHECKING:
    from .store.store import ConfigStore

__all__ = [
    "FORMAT",
    "TABLES",
    "BadFile",
    "DatabaseNotEmpty",
    "KeysCannotDecrypt",
    "backup",
    "check_keys",
    "read_backup",
    "restore",
]

FORMAT = "confman-backup/1"
#: In the order a restore inserts them (no foreign keys, but a stable order).
TABLES: tuple[Table, ...] = (config_documents, config_changes, config_fencing)
#: Rows per read (backup) and per INSERT (restore): memory stays bounded by this.
PAGE = 500

Progress = Callable[[str, int, int], None]  # (table, rows done, rows in all)


class BadFile(ConfmanError):
    """A backup or export file that cannot be used (truncated, another format, rows or
    fields that do not fit); nothing was written."""


class DatabaseNotEmpty(ConfmanError):
    """`restore` into a database that holds documents or changes, without ``force``."""


class KeysCannotDecrypt(SecretsUnavailable):
    """The configured encryption keys cannot decrypt the secrets in a backup or file."""


# --------------------------------------------------------------------------- backup


def _jsonable(table: Table, row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row[column.name]
        if isinstance(value, datetime):
            # SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones.
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
            value = value.isoformat()
        out[column.name] = value
    return out


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


async def _count(conn: AsyncConnection, table: Table) -> int:
    return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def backup(
    store: ConfigStore, out: IO[str], *, page: int = PAGE, on_progress: Progress | None = None
) -> dict[str, int]:
    """Write the whole database to ``out`` as a backup document; returns rows per table.

    All pages are read in one transaction (REPEATABLE READ on PostgreSQL; on SQLite a
    read transaction is one snapshot already), so the backup is one consistent state
    even while instances write. That transaction has no deadline: a backup of a large
    log rightly takes longer than one store call may.
    """
    from .store.schema import current_revisions

    revisions = await current_revisions(store.engine)
    counts: dict[str, int] = {}
    async with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            totals = {t.name: await _count(conn, t) for t in TABLES}
            created = datetime.now(UTC).isoformat()
            out.write(
                f'{{"format": {_dump(FORMAT)}, "created_at": {_dump(created)}, '
                f'"schema": {_dump(list(revisions))}'
            )
            for table in TABLES:
                out.write(f',\n"{table.name}": [')
                done = 0
                async for row in _read_pages(conn, table, page):
                    out.write(("\n" if done == 0 else ",\n") + _dump(_jsonable(table, row)))
                    done += 1
                    if on_progress and done % page == 0:
                        on_progress(table.name, done, totals[table.name])
                out.write("\n]" if done else "]")
                counts[table.name] = done
                if on_progress:
                    on_progress(table.name, done, totals[table.name])
    # The counts close the document: a reader can tell a cut-off file from a short one.
    out.write(f',\n"counts": {_dump(counts)}}}\n')
    return counts


async def _read_pages(conn: AsyncConnection, table: Table, page: int) -> AsyncIterator[RowMapping]:
    """Rows of ``table`` in primary-key order, ``page`` at a time (keyset paging: each
    page is an index range scan, never an OFFSET that rereads what came before)."""
    key = list(table.primary_key.columns)
    last: tuple[Any, ...] | None = None
    while True:
        query = select(table).order_by(*key).limit(page)
        if last is not None:
            query = query.where(tuple_(*key) > tuple_(*last))
        rows = (await conn.execute(query)).mappings().all()
        for row in rows:
            yield row
        if len(rows) < page:
            return
        last = tuple(rows[-1][c.name] for c in key)


# --------------------------------------------------------------------------- restore


def read_backup(stream: IO[str], name: str = "backup") -> dict[str, list[dict[str, Any]]]:
    """Parse and check a backup file; returns its rows by table, ready to insert.

    Raises:
        BadFile: not JSON (truncated, say), another format or version, or rows that do
            not fit the tables; the message names the file and the row.
    """
    try:
        doc = json.load(stream)
    except json.JSONDecodeError as e:
        raise BadFile(
            f"{name}: not a complete JSON document (truncated?): {e.msg} at line {e.lineno}"
        ) from None
    except UnicodeDecodeError:
        raise BadFile(f"{name}: not a text file (UTF-8 JSON expected)") from None
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("confman-backup/"):
        raise BadFile(f'{name}: not a confman backup (no "format": {FORMAT!r})')
    if doc["format"] != FORMAT:
        raise BadFile(
            f"{name}: backup format {doc['format']!r} is not one this confman reads ({FORMAT})"
        )
    counts = doc.get("counts")
    if not isinstance(counts, dict):
        raise BadFile(f'{name}: the backup has no "counts" (truncated?)')
    unknown = sorted(set(doc) - {"format", "created_at", "schema", "counts", *_names()})
    if unknown:
        raise BadFile(f"{name}: unknown member(s) {', '.join(unknown)}")
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in TABLES:
        rows = doc.get(table.name)
        if not isinstance(rows, list):
            raise BadFile(f"{name}: {table.name} is missing or not a list")
        if counts.get(table.name) != len(rows):
            raise BadFile(
                f"{name}: {table.name} holds {len(rows)} row(s), its count says "
                f"{counts.get(table.name)!r} (truncated or edited?)"
            )
        tables[table.name] = [
            _row(table, r, f"{name}: {table.name}[{i}]") for i, r in enumerate(rows)
        ]
    return tables


def _names() -> list[str]:
    return [t.name for t in TABLES]


def _row(table: Table, row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise BadFile(f"{where}: not an object")
    columns = {c.name: c for c in table.columns}
    unknown = sorted(set(row) - set(columns))
    if unknown:
        raise BadFile(f"{where}: unknown field(s) {', '.join(unknown)}")
    missing = sorted(set(columns) - set(row))
    if missing:
        raise BadFile(f"{where}: missing field(s) {', '.join(missing)}")
    out = dict(row)
    for name, column in columns.items():
        value = out[name]
        if value is None and not column.nullable:
            raise BadFile(f"{where}: {name} must not be null")
        if isinstance(column.type, DateTime) and value is not None:
            try:
                out[name] = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise BadFile(f"{where}: {name} is not an ISO date-time: {value!r}") from None
    return out


def _tokens(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if len(value) == 1 and _TOKEN_FIELD in value:
            yield str(value[_TOKEN_FIELD])
            return
        for v in value.values():
            yield from _tokens(v)
    elif isinstance(value, list):
        for v in value:
            yield from _tokens(v)


def check_keys(tables: Mapping[str, list[dict[str, Any]]], keys: KeyRing, name: str) -> int:
    """Decrypt every secret token of the backup (documents and the change log, which
    rollbacks read) once; returns how many distinct tokens there were.

    Raises:
        KeysCannotDecrypt: one of them matches no configured key.
    """
    seen: set[str] = set()
    for table in ("config_documents", "config_changes"):
        for row in tables[table]:
            for token in _tokens(row.get("data")):
                if token in seen:
                    continue
                try:
                    keys.decrypt(token)
                except SecretsUnavailable:
                    raise KeysCannotDecrypt(
                        f"{name}: its secrets cannot be decrypted with the configured "
                        "encryption keys; set CONFMAN_ENCRYPTION_KEY to the keys of the "
                        "backed-up database (nothing was restored)"
                    ) from None
                seen.add(token)
    return len(seen)


async def restore(
    store: ConfigStore,
    tables: Mapping[str, list[dict[str, Any]]],
    *,
    force: bool = False,
    page: int = PAGE,
    on_progress: Progress | None = None,
) -> dict[str, int]:
    """Insert a backup's rows (see `read_backup`) into the database, in one transaction.

    Only into an empty database (no documents, no changes) unless ``force``, which
    first deletes every row of the three tables in the same transaction: all of the
    backup or nothing is there afterwards. Stop the instances on the database first; a
    running instance would keep serving what it had loaded.

    Raises:
        DatabaseNotEmpty: documents or changes are there and not ``force``.
    """
    counts: dict[str, int] = {}
    # One transaction for the whole restore, without the store's per-call deadline: a
    # large change log rightly takes longer, and half a restore must never be visible.
    async with store.engine.connect() as conn:
        conn = await conn.execution_options(**{WRITE: True})
        async with conn.begin():
            held = {t.name: await _count(conn, t) for t in (config_documents, config_changes)}
            if any(held.values()) and not force:
                raise DatabaseNotEmpty(
                    f"the database holds {held['config_documents']} document row(s) and "
                    f"{held['config_changes']} change(s); restore goes into an empty "
                    "database (--force replaces everything in it)"
                )
            if force:
                for table in TABLES:
                    await conn.execute(delete(table))
            for table in TABLES:
                rows = tables[table.name]
                for start in range(0, len(rows), page):
                    await conn.execute(insert(table), rows[start : start + page])
                    if on_progress:
                        on_progress(table.name, min(start + page, len(rows)), len(rows))
                counts[table.name] = len(rows)
            if conn.dialect.name == "postgresql":
                # Explicit seqs do not move the sequence: without this, the next write
                # would take seq 1 and collide (or, worse, sort before restored history).
                await conn.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('config_changes', 'seq'), "
                        "COALESCE(MAX(seq), 0) + 1, false) FROM config_changes"
                    )
                )
            # SQLite (AUTOINCREMENT) moves sqlite_sequence past explicit seqs itself.
    return counts
