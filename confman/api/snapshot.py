"""``GET /api/v1/snapshot``: in one answer, every document a token may read in one
environment, and the seq to resume the event stream from.

A client starts from it (one request, however many documents) and then follows
``/api/v1/events`` with ``Last-Event-ID: seq``, needing no further read per change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from confman import ConfigHub, ConfigurationManager
from confman.limits import DEFAULT_MAX_SNAPSHOT_DOCUMENTS

from . import models, views
from .auth import CurrentPrincipal, hub_of, manager_for, served
from .problems import ApiProblem
from .scope import EnvironmentParam, environment_for, holds, label

__all__ = ["router"]

_PAGE = 1000  # keys listed per database query

router = APIRouter(prefix="/api/v1", tags=["documents"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": models.Problem, "description": text}
    for status, text in {
        401: "no or unknown token",
        403: "the token may not read a namespace or the environment",
        404: "no such namespace or environment",
        422: "more documents than the server answers at once (name fewer namespaces)",
        503: "the database is unreachable",
    }.items()
}

NamespacesParam = Annotated[
    list[str] | None,
    Query(description="only these namespaces (repeatable); default: every one the token reads"),
]


def _max_documents(request: Request) -> int:
    found: int = getattr(request.app.state, "max_snapshot_documents", None) or (
        DEFAULT_MAX_SNAPSHOT_DOCUMENTS
    )
    return found


async def _keys_of(
    hub: ConfigHub, manager: ConfigurationManager[Any], environment: str | None, most: int
) -> list[str]:
    """The keys ``environment`` sees in ``manager``'s namespace, by key; at most
    ``most + 1`` of them, so that a caller tells "too many" without listing them all."""
    found: list[str] = []
    after: str | None = None
    while len(found) <= most:
        page = await views.listing(
            hub, manager, environment, after=after, limit=min(_PAGE, most + 1 - len(found))
        )
        found.extend(d.key for d in page.documents)
        if page.next_after is None:
            break
        after = page.next_after
    if holds(hub, environment):
        # What memory serves counts too: an item this server holds that the listing,
        # read later, no longer shows was deleted after the seq (the stream brings it).
        found = sorted(set(found).union(manager.keys()))
    return found[: most + 1]


@router.get("/snapshot", responses=_PROBLEMS)
async def snapshot(
    request: Request,
    who: CurrentPrincipal,
    namespace: NamespacesParam = None,
    environment: EnvironmentParam = None,
) -> models.Snapshot:
    """Every document the token may read in the environment, as ``GET .../documents/
    {key}`` answers each (effective value, versions, provenance; secrets masked, in clear
    for a service token), and ``seq``, the change-log seq this answer includes.

    ``seq`` is the server's applied seq, read before any document: every change up to it
    is by then in this server's memory (and committed in the database), so each value
    read afterwards is at least that new, and a stream resumed with ``Last-Event-ID:
    seq`` brings every change after it. A change applied while the answer is built may
    show in a value and come again on the stream, at a version the client already holds
    (versions only grow per key, so it is skipped). Read after the values, ``seq`` could
    pass a change that landed between the two, which no resume would then bring.

    An item deleted or hidden while the answer is built is left out (its change comes on
    the stream). More documents than the server's bound is a 422 naming it.
    """
    if namespace:
        managers = [manager_for(request, who, ns) for ns in dict.fromkeys(namespace)]
    else:
        managers = served(request, who)
    target = await environment_for(request, who, environment)
    hub = hub_of(request)
    seq = hub.applied_seq  # before any value: see the docstring
    most = _max_documents(request)
    wanted: list[tuple[ConfigurationManager[Any], str]] = []
    for manager in sorted(managers, key=lambda m: m.namespace):
        keys = await _keys_of(hub, manager, target, most - len(wanted))
        wanted.extend((manager, key) for key in keys)
        if len(wanted) > most:
            raise ApiProblem(
                422,
                f"more than {most:,} documents in {label(target)} (the snapshot limit); "
                "name fewer namespaces with ?namespace=",
                errors=[
                    {
                        "path": "namespace",
                        "in": "query",
                        "message": f"selects more than {most:,} documents",
                    }
                ],
                max_documents=most,
            )
    reveal = who.role.reveals_secrets
    documents = []
    for manager, key in wanted:
        try:
            documents.append(await views.document(hub, manager, key, target, reveal=reveal))
        except ApiProblem as gone:
            if gone.status != 404:
                raise
    return models.Snapshot(environment=target, seq=seq, documents=documents)
