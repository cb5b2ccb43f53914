"""The live stream: every committed change as a server-sent event, resumable by seq."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from reactivex.disposable import CompositeDisposable

from confman import ChangeRecord, ConfigChange, ConfigurationManager

from . import models
from .auth import CurrentPrincipal, hub_of, manager_for, served
from .tokens import ApiTokenManager

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["events"])

# A client this far behind is cut off; it reconnects with Last-Event-ID and reads the rest
# from the change log, so a slow reader costs the server bounded memory and loses nothing.
MAX_BUFFERED = 10_000
_BACKLOG_PAGE = 500
_SEQ = re.compile(r"[0-9]{1,18}")  # ASCII digits only; fits a BIGINT


def _from_change(change: ConfigChange[Any]) -> models.ChangeEvent:
    return models.ChangeEvent(
        seq=change.seq,
        namespace=change.namespace,
        key=change.key,
        version=change.version,
        action=str(change.action),
        actor=change.actor,
        reason=change.reason,
        origin=change.origin,
        at=change.at,
        changed=list(change.stored_changed),  # as the change log has it, for resumes
    )


def _from_record(record: ChangeRecord) -> models.ChangeEvent:
    return models.ChangeEvent(
        **models.record_fields(record), namespace=record.namespace, key=record.key
    )


def _event(change: models.ChangeEvent) -> ServerSentEvent:
    return ServerSentEvent(data=change, event="change", id=str(change.seq))


def _managers(
    request: Request,
    who: CurrentPrincipal,
    namespace: Annotated[list[str] | None, Query(description="only these namespaces")] = None,
) -> list[ConfigurationManager[Any]]:
    # A dependency, so that a refused namespace is a 403/404 before the stream starts.
    if namespace:
        return [manager_for(request, who, ns) for ns in dict.fromkeys(namespace)]
    return served(request, who)


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={200: {"model": models.ChangeEvent, "description": "one event per change"}},
)
async def change_events(
    request: Request,
    who: CurrentPrincipal,
    managers: Annotated[list[ConfigurationManager[Any]], Depends(_managers)],
    last_event_id: Annotated[
        str | None, Header(description="resume after this seq (sent by EventSource)")
    ] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Changes as they are applied here, from any process; resumable with Last-Event-ID."""
    after = int(last_event_id) if last_event_id and _SEQ.fullmatch(last_event_id) else None
    # Subscribe before reading the backlog so nothing falls between the two; the seqs sent
    # from the backlog are skipped when the live feed delivers them again.
    queue: asyncio.Queue[models.ChangeEvent | None] = asyncio.Queue()

    overflowed = False

    def push(change: ConfigChange[Any]) -> None:
        nonlocal overflowed
        if overflowed:
            return
        if queue.qsize() >= MAX_BUFFERED:
            overflowed = True
            queue.put_nowait(None)  # end the stream; the client resumes from its last id
        else:
            queue.put_nowait(_from_change(change))

    def token_changed(change: ConfigChange[Any]) -> None:
        # Revoked or regranted: end the stream; the client's reconnect is checked anew.
        if change.key == who.name:
            queue.put_nowait(None)

    tokens = hub_of(request).manager(ApiTokenManager)
    subscriptions = CompositeDisposable(
        [tokens.changes.subscribe(token_changed), *(m.changes.subscribe(push) for m in managers)]
    )
    try:
        sent: set[int] = set()
        applied = hub_of(request).applied_seq  # anything up to here never comes live again
        if after is None:
            # Tell a new client where it stands, so that if this connection drops before
            # any change, it resumes from here (every change up to this seq is applied).
            yield ServerSentEvent(data={"seq": applied}, event="ready", id=str(applied))
        else:
            wanted = [m.namespace for m in managers]
            cursor = after
            while True:
                page = await hub_of(request).changes_since(
                    cursor, namespaces=wanted, limit=_BACKLOG_PAGE, with_values=False
                )
                for record in page:
                    if record.seq > applied:  # it may still arrive live: skip it then
                        sent.add(record.seq)
                    yield _event(_from_record(record))
                if len(page) < _BACKLOG_PAGE:
                    break
                cursor = page[-1].seq
        while True:
            event = await queue.get()
            if event is None:
                return
            if event.seq in sent:
                sent.discard(event.seq)
                continue
            if after is not None and event.seq <= after:
                # This instance is applying what the client already had (it resumed here
                # after reading from an instance further ahead).
                continue
            yield _event(event)
    finally:
        subscriptions.dispose()
