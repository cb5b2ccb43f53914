"""Queries: documents, version-checked writes with their change-log row, history, catch-up.

The statements confman runs on every write and every notice are built once, below, with
bind parameters: building a SQLAlchemy statement costs more CPU than running it.

Why one long module: every statement confman runs is here, beside the deadline machinery
that runs it and the driver fast paths that mirror the hottest ones, so that a query and
its fast path change in one place. The planned split (fast paths into ``store/drivers.py``,
the lease and retention queries into a module of their own) is in ``shared/STYLE.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar, cast

from sqlalchemy import (
    CTE,
    Boolean,
    ClauseElement,
    ColumnElement,
    Insert,
    Integer,
    Row,
    Select,
    String,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler

from ..change import BASE, Action, ChangeRecord
from ..exceptions import ConcurrencyConflict, ConfmanError, NotFound, StoreUnavailable
from .engine import DEFAULT_DATABASE_TIMEOUT, WRITE
from .schema import check_schema_on
from .tables import config_changes, config_documents, config_fencing

__all__ = [
    "ConfigStore",
    "FencingTokenRejected",
    "LoggedChange",
    "StoredDocument",
    "Write",
]

T = TypeVar("T")

#: Change-log rows retention deletes per transaction: a long log is pruned in steps, each
#: well within the database deadline, instead of one transaction that never finishes.
PRUNE_BATCH = 5_000


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
    environment: str = BASE  # '' for the base, else the environment's overlay


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
    environment: str = BASE  # '' writes the base, a name writes that environment's row
    change_set: str | None = None  # the id shared by the rows of one change set
    # Whether the writer waits for every instance's reply (`wait_for_instances`): the
    # notice asks for them. Without, instances stay quiet and catch-up replies later.
    replies: bool = False


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """A change-log row together with the document it wrote (stored form)."""

    record: ChangeRecord
    data: dict[str, Any] | None


# ----------------------------------------------------------------------- statements

_d, _c = config_documents.c, config_changes.c

# Reads. Bind parameters are named after what they hold.
_DOCUMENTS = select(config_documents).where(
    _d.namespace == bindparam("namespace"),
    _d.environment.in_(bindparam("environments", expanding=True)),
)
_DOCUMENT = select(config_documents).where(
    _d.environment == bindparam("environment"),
    _d.namespace == bindparam("namespace"),
    _d.key == bindparam("key"),
)
_DOCUMENTS_WITH_KEYS = _DOCUMENTS.where(_d.key.in_(bindparam("keys", expanding=True)))
# One key in every environment (what a base write must validate against).
_KEY_EVERYWHERE = select(config_documents).where(
    _d.namespace == bindparam("namespace"), _d.key == bindparam("key")
)
_NAMESPACES = (
    select(_d.namespace, func.count())
    .where(_d.data.is_not(None), _d.environment == bindparam("environment"))
    .group_by(_d.namespace)
)
_COUNT = select(func.count()).where(
    _d.namespace == bindparam("namespace"),
    _d.environment.in_(bindparam("environments", expanding=True)),
    _d.data.is_not(None),
)
_ENVIRONMENT_COUNTS = (
    select(_d.environment, func.count())
    .where(_d.data.is_not(None), _d.environment != BASE)
    .group_by(_d.environment)
)
_IN_ENVIRONMENT = select(config_documents).where(
    _d.environment == bindparam("environment"), _d.data.is_not(None)
)
# Every document, a page at a time in primary-key order (keyset paging).
_ALL_DOCUMENTS = (
    select(config_documents)
    .where(
        tuple_(_d.environment, _d.namespace, _d.key)
        > tuple_(
            bindparam("after_environment", type_=String),
            bindparam("after_namespace", type_=String),
            bindparam("after_key", type_=String),
        )
    )
    .order_by(_d.environment, _d.namespace, _d.key)
    .limit(bindparam("limit", type_=Integer))
)
_KEY_PAGE = (
    select(_d.key, _d.version, _d.updated_at, _d.updated_by)
    .where(
        _d.environment == bindparam("environment"),
        _d.namespace == bindparam("namespace"),
        _d.data.is_not(None),
    )
    .where(_d.key > bindparam("after"))
    .order_by(_d.key)
    .limit(bindparam("limit", type_=Integer))
)

_CHANGE_AT = select(config_changes).where(
    _c.environment == bindparam("environment"),
    _c.namespace == bindparam("namespace"),
    _c.key == bindparam("key"),
    _c.version == bindparam("version"),
)
_HISTORY = (
    select(config_changes)
    .where(
        _c.environment == bindparam("environment"),
        _c.namespace == bindparam("namespace"),
        _c.key == bindparam("key"),
    )
    .order_by(_c.version.desc())
    .limit(bindparam("limit", type_=Integer))
)
_HISTORY_BEFORE = _HISTORY.where(_c.version < bindparam("before_version"))
_MAX_SEQ = select(func.max(_c.seq))
_SEQS_BETWEEN = select(_c.seq).where(_c.seq > bindparam("low"), _c.seq <= bindparam("high"))


def _since(*, values: bool, also: bool) -> Select[Any]:
    # Catch-up needs neither ``before`` nor ``after`` (masked copies for people): not
    # reading them saves decoding two JSON documents per row.
    columns = [col for col in config_changes.c if values or col.name not in ("before", "after")]
    newer = _c.seq > bindparam("after_seq")
    if also:
        newer = or_(newer, _c.seq.in_(bindparam("also", expanding=True)))
    return select(*columns).where(newer).order_by(_c.seq).limit(bindparam("limit", type_=Integer))


_CHANGES_SINCE = {(v, a): _since(values=v, also=a) for v in (False, True) for a in (False, True)}

# Replays for readers (the event stream, `ConfigHub.changes_since`): the columns a change
# record shows and nothing else (never ``data``; ``before``/``after`` only when asked),
# filtered by the database, one page per statement, so that a replay holds one page
# whatever the length of the log or the share of it the reader may see.
_RECORD_COLUMNS = [c for c in config_changes.c if c.name not in ("before", "after", "data")]


def _record_page(*, values: bool, namespaces: bool, environments: bool) -> Select[Any]:
    columns = [*_RECORD_COLUMNS, _c.before, _c.after] if values else _RECORD_COLUMNS
    query = select(*columns).where(_c.seq > bindparam("after_seq"))
    if namespaces:
        query = query.where(_c.namespace.in_(bindparam("namespaces", expanding=True)))
    if environments:
        query = query.where(_c.environment.in_(bindparam("environments", expanding=True)))
    return query.order_by(_c.seq).limit(bindparam("limit", type_=Integer))


_RECORD_PAGES = {
    (v, n, e): _record_page(values=v, namespaces=n, environments=e)
    for v in (False, True)
    for n in (False, True)
    for e in (False, True)
}
_SEQ_BOUNDS = select(func.min(_c.seq), func.max(_c.seq))
_SET_ROWS = select(config_changes).where(_c.change_set == bindparam("change_set")).order_by(_c.seq)

# Writes. Parameters are named ``w_*`` (never a column name, which SQLAlchemy reserves
# for the VALUES/SET clause) and one set of them serves every write statement.
_CREATE = insert(config_documents).values(
    environment=bindparam("w_environment"),
    namespace=bindparam("w_namespace"),
    key=bindparam("w_key"),
    data=bindparam("w_data"),
    version=bindparam("w_version"),
    updated_at=bindparam("w_now"),
    updated_by=bindparam("w_actor"),
)
_UPDATE = (
    update(config_documents)
    .where(
        _d.environment == bindparam("w_environment"),
        _d.namespace == bindparam("w_namespace"),
        _d.key == bindparam("w_key"),
        _d.version == bindparam("w_expected"),
    )
    .values(
        data=bindparam("w_data"),
        version=bindparam("w_version"),
        updated_at=bindparam("w_now"),
        updated_by=bindparam("w_actor"),
    )
)
_WRITTEN_VERSION = select(_d.version).where(
    _d.environment == bindparam("w_environment"),
    _d.namespace == bindparam("w_namespace"),
    _d.key == bindparam("w_key"),
)
# The change-log row: (column, parameter); ``version`` is the version written.
_LOGGED = (
    ("namespace", "w_namespace"),
    ("key", "w_key"),
    ("version", "w_version"),
    ("action", "w_action"),
    ("actor", "w_actor"),
    ("reason", "w_reason"),
    ("before", "w_before"),
    ("after", "w_after"),
    ("changed", "w_changed"),
    ("data", "w_data"),
    ("origin", "w_origin"),
    ("committed_at", "w_now"),
    ("environment", "w_environment"),
    ("change_set", "w_change_set"),
)
_LOG_ROW = insert(config_changes).values({column: bindparam(param) for column, param in _LOGGED})
_LOG = _LOG_ROW.returning(_c.seq)


def _log_after(document: CTE) -> Insert:
    """PostgreSQL: one statement writes the document and, if it did, its change-log row.

    ``document`` is the INSERT or version-checked UPDATE of the document, as a CTE
    returning the version it wrote; no row (a version conflict): no change-log row, and
    the statement returns no ``seq``. One statement is one round trip, and atomic.
    """
    row = [
        document.c.version
        if column == "version"
        else bindparam(param, type_=config_changes.c[column].type)
        for column, param in _LOGGED
    ]
    names = [column for column, _ in _LOGGED]
    return insert(config_changes).from_select(names, select(*row)).returning(_c.seq)


_PG_CREATE_LOGGED = _log_after(_CREATE.returning(_d.version).cte("written"))
_PG_UPDATE_LOGGED = _log_after(_UPDATE.returning(_d.version).cte("written"))


def _notify_after(logged: Insert) -> Select[Any]:
    """PostgreSQL: the logged write that also sends its notice (``NOTIFY`` on the
    channel ``w_channel``) in the same statement, hence in the committing transaction:
    PostgreSQL delivers it at COMMIT, exactly when the change becomes visible, and
    never for a write that rolls back. The payload is `confman.bus.ChangeNotice` as
    JSON; it names the document, never its value."""
    row = logged.returning(
        _c.namespace, _c.key, _c.version, _c.origin, _c.environment, _c.change_set
    ).cte("logged")
    fields = [
        part
        for name in ("namespace", "key", "version", "seq", "origin", "environment", "change_set")
        for part in (literal_column(f"'{name}'"), row.c[name])
    ] + [literal_column("'quiet'"), bindparam("w_quiet", type_=Boolean)]
    payload = sql_cast(func.json_build_object(*fields), Text)
    return select(row.c.seq, func.pg_notify(bindparam("w_channel", type_=Text), payload))


_PG_CREATE_NOTIFIED = _notify_after(_PG_CREATE_LOGGED)
_PG_UPDATE_NOTIFIED = _notify_after(_PG_UPDATE_LOGGED)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything confman stores is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _record(m: Mapping[Any, Any], *, values: bool = True) -> ChangeRecord:
    # ``m``: a SQLAlchemy row's ``_mapping`` or an asyncpg ``Record``.
    return ChangeRecord(
        seq=m["seq"],
        namespace=m["namespace"],
        key=m["key"],
        version=m["version"],
        action=Action(m["action"]),
        actor=m["actor"],
        reason=m["reason"],
        before=m["before"] if values else None,
        after=m["after"] if values else None,
        changed=tuple(m["changed"]),
        origin=m["origin"],
        committed_at=_utc(m["committed_at"]),
        environment=m["environment"] or None,
        change_set=m["change_set"],
    )


def _document(row: Row[Any]) -> StoredDocument:
    m = row._mapping
    return StoredDocument(
        m["namespace"], m["key"], m["data"], m["version"], _utc(m["updated_at"]),
        m["updated_by"], m["environment"],
    )  # fmt: skip


def _lost_connection(e: DBAPIError) -> bool:
    return isinstance(e, (OperationalError, InterfaceError)) or e.connection_invalidated


def _abandoned(e: BaseException) -> bool:
    """Whether ``e`` left a call on the connection unfinished: a deadline or the driver's
    own timeout (TimeoutError), or a cancellation. The server may still answer that call
    later, or, through a silent network, never: either way the connection is out of step."""
    # GeneratorExit: a reader of a stream stopped early; the connection is in step.
    return isinstance(e, TimeoutError) or not isinstance(e, (Exception, GeneratorExit))


async def _discard(conn: AsyncConnection) -> None:
    """Invalidate ``conn`` so that the pool never hands it out again.

    The driver's socket is closed first, without a word to the server: SQLAlchemy's own
    invalidation tries a graceful close (asyncpg: up to 2 s), which a silent network never
    answers. Nothing here waits on the network.
    """
    if conn.invalidated or conn.closed:
        return
    with contextlib.suppress(Exception):
        driver = (await conn.get_raw_connection()).driver_connection
        terminate = getattr(driver, "terminate", None)  # asyncpg; aiosqlite has none
        if callable(terminate):
            terminate()
        # aiosqlite: the statement still runs on the driver's thread (a busy wait, a long
        # DELETE), and closing queues behind it; interrupting it is thread-safe.
        sqlite = getattr(driver, "_conn", None)
        if isinstance(sqlite, sqlite3.Connection):
            sqlite.interrupt()
    with contextlib.suppress(Exception):
        await conn.invalidate()


@contextlib.asynccontextmanager
async def _discard_if_abandoned(conn: AsyncConnection) -> AsyncIterator[None]:
    try:
        yield
    except BaseException as e:
        if _abandoned(e):
            # Before anything else touches it: a ROLLBACK on it would wait forever too.
            await _discard(conn)
        raise


# ----------------------------------------------------------------------- driver level
#
# The hot paths: a write (B2's figure) and, on PostgreSQL, reading the change-log row a
# notice names (every other instance does it for every change: B4's). Through SQLAlchemy
# they cost several times the raw driver: per statement the execution machinery and, on
# SQLite, about a dozen hops to aiosqlite's thread for a write. So on the two drivers
# confman ships with they run on the driver connection (checked out of SQLAlchemy's pool
# as always), with the statements above compiled once by SQLAlchemy for the dialect and
# SQLAlchemy's own bind processors (JSON, datetimes): what is stored is exactly what
# SQLAlchemy would store. Driver errors are raised as SQLAlchemy's, so callers see no
# difference.


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    sql: str
    params: tuple[tuple[str, Callable[[Any], Any] | None], ...]  # positional: name, bind

    def args(
        self, values: Mapping[str, Any], done: dict[str, Any] | None = None
    ) -> tuple[Any, ...]:
        """The positional arguments for ``values``. ``done``: values already bound for
        another statement of the same write (a document's JSON is encoded once, not for
        the document and again for its change-log row)."""
        if done is None:
            return tuple(
                values[name] if bind is None else bind(values[name]) for name, bind in self.params
            )
        out = []
        for name, bind in self.params:
            if bind is None:
                out.append(values[name])
            elif name in done:
                out.append(done[name])
            else:
                out.append(done.setdefault(name, bind(values[name])))
        return tuple(out)


def _values(w: Write, now: datetime, channel: str | None) -> dict[str, Any]:
    """The bind parameters of ``w`` (``w_*``, as the write statements name them)."""
    version = w.expected_version + 1
    values: dict[str, Any] = {
        "w_environment": w.environment,
        "w_change_set": w.change_set,
        "w_namespace": w.namespace,
        "w_key": w.key,
        "w_data": w.data,
        "w_expected": w.expected_version,
        "w_version": version,
        "w_now": now,
        "w_action": w.action.value,
        "w_actor": w.actor,
        "w_reason": w.reason,
        "w_before": w.before,
        "w_after": w.after,
        "w_changed": list(w.changed),
        "w_origin": w.origin,
    }
    if channel is not None:
        values["w_channel"] = channel
        values["w_quiet"] = not w.replies
    return values


def _compile(statement: ClauseElement, dialect: Dialect) -> _DriverStatement:
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
    params = tuple(
        (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in compiled.positiontup or ()
    )
    return _DriverStatement(str(compiled), params)


def _conflict(w: Write, current: int) -> ConcurrencyConflict:
    return ConcurrencyConflict(w.namespace, w.key, expected=w.expected_version, current=current)


class _DriverWriter:
    async def write(self, conn: AsyncConnection, w: Write, values: Mapping[str, Any]) -> int:
        """Commit the write on ``conn`` (outside any transaction); returns its seq."""
        raise NotImplementedError

    async def write_all(
        self, conn: AsyncConnection, writes: Sequence[Write], now: datetime, channel: str | None
    ) -> list[int]:
        """Commit all the writes in one transaction on ``conn``; their seqs."""
        raise NotImplementedError


class _Postgres(_DriverWriter):
    """asyncpg. A write is one statement (see ``_log_after``): atomic on its own, so no
    BEGIN and COMMIT; one round trip where the raw transaction takes four."""

    def __init__(self, dialect: Dialect) -> None:
        self.create = _compile(_PG_CREATE_LOGGED, dialect)
        self.update = _compile(_PG_UPDATE_LOGGED, dialect)
        self.create_notified = _compile(_PG_CREATE_NOTIFIED, dialect)
        self.update_notified = _compile(_PG_UPDATE_NOTIFIED, dialect)
        self.version = _compile(_WRITTEN_VERSION, dialect)
        self.change = _compile(_CHANGE_AT, dialect)

    async def _call(self, conn: AsyncConnection, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(asyncpg_connection)``, its errors raised as SQLAlchemy's."""
        pg = (await conn.get_raw_connection()).driver_connection
        assert pg is not None
        try:
            return await fn(pg)
        except Exception as e:
            import asyncpg  # type: ignore[import-untyped]

            # asyncpg's command_timeout: the statement may still be running, or its
            # answer lost; never hand this connection out again.
            lost = bool(pg.is_closed()) or isinstance(e, TimeoutError)
            if lost:
                await _discard(conn)
            if isinstance(e, asyncpg.IntegrityConstraintViolationError):
                raise IntegrityError(None, None, e) from e
            if lost or isinstance(e, (OSError, asyncpg.InterfaceError)):
                raise OperationalError(None, None, e, connection_invalidated=lost) from e
            raise DBAPIError(None, None, e) from e

    async def write(self, conn: AsyncConnection, w: Write, values: Mapping[str, Any]) -> int:
        first = w.expected_version == 0
        if values.get("w_channel") is None:
            statement = self.create if first else self.update
        else:
            statement = self.create_notified if first else self.update_notified

        async def run(pg: Any) -> tuple[int | None, int]:
            seq = await pg.fetchval(statement.sql, *statement.args(values))
            if seq is None:  # a version conflict: nothing was written
                return None, int(
                    await pg.fetchval(self.version.sql, *self.version.args(values)) or 0
                )
            return int(seq), 0

        seq, current = await self._call(conn, run)
        if seq is None:
            raise _conflict(w, current)
        return seq

    async def write_all(
        self, conn: AsyncConnection, writes: Sequence[Write], now: datetime, channel: str | None
    ) -> list[int]:
        """One statement however many writes (see `_PG_SET`): atomic by itself, so no
        BEGIN and COMMIT round trips. The members travel as one JSON document, encoded in
        one call: per-column arrays cost a Python pass, and a JSON encoding, per value.
        A write that finds another version stored aborts the statement, all of it. The
        documents must be distinct (a change set's are)."""
        members = json.dumps(
            [
                (w.environment, w.namespace, w.key, w.data, w.expected_version,
                 w.action.value, w.actor, w.reason, w.before, w.after, list(w.changed),
                 w.origin, w.change_set)
                for w in writes
            ]
        )  # fmt: skip
        args: tuple[Any, ...] = (members, now, len(writes))
        statement = _PG_SET if channel is None else _PG_SET_NOTIFIED

        async def run(pg: Any) -> list[int]:
            try:
                rows = await pg.fetch(statement, *(args if channel is None else (*args, channel)))
            except Exception as e:
                if _SET_LOST not in str(e):
                    raise
                # Aborted, so nothing of it stands: look for who changed what it expected.
                for w in writes:
                    where = {"w_environment": w.environment, "w_namespace": w.namespace,
                             "w_key": w.key}  # fmt: skip
                    current = int(
                        await pg.fetchval(self.version.sql, *self.version.args(where)) or 0
                    )
                    if current != w.expected_version:
                        raise _Lost(w, current) from None
                raise _Lost(writes[0], -1) from None  # lost, then the winner's change undone
            seqs = {(r["environment"], r["namespace"], r["key"]): int(r["seq"]) for r in rows}
            return [seqs[w.environment, w.namespace, w.key] for w in writes]

        try:
            return await self._call(conn, run)
        except DBAPIError as e:
            if isinstance(e.orig, _Lost):
                raise _conflict(e.orig.write, e.orig.current) from None
            raise

    async def change_at(self, conn: AsyncConnection, params: Mapping[str, Any]) -> Any:
        """The change-log row (an asyncpg ``Record``: a mapping by column) or None."""
        return await self._call(
            conn, lambda pg: pg.fetchrow(self.change.sql, *self.change.args(params))
        )


