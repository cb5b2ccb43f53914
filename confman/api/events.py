"""The live stream: every committed change as a server-sent event, resumable by seq.

``?environment=E`` streams what concerns E: the base's changes and E's own documents'
(in a namespace that does not inherit, E's alone). This server's own environment comes
from what it applies, as it applies it; any other is read from the change log as far as
this server has applied it (``applied_seq``: catch-up reads every environment's rows),
so no change is skipped or sent twice, at most a catch-up interval late.

Each event carries the stored document its change wrote, as the token may read it
(`confman.api.event_data`): a remote hub applies it without another request.

Each stream is bounded (`StreamLimits`, docs/api.md): a client too far behind, or one whose
send does not finish in time, is cut off and resumes from the change log with
``Last-Event-ID``. A resume point the log cannot serve (ahead of it, or pruned) is a 409.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from reactivex.disposable import CompositeDisposable

from confman import ChangeRecord, ConfigChange, ConfigurationManager

from . import models
from .auth import CurrentPrincipal, hub_of, manager_for, served
from .event_data import EventData
from .problems import PROBLEM_JSON, ApiProblem
from .scope import EnvironmentParam, environment_for, holds
from .stream import KEEPALIVE, BoundedEventStream, Outbox, StreamLimits, frame
from .tokens import ApiTokenManager

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["events"])

_SEQ = re.compile(r"[0-9]{1,18}")  # ASCII digits only; fits a BIGINT
_TAIL_POLL = 0.2  # seconds between looks at applied_seq (memory only) for another environment


def concerns(manager: ConfigurationManager[Any], changed: str | None, target: str | None) -> bool:
    """Whether a change to ``changed``'s document (None: the base) concerns ``target``."""
    return changed == target or (manager.inherits and changed is None)


@functools.lru_cache(maxsize=256)  # every stream marks the same seqs
def _applied(seq: int) -> bytes:
    """A resume point: every change up to ``seq`` that concerns the stream was sent
    before this event (or a newer version of its document was). Events come in the
    order this server applied them, which is not always seq order, so a change's own
    seq is no safe point to resume from; this is."""
    return frame(json.dumps({"seq": seq}), event="applied", id=str(seq))


def _limits(request: Request) -> StreamLimits:
    limits: StreamLimits | None = getattr(request.app.state, "stream_limits", None)
    return limits or StreamLimits()


def _managers(
    request: Request,
    who: CurrentPrincipal,
    namespace: Annotated[list[str] | None, Query(description="only these namespaces")] = None,
) -> list[ConfigurationManager[Any]]:
    # A dependency, so that a refused namespace is a 403/404 before the stream starts.
    if namespace:
        return [manager_for(request, who, ns) for ns in dict.fromkeys(namespace)]
    return served(request, who)


async def _check_resumable(request: Request, after: int) -> None:
    """409 when the change log cannot give a client what came after ``after``."""
    bounds = await hub_of(request).change_log_bounds()
    oldest, newest = bounds if bounds is not None else (0, 0)
    if after > newest:
        raise ApiProblem(
            409,
            f"Last-Event-ID {after} is ahead of this server's change log (newest seq "
            f"{newest}): it comes from another or a restored database; reload, then "
            "reconnect without Last-Event-ID",
            newest_seq=newest,
        )
    if bounds is not None and after < oldest - 1:
        # Pruned (a seq lost to a rolled-back transaction looks the same: the client
        # reloads once, which is always safe).
        raise ApiProblem(
            409,
            f"Last-Event-ID {after} is older than this server's change log keeps (oldest "
            f"seq {oldest}): changes since were pruned; reload, then reconnect without "
            "Last-Event-ID",
            newest_seq=newest,
            oldest_seq=oldest,
        )


