"""The live stream: every committed change as a server-sent event, resumable by seq.

Each stream is bounded (`StreamLimits`, docs/api.md): a client too far behind, or one whose
send does not finish in time, is cut off and resumes from the change log with
``Last-Event-ID``. A resume point the log cannot serve (ahead of it, or pruned) is a 409.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from reactivex.disposable import CompositeDisposable

from confman import ChangeRecord, ConfigChange, ConfigurationManager

from . import models
from .auth import CurrentPrincipal, hub_of, manager_for, served
from .problems import PROBLEM_JSON, ApiProblem
from .stream import KEEPALIVE, BoundedEventStream, Outbox, StreamLimits, frame
from .tokens import ApiTokenManager

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["events"])

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


def _event(change: models.ChangeEvent) -> bytes:
    return frame(change.model_dump_json(), event="change", id=str(change.seq))


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
) -> BoundedEventStream:
    """Changes as they are applied here, from any process; resumable with Last-Event-ID."""
    after = int(last_event_id) if last_event_id and _SEQ.fullmatch(last_event_id) else None
    if after is not None:
        await _check_resumable(request, after)
    limits = _limits(request)
    hub = hub_of(request)
    outbox = Outbox(limits)
    wanted = [m.namespace for m in managers]

    def push(change: ConfigChange[Any]) -> None:
        if outbox.ended is None:
            outbox.put(change.seq, _event(_from_change(change)))

    def token_changed(change: ConfigChange[Any]) -> None:
        # Revoked or regranted: end the stream; the client's reconnect is checked anew.
        if change.key == who.name:
            outbox.end("token changed")

    async def pump(send: Callable[[bytes], Awaitable[None]]) -> None:
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
            if after is None:
                # Tell a new client where it stands, so that if this connection drops
                # before any change, it resumes from here (every change up to it applied).
                await send(frame(json.dumps({"seq": applied}), event="ready", id=str(applied)))
            else:
                cursor = after
                while True:  # one page in memory at a time, filtered by the database
                    page = await hub.changes_since(
                        cursor, namespaces=wanted, limit=limits.replay_page, with_values=False
                    )
                    for record in page:
                        if record.seq > applied:  # it may still arrive live: skip it then
                            sent.add(record.seq)
                        await send(_event(_from_record(record)))
                    if len(page) < limits.replay_page:
                        break
                    cursor = page[-1].seq
            while True:
                item = await outbox.get(limits.ping_interval)
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
                await send(chunk)
        finally:
            subscriptions.dispose()

    return BoundedEventStream(pump, outbox, limits)