# A change set's writes on PostgreSQL, whatever their number, in one statement (see
# `_Postgres.write_all`): $1 the members as a JSON array of arrays (no member names: a
# third of the bytes to encode and send; a JSON null, where SQL NULL is meant, is made
# NULL), $2 the commit time, $3 how many members. The change-log rows are inserted
# only once every document is written (their source reads ``written``), so a loser takes
# no change-log row and no index entry a winner could wait on. Fewer documents written
# than members (another version stored): the final SELECT casts a text that is no boolean,
# which aborts the statement, all of it (SQL has no RAISE; the marker says who).
_SET_LOST = "confman: a change set lost"
_PG_SET_WRITE = f"""
WITH i AS (
    SELECT m->>0 AS environment, m->>1 AS namespace, m->>2 AS key,
           NULLIF(m->3, 'null') AS data, (m->>4)::int AS expected, m->>5 AS action,
           m->>6 AS actor, m->>7 AS reason, NULLIF(m->8, 'null') AS before,
           NULLIF(m->9, 'null') AS after, m->10 AS changed, m->>11 AS origin,
           m->>12 AS change_set, ord
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS t(m, ord)
), created AS (
    INSERT INTO config_documents (environment, namespace, key, data, version, updated_at,
                                  updated_by)
    SELECT environment, namespace, key, data, 1, $2::timestamptz, actor FROM i
    WHERE expected = 0
    RETURNING 1
), updated AS (
    UPDATE config_documents AS d
    SET data = i.data, version = i.expected + 1, updated_at = $2::timestamptz,
        updated_by = i.actor
    FROM i
    WHERE i.expected > 0 AND d.environment = i.environment AND d.namespace = i.namespace
        AND d.key = i.key AND d.version = i.expected
    RETURNING 1
), written AS (
    SELECT (SELECT count(*) FROM created) + (SELECT count(*) FROM updated) AS n
), logged AS (
    INSERT INTO config_changes (environment, namespace, key, version, action, actor,
                                reason, before, after, changed, data, origin, change_set,
                                committed_at)
    SELECT environment, namespace, key, expected + 1, action, actor, reason, before, after,
           changed, data, origin, change_set, $2::timestamptz
    FROM i WHERE (SELECT n FROM written) = $3::int
    ORDER BY ord
    RETURNING seq, environment, namespace, key, version, origin, change_set
), checked AS (
    SELECT l.* FROM written LEFT JOIN logged AS l ON true
    WHERE CASE WHEN written.n = $3::int THEN true
               ELSE CAST('{_SET_LOST}: ' || written.n AS boolean) END
)"""
_PG_SET = _PG_SET_WRITE + "\nSELECT seq, environment, namespace, key FROM checked\n"
# With a channel ($4): the notices too, in seq order, sent at the commit of the statement.
_PG_SET_NOTIFIED = (
    _PG_SET_WRITE
    + """
SELECT seq, environment, namespace, key, pg_notify($4, json_build_object(
    'namespace', namespace, 'key', key, 'version', version, 'seq', seq, 'origin', origin,
    'environment', environment, 'change_set', change_set, 'quiet', true)::text)
FROM checked
ORDER BY seq
"""
)