@router.get(
    "/events",
    response_class=BoundedEventStream,
    status_code=200,
    responses={
        200: {"model": models.ChangeEvent, "description": "one event per change"},
        409: {
            "description": "Last-Event-ID ahead of the change log, or older than it keeps",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
    },
)
async def change_events(
    request: Request,
    who: CurrentPrincipal,
    managers: Annotated[list[ConfigurationManager[Any]], Depends(_managers)],
    last_event_id: Annotated[
        str | None, Header(description="resume after this seq (sent by EventSource)")
    ] = None,
    environment: EnvironmentParam = None,
) -> BoundedEventStream:
    """Changes that concern the environment (the base's and its own), from any process;
    every event names whose document changed; resumable with Last-Event-ID."""
    target = await environment_for(request, who, environment)
    after = int(last_event_id) if last_event_id and _SEQ.fullmatch(last_event_id) else None
    if after is not None:
        await _check_resumable(request, after)
    limits = _limits(request)
    hub = hub_of(request)
    data: EventData = request.app.state.event_data
    reveal = who.role.reveals_secrets
    outbox = Outbox(limits)
    wanted = [m.namespace for m in managers]
    by_namespace = {m.namespace: m for m in managers}
    scopes = [None] if target is None else [None, target]

    def wanted_record(record: ChangeRecord) -> bool:
        manager = by_namespace.get(record.namespace)
        return manager is not None and concerns(manager, record.environment or None, target)

    async def records(cursor: int, high: int | None = None) -> AsyncIterator[ChangeRecord]:
        """What concerns the stream after ``cursor`` (up to ``high``), a page at a time."""
        while True:  # one page in memory at a time, filtered by the database
            page = await hub.changes_since(
                cursor,
                namespaces=wanted,
                environments=scopes,
                limit=limits.replay_page,
                with_values=False,
            )
            for record in page:
                if high is not None and record.seq > high:
                    return
                if wanted_record(record):
                    yield record
            if len(page) < limits.replay_page:
                return
            cursor = page[-1].seq

    def queued(record: ChangeRecord) -> bytes:
        return data.queued(models.from_record(record))

    def push(change: ConfigChange[Any]) -> None:
        manager = by_namespace.get(change.namespace)
        if manager is None or not concerns(manager, change.environment or None, target):
            return
        if outbox.ended is None:
            outbox.put(change.seq, data.live(change))

    def token_changed(change: ConfigChange[Any]) -> None:
        # Revoked or regranted: end the stream; the client's reconnect is checked anew.
        if change.key == who.name:
            outbox.end("token changed")

    async def tail(send: Callable[[bytes], Awaitable[None]]) -> None:
        """Another environment's stream: the change log up to ``applied_seq``."""
        cursor = hub.applied_seq if after is None else after
        if after is None:
            await send(frame(json.dumps({"seq": cursor}), event="ready", id=str(cursor)))
        quiet_since = time.monotonic()
        while True:
            high = hub.applied_seq
            if high > cursor:
                async for record in records(cursor, high):
                    await send(await data.complete(record.seq, queued(record), reveal=reveal))
                cursor = high
                await send(_applied(cursor))
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= limits.ping_interval:
                await send(KEEPALIVE)
                quiet_since = time.monotonic()
            await anyio.sleep(min(_TAIL_POLL, limits.ping_interval))

    async def pump(send: Callable[[bytes], Awaitable[None]]) -> None:
        if not holds(hub, target):
            subscription = hub.manager(ApiTokenManager).changes.subscribe(token_changed)
            try:
                await tail(send)
            finally:
                subscription.dispose()
            return
        # Subscribe before reading the backlog so nothing falls between the two; the seqs
        # sent from the backlog are skipped when the live feed delivers them again.
        subscriptions = CompositeDisposable(
            [
                hub.manager(ApiTokenManager).changes.subscribe(token_changed),
                *(m.changes.subscribe(push) for m in managers),
            ]
        )
        try:
            sent: set[int] = set()
            applied = hub.applied_seq  # anything up to here never comes live again
            marked = applied  # the last resume point sent
            if after is None:
                # Tell a new client where it stands, so that if this connection drops
                # before any change, it resumes from here (every change up to it applied).
                await send(frame(json.dumps({"seq": applied}), event="ready", id=str(applied)))
            else:
                async for record in records(after):
                    if record.seq > applied:  # it may still arrive live: skip it then
                        sent.add(record.seq)
                    await send(await data.complete(record.seq, queued(record), reveal=reveal))
                marked = max(after, applied)
                await send(_applied(marked))
            while True:
                item = await outbox.get()
                if item is None:
                    await send(KEEPALIVE)
                    continue
                seq, chunk = item
                if seq in sent:
                    sent.discard(seq)
                    continue
                if after is not None and seq <= after:
                    # This instance is applying what the client already had (it resumed
                    # here after reading from an instance further ahead).
                    continue
                chunk = await data.complete(seq, chunk, reveal=reveal)
                if not len(outbox):
                    # The end of a burst: tell the client how far it may resume from, in
                    # the same write. Every change up to applied_seq was emitted, so
                    # queued here before, and the outbox is empty: all of it is sent.
                    now_applied = hub.applied_seq
                    if now_applied > marked:
                        marked = now_applied
                        chunk += _applied(marked)
                await send(chunk)
        finally:
            subscriptions.dispose()

    return BoundedEventStream(pump, outbox, limits)
