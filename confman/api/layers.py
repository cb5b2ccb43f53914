"""Stored documents as they are, for remote hubs (`confman.remote`): the other side of
the HTTP backend.

A remote hub's managers are the same managers as in direct mode: they load stored
documents (the base's, and their environment's overlays over it), apply their own env
files and variables on top, and write back a stored document they built. These routes
carry exactly that, so that nothing about layering or validation is done twice or
differently: ``GET /api/v1/layers`` is the start-up read (one answer, and the seq to
follow the event stream from), ``PUT /api/v1/layers/{namespace}/{key}`` one
version-checked write, validated on the server as every write is.

Secrets travel masked, or in clear for a service token, never encrypted: the keys stay
with the server.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from confman import Action, ConfigHub, ConfigurationManager, SecretsUnavailable
from confman.change import BASE
from confman.secrets import restore_masked, to_wire
from confman.store import StoredDocument

from . import models
from .auth import CurrentPrincipal, hub_of, manager_for, served
from .documents import _check_key, _version_from
from .params import well_formed
from .problems import ApiProblem
from .scope import EnvironmentParam, environment_for, label
from .snapshot import _max_documents
from .tokens import Role

__all__ = ["router", "stored_form_for"]

router = APIRouter(prefix="/api/v1", tags=["layers"])
_WELL_FORMED = [Depends(well_formed)]  # not on GET /layers: ?namespace= repeats

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": models.Problem, "description": text}
    for status, text in {
        401: "no or unknown token",
        403: "the token may not read (or write) a namespace or the environment",
        404: "no such namespace, environment, item or version",
        422: "more documents than the server answers at once (name fewer namespaces)",
        503: "the database is unreachable",
    }.items()
}

Namespaces = Annotated[
    list[str] | None,
    Query(description="only these namespaces (repeatable); default: every one the token reads"),
]
Key = Annotated[str, Path(description="document key ('default' for a singleton)")]


def scopes(manager: ConfigurationManager[Any], environment: str | None) -> list[str]:
    """The stored documents a hub in ``environment`` loads for ``manager``'s namespace:
    the base and the environment's overlays, or only the environment's own documents
    where the namespace does not inherit."""
    if not manager.inherits:
        return [BASE if environment is None else environment]
    return [BASE] if environment is None else [BASE, environment]


def stored_form_for(hub: ConfigHub, data: dict[str, Any] | None, *, reveal: bool) -> Any:
    """A stored document as a reader receives it (`confman.secrets.to_wire`): each
    secret ``{"$secret": ...}``, in clear when ``reveal``, else masked."""
    if data is None:
        return None
    try:
        return to_wire(data, hub.keyring, reveal=reveal)
    except (ValueError, SecretsUnavailable) as e:
        raise ApiProblem(503, f"the server cannot read a stored secret: {e}") from None


def _layer(hub: ConfigHub, doc: StoredDocument, *, reveal: bool) -> models.StoredLayer:
    return models.StoredLayer(
        namespace=doc.namespace,
        key=doc.key,
        environment=doc.environment or None,
        version=doc.version,
        data=stored_form_for(hub, doc.data, reveal=reveal),
        updated_at=doc.updated_at,
        updated_by=doc.updated_by,
    )


@router.get("/layers", responses=_PROBLEMS)
async def read_layers(
    request: Request,
    who: CurrentPrincipal,
    namespace: Namespaces = None,
    key: Annotated[str | None, Query(description="only this key (with one namespace)")] = None,
    environment: EnvironmentParam = None,
) -> models.Layers:
    """Every stored document a hub in the environment loads, for the namespaces the token
    reads (tombstones included: their versions matter to the next write), and ``seq``:
    resume ``/api/v1/events`` from it with ``Last-Event-ID``.

    ``seq`` is this server's applied seq, read before any document (as for
    ``/api/v1/snapshot``): a change committed meanwhile may show here and come again on
    the stream, at a version the client already holds, which it skips.
    """
    if namespace:
        managers = [manager_for(request, who, ns) for ns in dict.fromkeys(namespace)]
    else:
        managers = served(request, who)
    if key is not None and len(managers) != 1:
        raise ApiProblem(
            422,
            "?key= needs exactly one ?namespace=",
            errors=[{"path": "key", "in": "query", "message": "needs one namespace"}],
        )
    target = await environment_for(request, who, environment)
    hub = hub_of(request)
    seq = hub.applied_seq  # before any document: see the docstring
    most = _max_documents(request)
    reveal = who.role.reveals_secrets
    found: list[models.StoredLayer] = []
    for manager in sorted(managers, key=lambda m: m.namespace):
        keys = None
        if key is not None:
            _check_key(manager, key)
            keys = [key]
        rows = await hub.store.load_namespace(
            manager.namespace, keys=keys, environments=scopes(manager, target)
        )
        if len(found) + len(rows) > most:
            raise ApiProblem(
                422,
                f"more than {most:,} stored documents in {label(target)} (the snapshot "
                "limit); name fewer namespaces with ?namespace=",
                errors=[
                    {"path": "namespace", "in": "query", "message": f"selects more than {most:,}"}
                ],
                max_documents=most,
            )
        rows.sort(key=lambda d: (d.environment != BASE, d.key))
        found.extend(_layer(hub, d, reveal=reveal) for d in rows)
    return models.Layers(environment=target, seq=seq, documents=found)


@router.get(
    "/layers/{namespace}/{key}/versions/{version}",
    responses=_PROBLEMS,
    dependencies=_WELL_FORMED,
)
async def read_layer_version(
    request: Request,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    version: Annotated[int, Path(ge=1, le=models.MAX_VERSION)],
    environment: EnvironmentParam = None,
) -> models.StoredLayer:
    """One version of a stored document, from the change log (what a rollback restores)."""
    manager = manager_for(request, who, namespace)
    target = await environment_for(request, who, environment)
    _check_key(manager, key)
    hub = hub_of(request)
    where = scopes(manager, target)[-1]
    logged = await hub.store.change_at(manager.namespace, key, version, environment=where)
    record = logged.record
    return models.StoredLayer(
        namespace=manager.namespace,
        key=key,
        environment=where or None,
        version=record.version,
        data=stored_form_for(hub, logged.data, reveal=who.role.reveals_secrets),
        updated_at=record.committed_at,
        updated_by=record.actor,
    )


@router.put(
    "/layers/{namespace}/{key}",
    dependencies=_WELL_FORMED,
    responses={
        **_PROBLEMS,
        412: {"model": models.Problem, "description": "the stored version is not If-Match"},
        422: {"model": models.Problem, "description": "the document is refused (errors[].path)"},
        428: {"model": models.Problem, "description": "If-Match is required"},
    },
)
async def write_layer(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    body: models.LayerWrite,
    if_match: Annotated[
        str | None, Header(description='the stored version the write is based on: "3" ("0": new)')
    ] = None,
    reason: Annotated[str | None, Query(max_length=255, description="for the audit trail")] = None,
    environment: EnvironmentParam = None,
) -> models.ChangeEvent:
    """Store the body's document as it is: the base's, or in an environment the overlay
    (``null`` deletes it, or drops the overlay), if the stored version is ``If-Match``.
    Validated as any write (every environment it affects, the rules, the limits). A
    rollback needs the admin role, any other write the editor role."""
    role = Role.ADMIN if body.action == "rollback" else Role.EDITOR
    manager = manager_for(request, who, namespace, role=role)
    target = await environment_for(request, who, environment)
    _check_key(manager, key)
    expected = _version_from(if_match)
    if expected is None:
        raise ApiProblem(428, 'a stored write needs If-Match: "<version>" ("0": a new document)')
    where = scopes(manager, target)[-1]
    data = body.data
    if data is not None and not who.role.reveals_secrets:
        # A reader of masked secrets sends back what it was shown: keep those secrets.
        current = await hub_of(request).store.load(manager.namespace, key, environment=where)
        stored = None if current is None else current.data
        data = restore_masked(data, stored, hub_of(request).keyring)
    change = await manager.write_stored(
        key,
        data,
        environment=where or None,
        expected_version=expected,
        action=Action(body.action),
        actor=who.name,
        reason=reason,
    )
    response.headers["ETag"] = f'"{change.version}"'
    return models.from_change(change)


@router.post(
    "/layers",
    responses={
        **_PROBLEMS,
        412: {"model": models.Problem, "description": "a member's stored version is not its own"},
        422: {"model": models.Problem, "description": "members are refused (errors[].path)"},
    },
)
async def write_layers(
    request: Request,
    who: CurrentPrincipal,
    body: models.LayerSet,
    reason: Annotated[str | None, Query(max_length=255, description="for the audit trail")] = None,
) -> list[models.ChangeEvent]:
    """Store several documents as they are, as one change set: one transaction, applied
    whole by every instance (what a remote hub's ``hub.change_set()`` commits)."""
    hub = hub_of(request)
    async with hub.change_set(actor=who.name, reason=reason) as cs:
        for member in body.writes:
            role = Role.ADMIN if member.action == "rollback" else Role.EDITOR
            manager = manager_for(request, who, member.namespace, role=role)
            target = await environment_for(request, who, member.environment or "base")
            _check_key(manager, member.key)
            where = scopes(manager, target)[-1]
            data = member.data
            if data is not None and not who.role.reveals_secrets:
                current = await hub.store.load(manager.namespace, member.key, environment=where)
                data = restore_masked(data, None if current is None else current.data, hub.keyring)
            cs.set_document(
                manager,
                member.key,
                data,
                environment=where or None,
                expected_version=member.expected_version,
                action=Action(member.action),
            )
    return [models.from_change(manager_change) for manager_change in cs.changes]