class _Lost(Exception):
    """A write of a set found another version stored."""

    def __init__(self, write: Write, current: int) -> None:
        self.write = write
        self.current = current


class _Sqlite(_DriverWriter):
    """aiosqlite. A write is one call on aiosqlite's thread: ``BEGIN IMMEDIATE``, the
    document, its change-log row and ``COMMIT`` in one function on the thread that owns
    the sqlite3 connection; one hop from the event loop where SQLAlchemy's adapter takes
    about a dozen (cursor, execute and close per statement, the fetch, the commit)."""

    def __init__(self, dialect: Dialect) -> None:
        self.create = _compile(_CREATE, dialect)
        self.update = _compile(_UPDATE, dialect)
        self.version = _compile(_WRITTEN_VERSION, dialect)
        self.log = _compile(_LOG, dialect)
        self.log_row = _compile(_LOG_ROW, dialect)  # for executemany: no RETURNING

    async def write(self, conn: AsyncConnection, w: Write, values: Mapping[str, Any]) -> int:
        document = self.create if w.expected_version == 0 else self.update
        bound: dict[str, Any] = {}
        args = (
            document.args(values, bound),
            self.version.args(values),
            self.log.args(values, bound),
        )
        aio = (await conn.get_raw_connection()).driver_connection
        assert aio is not None
        # aiosqlite has no public way to run a function on its thread; `_execute` is
        # what its own methods use (and SQLAlchemy's adapter queues work the same way).
        on_thread = cast(Callable[..., Awaitable[tuple[int | None, int]]], aio._execute)
        try:
            seq, current = await on_thread(self._transaction, aio, w.expected_version == 0, *args)
        except sqlite3.Error as e:
            raise DBAPIError.instance(None, None, e, sqlite3.Error, dialect=conn.dialect) from e
        except ValueError as e:  # aiosqlite: "Connection closed" (as SQLAlchemy maps it)
            raise OperationalError(None, None, e) from e
        if seq is None:
            raise _conflict(w, current)
        return seq

    async def write_all(
        self, conn: AsyncConnection, writes: Sequence[Write], now: datetime, channel: str | None
    ) -> list[int]:
        """All the writes in one call on aiosqlite's thread, in one transaction."""
        # Every row of the set has the same commit time: its text is made once.
        when = dict(self.log_row.params)["w_now"]
        at = {"w_now": now if when is None else when(now)}
        work = []
        for w in writes:
            values = _values(w, now, None)
            bound = dict(at)
            document = (self.create if w.expected_version == 0 else self.update).args(values, bound)
            # The version probe's arguments are made only if the set loses.
            work.append((w, document, values, self.log_row.args(values, bound)))
        aio = (await conn.get_raw_connection()).driver_connection
        assert aio is not None
        on_thread = cast(Callable[..., Awaitable[list[int]]], aio._execute)
        try:
            return await on_thread(self._transaction_all, aio, work)
        except _Lost as lost:
            raise _conflict(lost.write, lost.current) from None
        except sqlite3.Error as e:
            raise DBAPIError.instance(None, None, e, sqlite3.Error, dialect=conn.dialect) from e
        except ValueError as e:
            raise OperationalError(None, None, e) from e

    def _transaction_all(
        self,
        aio: Any,
        work: Sequence[tuple[Write, tuple[Any, ...], Mapping[str, Any], tuple[Any, ...]]],
    ) -> list[int]:
        """On aiosqlite's thread: every write, or (a version conflict: `_Lost`) none.

        One ``executemany`` per statement rather than one call per row: the change-log
        rows of one exclusive (``BEGIN IMMEDIATE``) transaction get consecutive seqs
        (``AUTOINCREMENT``), in the order given, so the last one tells them all."""
        db: sqlite3.Connection = aio._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            creates = [document for w, document, _, _ in work if w.expected_version == 0]
            updates = [(w, document, v) for w, document, v, _ in work if w.expected_version]
            if creates:
                db.executemany(self.create.sql, creates)
            if updates and db.executemany(
                self.update.sql, [document for _, document, _ in updates]
            ).rowcount != len(updates):
                # Undone first: inside, a loser's winner can have stored just the version
                # this set meant to write, and the two would look alike.
                db.execute("ROLLBACK")
                for w, _, values in updates:
                    found = db.execute(self.version.sql, self.version.args(values)).fetchall()
                    current = int(found[0][0]) if found else 0
                    if current != w.expected_version:
                        raise _Lost(w, current)
                raise AssertionError("an update was lost, but none of them")
            db.executemany(self.log_row.sql, [log for _, _, _, log in work])
            (last,) = db.execute("SELECT last_insert_rowid()").fetchone()
            seqs = list(range(int(last) - len(work) + 1, int(last) + 1))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return seqs

    def _transaction(
        self,
        aio: Any,
        first: bool,
        document: tuple[Any, ...],
        version: tuple[Any, ...],
        log: tuple[Any, ...],
    ) -> tuple[int | None, int]:
        """On aiosqlite's thread: ``(seq, 0)`` when committed, ``(None, current
        version)`` when the stored version is not the expected one (nothing written)."""
        db: sqlite3.Connection = aio._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            if first:
                db.execute(self.create.sql, document)
            elif db.execute(self.update.sql, document).rowcount != 1:
                found = db.execute(self.version.sql, version).fetchall()
                db.execute("ROLLBACK")
                return None, int(found[0][0]) if found else 0
            (seq,) = db.execute(self.log.sql, log).fetchall()[0]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return int(seq), 0


class ConfigStore:
    """All SQL confman runs. Owns no engine: the hub creates and disposes of it."""

    #: After a failure, writes fail at once for this long (seconds) instead of each
    #: waiting on a dead database; any successful read (the hub's catch-up) ends it.
    fail_fast_for: float = 2.0

    def __init__(self, engine: AsyncEngine, *, timeout: float = DEFAULT_DATABASE_TIMEOUT) -> None:
        """The queries over ``engine``.

        Args:
            engine: the engine (see `create_engine`, which gives its driver timeouts).
            timeout: seconds each whole operation may take, from the pool checkout to
                the last row or the commit; past it the operation fails with
                `StoreUnavailable` and its connection is discarded.
        """
        self.engine = engine
        self.timeout = timeout
        #: Called when a call succeeds after a failure (the hub catches up at once).
        self.on_recovered: Callable[[], None] | None = None
        self._pid = os.getpid()
        self._failed_at: float | None = None
        self._last_error = ""
        self._failures = 0  # how many calls failed as unavailable, ever
        dialect = engine.dialect
        self._postgres = dialect.name == "postgresql"
        # PostgreSQL runs a single statement atomically on its own: reads of one
        # statement skip BEGIN and COMMIT (two round trips of three).
        self._reads = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._postgres else engine
        )
        self._postgres_driver = (
            _Postgres(dialect) if self._postgres and dialect.driver == "asyncpg" else None
        )
        # Another driver: writes run through SQLAlchemy (`_write`).
        self._driver: _DriverWriter | None = self._postgres_driver
        if dialect.name == "sqlite" and dialect.driver == "aiosqlite":
            self._driver = _Sqlite(dialect)
        # PostgreSQL only: every write also sends its notice with NOTIFY on this channel,
        # in the committing transaction (see `notify_on_commit`).
        self.notify_channel: str | None = None

    def notify_on_commit(self, channel: str) -> None:
        """Send every write's notice with ``NOTIFY channel`` in its own transaction.

        Raises:
            ConfmanError: the database is not PostgreSQL (SQLite has no NOTIFY).
        """
        if not self._postgres:
            raise ConfmanError(
                f"NOTIFY needs PostgreSQL; this database is {self.engine.dialect.name} "
                "(SQLite instances share one host and learn of changes by catch-up)"
            )
        self.notify_channel = channel

    @property
    def available(self) -> bool:
        """False since the last failed database call, until one succeeds again."""
        return self._failed_at is None

    def _check(self, *, write: bool) -> None:
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

    def _succeeded(self) -> None:
        if self._failed_at is not None:
            self._failed_at = None
            if self.on_recovered is not None:
                self.on_recovered()

    def _unavailable(self, e: Exception, *, detail: str | None = None) -> StoreUnavailable:
        if detail is None:
            detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        self._last_error = detail
        self._failed_at = time.monotonic()
        self._failures += 1
        return StoreUnavailable(f"database unavailable ({self._last_error})")

    def _deadline(self, timeout: float | None) -> tuple[float, str]:
        seconds = self.timeout if timeout is None else timeout
        return seconds, f"no answer within {seconds:g}s"

    @contextlib.asynccontextmanager
    async def _connect(
        self, *, write: bool = False, timeout: float | None = None
    ) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction (``write``: on SQLite, BEGIN IMMEDIATE).

        The deadline (``timeout``, else the store's) covers the caller's work inside
        the block too: past it the work is cancelled, the connection discarded and
        `StoreUnavailable` raised.
        """
        self._check(write=write)
        seconds, late = self._deadline(timeout)
        connected = False
        try:
            async with asyncio.timeout(seconds), self.engine.connect() as conn:
                connected = True
                async with _discard_if_abandoned(conn):
                    if write:
                        conn = await conn.execution_options(**{WRITE: True})
                    async with conn.begin(), _discard_if_abandoned(conn):
                        yield conn
        except DBAPIError as e:
            self._reraise(e, connected=connected)
        except TimeoutError as e:  # the deadline, or the driver's own timeout
            raise self._unavailable(e, detail=late) from e
        except OSError as e:
            raise self._unavailable(e) from e
        self._succeeded()

    def _reraise(self, e: DBAPIError, *, connected: bool) -> NoReturn:
        """`StoreUnavailable` for a lost connection or one refused before any statement
        ran ("too many connections", "not accepting connections", shutting down); else
        the driver's error as it is."""
        if connected and not _lost_connection(e):
            raise e
        raise self._unavailable(e) from e

    async def _run(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        *,
        write: bool = False,
        engine: AsyncEngine | None = None,
        begin: bool = True,
        retry: bool = True,
        timeout: float | None = None,
    ) -> T:
        """``await work(conn)`` in a transaction (``begin``), or as it manages its own.

        A pooled connection can have died unnoticed (no pre-ping: it costs round trips
        on every checkout; see `create_engine`). Its first statement then fails,
        SQLAlchemy invalidates it and the pool, and the work runs once more on a new
        connection, as long as nothing can have been committed: not once COMMIT was
        sent, and never for work that commits by itself unless it says so (``retry``).

        One deadline (``timeout``, else the store's) bounds all of it, the checkout,
        the connect, the work, the commit and the retry: the driver's timeouts alone
        leave gaps a silent network falls into. Past it: `StoreUnavailable`, and the
        connection in use is discarded, never returned to the pool. A write that timed
        out may still have committed; catch-up tells, and the error says so.
        """
        self._check(write=write)
        seconds, late = self._deadline(timeout)
        try:
            async with asyncio.timeout(seconds):
                return await self._attempts(work, write, engine or self.engine, begin, retry)
        except TimeoutError as e:  # the deadline, or the driver's own timeout
            error = self._unavailable(e, detail=late)
            if write:
                error = StoreUnavailable(
                    f"{error}; the write may or may not have been committed (if it was, "
                    "catch-up applies it here)"
                )
            raise error from e

    async def _attempts(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        write: bool,
        engine: AsyncEngine,
        begin: bool,
        retry: bool,
    ) -> T:
        for attempt in (1, 2):
            committing = connected = False
            try:
                async with engine.connect() as conn:
                    connected = True
                    async with _discard_if_abandoned(conn):
                        if not begin:
                            result = await work(conn)
                        else:
                            if write:
                                conn = await conn.execution_options(**{WRITE: True})
                            async with conn.begin():
                                async with _discard_if_abandoned(conn):
                                    result = await work(conn)
                                committing = True
            except DBAPIError as e:
                if attempt == 1 and retry and e.connection_invalidated and not committing:
                    continue
                if isinstance(e.orig, TimeoutError):
                    raise e.orig from e  # the driver's timeout: the deadline's message
                self._reraise(e, connected=connected)
            except TimeoutError:
                raise
            except OSError as e:
                raise self._unavailable(e) from e
            self._succeeded()
            return result
        raise AssertionError("unreachable")

    async def _read(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, timeout: float | None = None
    ) -> T:
        """One read statement: on PostgreSQL without BEGIN/COMMIT (it is atomic alone)."""
        return await self._run(work, engine=self._reads, begin=not self._postgres, timeout=timeout)

    async def check_schema(self, *, timeout: float | None = None, probe: bool = False) -> None:
        """Raise `SchemaOutOfDate` unless the schema is at head, `StoreUnavailable` if
        the database does not answer within ``timeout`` (else the store's deadline).

        A ``probe`` (readiness, with a deadline shorter than the store's) that fails
        leaves `available` as it was: a database slower than the probe's deadline may
        still answer writes within theirs, which must not fail fast because of it.
        """
        failed_at, last_error, failures = self._failed_at, self._last_error, self._failures
        try:
            await self._read(check_schema_on, timeout=timeout)
        except StoreUnavailable:
            # Undo the probe's own mark only: if another call failed meanwhile, its
            # fail-fast state stands.
            if probe and self._failures == failures + 1:
                self._failed_at, self._last_error = failed_at, last_error
            raise

    async def load_namespace(
        self,
        namespace: str,
        *,
        keys: Iterable[str] | None = None,
        environments: Sequence[str] = (BASE,),
    ) -> list[StoredDocument]:
        """Documents of a namespace (tombstones included) in ``environments`` (the base
        by default), optionally only ``keys``."""
        params: dict[str, Any] = {"namespace": namespace, "environments": list(environments)}
        query = _DOCUMENTS
        if keys is not None:
            query, params["keys"] = _DOCUMENTS_WITH_KEYS, list(keys)

        async def work(conn: AsyncConnection) -> list[StoredDocument]:
            return [_document(r) for r in await conn.execute(query, params)]

        return await self._read(work)

    async def load(
        self, namespace: str, key: str, *, environment: str = BASE
    ) -> StoredDocument | None:
        params = {"environment": environment, "namespace": namespace, "key": key}

        async def work(conn: AsyncConnection) -> StoredDocument | None:
            row = (await conn.execute(_DOCUMENT, params)).first()
            return None if row is None else _document(row)

        return await self._read(work)

    async def load_everywhere(self, namespace: str, key: str) -> list[StoredDocument]:
        """``namespace/key`` in the base and in every environment (tombstones included)."""

        async def work(conn: AsyncConnection) -> list[StoredDocument]:
            params = {"namespace": namespace, "key": key}
            return [_document(r) for r in await conn.execute(_KEY_EVERYWHERE, params)]

        return await self._read(work)

    async def environment_documents(self, environment: str) -> list[StoredDocument]:
        """The live documents of one environment (its overlays), every namespace."""

        async def work(conn: AsyncConnection) -> list[StoredDocument]:
            params = {"environment": environment}
            return [_document(r) for r in await conn.execute(_IN_ENVIRONMENT, params)]

        return await self._read(work)

    async def count_documents(self, namespace: str, environments: Sequence[str]) -> int:
        """Live documents of ``namespace`` in ``environments``."""

        async def work(conn: AsyncConnection) -> int:
            params = {"namespace": namespace, "environments": list(environments)}
            return int(await conn.scalar(_COUNT, params) or 0)

        return await self._read(work)

    async def overlay_counts(self) -> dict[str, int]:
        """Environment to its number of live documents (environments with none absent)."""

        async def work(conn: AsyncConnection) -> dict[str, int]:
            return {env: n for env, n in await conn.execute(_ENVIRONMENT_COUNTS)}

        return await self._read(work)

    async def list_documents(
        self, namespace: str, *, after: str = "", limit: int = 1000, environment: str = BASE
    ) -> list[StoredDocument]:
        """Live documents with ``key > after``, by key, without their data (``data`` is
        None): one page of a listing, however many keys the namespace holds."""
        params = {
            "environment": environment,
            "namespace": namespace,
            "after": after,
            "limit": limit,
        }

        async def work(conn: AsyncConnection) -> list[StoredDocument]:
            return [
                StoredDocument(
                    namespace,
                    r.key,
                    None,
                    r.version,
                    _utc(r.updated_at),
                    r.updated_by,
                    environment,
                )
                for r in await conn.execute(_KEY_PAGE, params)
            ]

        return await self._read(work)

    async def namespaces(self, *, environment: str = BASE) -> dict[str, int]:
        """Namespace to number of live (not deleted) documents in ``environment``."""

        async def work(conn: AsyncConnection) -> dict[str, int]:
            params = {"environment": environment}
            return {ns: n for ns, n in await conn.execute(_NAMESPACES, params)}

        return await self._read(work)

    async def write(self, w: Write) -> tuple[StoredDocument, ChangeRecord]:
        """Commit the document and its change-log row in one transaction.

        Raises:
            ConcurrencyConflict: the stored version is not ``w.expected_version``.
            StoreUnavailable: the database cannot be reached.
        """
        now = datetime.now(UTC)
        values = self._values(w, now)
        driver = self._driver
        try:
            if driver is not None:
                # It commits (or not) by itself: lost midway, it may have committed.
                seq = await self._run(
                    lambda conn: driver.write(conn, w, values), write=True, begin=False, retry=False
                )
            else:
                seq = await self._run(lambda conn: self._write(conn, w, values), write=True)
        except IntegrityError:
            # Only the first-version INSERT can collide: someone created it first.
            current = await self.load(w.namespace, w.key, environment=w.environment)
            raise ConcurrencyConflict(
                w.namespace, w.key, expected=0, current=current.version if current else 0
            ) from None
        return self._written(w, seq, now)

    async def write_all(self, writes: Sequence[Write]) -> list[tuple[StoredDocument, ChangeRecord]]:
        """Commit several writes in one transaction: all of them, or none.

        Raises:
            ConcurrencyConflict: one of them found another version stored (nothing is
                written).
            StoreUnavailable: the database cannot be reached.
        """
        if not writes:
            return []
        now = datetime.now(UTC)
        driver, channel = self._driver, self.notify_channel

        async def work(conn: AsyncConnection) -> list[int]:
            return [await self._write(conn, w, self._values(w, now)) for w in writes]

        try:
            if driver is not None:
                seqs = await self._run(
                    lambda conn: driver.write_all(conn, writes, now, channel), write=True,
                    begin=False, retry=False,
                )  # fmt: skip
            else:
                seqs = await self._run(work, write=True, retry=False)
        except IntegrityError:
            raise ConcurrencyConflict(
                writes[0].namespace, writes[0].key, expected=0, current=-1
            ) from None
        return [self._written(w, seq, now) for w, seq in zip(writes, seqs, strict=True)]

    def _written(self, w: Write, seq: int, now: datetime) -> tuple[StoredDocument, ChangeRecord]:
        version = w.expected_version + 1
        record = ChangeRecord(
            seq, w.namespace, w.key, version, w.action, w.actor, w.reason, w.before, w.after,
            tuple(w.changed), w.origin, now, w.environment or None, w.change_set,
        )  # fmt: skip
        document = StoredDocument(w.namespace, w.key, w.data, version, now, w.actor, w.environment)
        return document, record

    def _values(self, w: Write, now: datetime) -> dict[str, Any]:
        return _values(w, now, self.notify_channel)

    async def _write(self, conn: AsyncConnection, w: Write, values: dict[str, Any]) -> int:
        """The write through SQLAlchemy (drivers other than asyncpg and aiosqlite), in
        the caller's transaction; returns its seq."""
        first = w.expected_version == 0
        seq: int | None
        if self._postgres and values.get("w_channel") is not None:
            seq = await conn.scalar(_PG_CREATE_NOTIFIED if first else _PG_UPDATE_NOTIFIED, values)
        elif self._postgres:
            seq = await conn.scalar(_PG_CREATE_LOGGED if first else _PG_UPDATE_LOGGED, values)
        elif first:
            await conn.execute(_CREATE, values)
            seq = await conn.scalar(_LOG, values)
        elif (await conn.execute(_UPDATE, values)).rowcount == 1:
            seq = await conn.scalar(_LOG, values)
        else:
            seq = None
        if seq is None:
            current = await conn.scalar(_WRITTEN_VERSION, values)
            raise ConcurrencyConflict(
                w.namespace, w.key, expected=w.expected_version, current=current or 0
            )
        return seq

    async def history(
        self,
        namespace: str,
        key: str,
        *,
        limit: int = 50,
        before_version: int | None = None,
        environment: str = BASE,
    ) -> list[ChangeRecord]:
        query = _HISTORY if before_version is None else _HISTORY_BEFORE
        params = {"environment": environment, "namespace": namespace, "key": key, "limit": limit}
        if before_version is not None:
            params["before_version"] = before_version

        async def work(conn: AsyncConnection) -> list[ChangeRecord]:
            return [_record(r._mapping) for r in await conn.execute(query, params)]

        return await self._read(work)

    async def change_at(
        self, namespace: str, key: str, version: int, *, environment: str = BASE
    ) -> LoggedChange:
        params = {
            "environment": environment,
            "namespace": namespace,
            "key": key,
            "version": version,
        }
        found: Mapping[Any, Any] | None
        driver = self._postgres_driver
        if driver is not None:
            found = await self._run(lambda conn: driver.change_at(conn, params), begin=False)
        else:

            async def work(conn: AsyncConnection) -> Mapping[Any, Any] | None:
                row = (await conn.execute(_CHANGE_AT, params)).first()
                return None if row is None else row._mapping

            found = await self._read(work)
        if found is None:
            where = f" in {environment}" if environment else ""
            raise NotFound(f"{namespace}/{key}{where} has no version {version} in the change log")
        return LoggedChange(_record(found), found["data"])

    async def changes_since(
        self,
        after_seq: int,
        *,
        also: Iterable[int] = (),
        limit: int = 1000,
        with_values: bool = False,
    ) -> list[LoggedChange]:
        """Changes with ``seq > after_seq``, plus the listed older seqs that now exist.

        ``also`` carries the gaps a reader saw: ids handed out to transactions that had
        not committed yet when it last looked (see `confman.hub` on catch-up). The
        records' ``before`` and ``after`` (masked copies, for people) are read only
        ``with_values``; otherwise they are None (catch-up needs ``data`` only).
        """
        older = list(also)
        query = _CHANGES_SINCE[with_values, bool(older)]
        params: dict[str, Any] = {"after_seq": after_seq, "limit": limit}
        if older:
            params["also"] = older

        async def work(conn: AsyncConnection) -> list[LoggedChange]:
            rows = [r._mapping for r in await conn.execute(query, params)]  # built per access
            return [LoggedChange(_record(m, values=with_values), m["data"]) for m in rows]

        return await self._read(work)

    async def change_records(
        self,
        after_seq: int,
        *,
        namespaces: Iterable[str] | None = None,
        environments: Iterable[str] | None = None,
        limit: int = 500,
        with_values: bool = False,
    ) -> list[ChangeRecord]:
        """One page of the change log: at most ``limit`` records with ``seq > after_seq``.

        Oldest first, secrets masked. Read the next page from the last record's seq; a
        page shorter than ``limit`` is the last. The database filters and limits, so the
        records and memory of one call never exceed one page.

        Args:
            after_seq: return only records after this seq.
            namespaces: only these namespaces (None: every namespace; empty: none).
            environments: only rows of these environments (``''``: the base; None:
                every one; empty: none).
            limit: the page size, at least 1.
            with_values: read ``before`` and ``after`` too (None otherwise, cheaper).
        """
        wanted = None if namespaces is None else list(dict.fromkeys(namespaces))
        where = None if environments is None else list(dict.fromkeys(environments))
        if wanted == [] or where == [] or limit < 1:
            return []
        query = _RECORD_PAGES[with_values, wanted is not None, where is not None]
        params: dict[str, Any] = {"after_seq": after_seq, "limit": limit}
        if wanted is not None:
            params["namespaces"] = wanted
        if where is not None:
            params["environments"] = where

        async def work(conn: AsyncConnection) -> list[ChangeRecord]:
            result = await conn.execute(query, params)
            return [_record(r._mapping, values=with_values) for r in result]

        return await self._read(work)

    async def change_set_changes(self, change_set: str) -> list[LoggedChange]:
        """Every change-log row of one change set, in seq order (with ``data``)."""

        async def work(conn: AsyncConnection) -> list[LoggedChange]:
            rows = [r._mapping for r in await conn.execute(_SET_ROWS, {"change_set": change_set})]
            return [LoggedChange(_record(m), m["data"]) for m in rows]

        return await self._read(work)

    async def seq_bounds(self) -> tuple[int, int] | None:
        """The oldest and newest seq the change log holds; None when it is empty."""

        async def work(conn: AsyncConnection) -> tuple[int, int] | None:
            low, high = (await conn.execute(_SEQ_BOUNDS)).one()
            return None if high is None else (int(low), int(high))

        return await self._read(work)

    async def max_seq(self) -> int:
        async def work(conn: AsyncConnection) -> int:
            return int(await conn.scalar(_MAX_SEQ) or 0)

        return await self._read(work)

    async def seqs_between(self, low: int, high: int) -> list[int]:
        async def work(conn: AsyncConnection) -> list[int]:
            return list(await conn.scalars(_SEQS_BETWEEN, {"low": low, "high": high}))

        return await self._read(work)

    async def all_documents(self, *, page: int = 500) -> AsyncIterator[StoredDocument]:
        """Every document (tombstones included), by namespace and key.

        Read ``page`` rows at a time, each read within the store's deadline: one
        deadline around the whole stream would also run while the caller works between
        rows (and cancel the caller there), and a stream has no end it can promise.
        """
        params: dict[str, Any] = {
            "after_environment": "",
            "after_namespace": "",
            "after_key": "",
            "limit": page,
        }

        async def work(conn: AsyncConnection) -> list[StoredDocument]:
            return [_document(r) for r in await conn.execute(_ALL_DOCUMENTS, params)]

        while True:
            found = await self._read(work)
            for document in found:
                yield document
            if len(found) < page:
                return
            last = found[-1]
            params["after_environment"] = last.environment
            params["after_namespace"], params["after_key"] = last.namespace, last.key

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

        async def work(conn: AsyncConnection) -> int:
            return int(await conn.scalar(select(f.token).where(f.cluster == cluster)) or 0)

        return await self._read(work)

    async def fencing_holder(self, cluster: str) -> tuple[int, str]:
        """The highest fencing token recorded for ``cluster`` and who recorded it
        (``(0, "")``: none yet; holder ``""``: released by its leader)."""
        f = config_fencing.c

        async def work(conn: AsyncConnection) -> tuple[int, str]:
            row = (
                await conn.execute(select(f.token, f.holder).where(f.cluster == cluster))
            ).first()
            return (0, "") if row is None else (int(row[0]), str(row[1]))

        return await self._read(work)

    async def release_fencing_token(self, cluster: str, token: int) -> None:
        """A leader leaving cleanly: mark its ``token`` released (holder ``""``), so the
        next leader need not wait for it to stop."""
        f = config_fencing.c

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                update(config_fencing)
                .where(f.cluster == cluster, f.token == token)
                .values(holder="", updated_at=datetime.now(UTC))
            )

        await self._run(work, write=True)

    async def claim_fencing_token(self, cluster: str, token: int, holder: str) -> int:
        """Record a new leader's ``token`` if it is above every token recorded for
        ``cluster``; returns the highest recorded before (0: none), so a caller whose
        token is not above it knows the token was used already."""
        f = config_fencing.c

        async def work(conn: AsyncConnection) -> int:
            query = select(f.token).where(f.cluster == cluster).with_for_update()
            current = await conn.scalar(query)
            values = {"token": token, "holder": holder, "updated_at": datetime.now(UTC)}
            if current is None:
                await conn.execute(insert(config_fencing).values(cluster=cluster, **values))
            elif current < token:
                await conn.execute(
                    update(config_fencing).where(f.cluster == cluster).values(**values)
                )
            return int(current or 0)

        try:
            return await self._run(work, write=True)
        except IntegrityError:  # another leader inserted the first row at this moment
            return await self._run(work, write=True)

    async def hold_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew the database lease ``name`` (a `config_fencing` row) for
        ``holder``: returns its fencing token, or ``None`` while another holder's lease
        runs (it was taken or renewed less than ``ttl`` seconds ago). Taking it over
        raises the token, so the previous holder's fenced work is then refused."""
        f = config_fencing.c

        async def work(conn: AsyncConnection) -> int | None:
            now = datetime.now(UTC)
            query = select(f.token, f.holder, f.updated_at).where(f.cluster == name)
            row = (await conn.execute(query.with_for_update())).first()
            if row is None:
                values = {"cluster": name, "token": 1, "holder": holder, "updated_at": now}
                await conn.execute(insert(config_fencing).values(**values))
                return 1
            token, current, renewed = row
            if current != holder:
                if _utc(renewed) + timedelta(seconds=ttl) > now:
                    return None
                token += 1
            await conn.execute(
                update(config_fencing)
                .where(f.cluster == name)
                .values(token=token, holder=holder, updated_at=now)
            )
            return int(token)

        try:
            return await self._run(work, write=True)
        except IntegrityError:  # another holder inserted the row at this moment
            return None

    async def release_lease(self, name: str, holder: str) -> None:
        """End ``holder``'s lease ``name`` now (`hold_lease`): anyone may take it next.

        The row and its token stay, so the next holder's token is still higher and the
        released holder's late work is still refused.
        """
        f = config_fencing.c
        expired = datetime(1970, 1, 1, tzinfo=UTC)

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                update(config_fencing)
                .where(f.cluster == name, f.holder == holder)
                .values(updated_at=expired)
            )

        await self._run(work, write=True)

    def _expired_changes(
        self, keep_versions: int | None, older_than: datetime | None
    ) -> ColumnElement[bool] | None:
        """Retention: rows older than ``older_than`` or not among the newest
        ``keep_versions`` of their document; never a document's newest version."""
        c, d = config_changes.c, config_documents.c
        newest = (
            select(d.version)
            .where(d.environment == c.environment, d.namespace == c.namespace, d.key == c.key)
            .scalar_subquery()
        )
        expired = []
        if keep_versions is not None:
            expired.append(c.version <= newest - max(1, keep_versions))
        if older_than is not None:
            expired.append(c.committed_at < older_than)
        if not expired:
            return None
        return and_(c.version < newest, or_(*expired))

    async def _prune_batch(
        self, conn: AsyncConnection, expired: ColumnElement[bool], after: int
    ) -> tuple[int, int | None]:
        """Delete the first `PRUNE_BATCH` expired rows above seq ``after``; returns how
        many went and the highest seq looked at (``None``: nothing left to prune).

        In seq order, so every expired row up to that seq is gone and the next batch
        starts above it; a range delete needs no list of ids as bind parameters.
        """
        c = config_changes.c
        first = select(c.seq).where(expired, c.seq > after).order_by(c.seq).limit(PRUNE_BATCH)
        high = await conn.scalar(select(func.max(first.subquery().c.seq)))
        if high is None:
            return 0, None
        doomed = delete(config_changes).where(expired, c.seq > after, c.seq <= high)
        return int((await conn.execute(doomed)).rowcount or 0), int(high)

    async def prune_expired(self, *, keep_versions: int | None, older_than: datetime | None) -> int:
        """Change-log retention now, unfenced (an operator's one-off prune); returns how
        many rows were deleted. What goes: as in `prune_changes`."""
        expired = self._expired_changes(keep_versions, older_than)
        if expired is None:
            return 0
        total, after = 0, 0
        while True:
            batch = functools.partial(self._prune_batch, expired=expired, after=after)
            deleted, high = await self._run(batch, write=True)
            total += deleted
            if high is None:
                return total
            after = high

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
        stays. Rows go in batches of `PRUNE_BATCH`, one transaction each, so a long
        log is pruned within the database deadline, batch by batch. Fenced: each batch
        is refused with `FencingTokenRejected` (nothing more deleted) once a leader with
        a higher ``token`` has acted on this database.
        """
        expired = self._expired_changes(keep_versions, older_than)
        total, after = 0, 0
        while True:
            for attempt in range(2):
                try:
                    async with self._connect(write=True) as conn:
                        await self._fence(conn, cluster, token, holder)
                        if expired is None:
                            return 0
                        deleted, high = await self._prune_batch(conn, expired, after)
                    break
                except IntegrityError:  # two leaders inserted the first fencing row at once
                    if attempt:
                        raise
            total += deleted
            if high is None:
                return total
            after = high
