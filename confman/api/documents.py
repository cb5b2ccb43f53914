"""Namespaces and documents: read with provenance, write version-checked, audit, roll back,
reset an overlay; every route in the environment ``?environment=`` names (`scope`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response

from confman import DEFAULT_KEY, Action, ConfigChange, ConfigurationManager
from confman.manager import MAX_KEY_LENGTH

from . import models, views
from .auth import CurrentPrincipal, hub_of, manager_for, served
from .diffs import diff
from .params import well_formed
from .problems import ApiProblem
from .scope import EnvironmentParam, environment_for, label
from .tokens import Principal, Role

__all__ = ["diff", "router"]

router = APIRouter(prefix="/api/v1", tags=["documents"], dependencies=[Depends(well_formed)])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": models.Problem, "description": text}
    for status, text in {
        400: "a malformed path or query (invalid UTF-8, a repeated parameter)",
        401: "no or unknown token",
        403: "the token may not do this",
        404: "no such namespace, item or version",
        503: "the database is unreachable",
    }.items()
}
_WRITE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **_PROBLEMS,
    412: {"model": models.Problem, "description": "the stored version is not If-Match"},
    422: {"model": models.Problem, "description": "the document is refused (errors[].path)"},
}

_VERSION_TAG = re.compile(r'"?([0-9]{1,10})"?')  # ASCII digits: "²" is a digit to str

Key = Annotated[str, Path(description="document key ('default' for a singleton)")]
IfMatch = Annotated[
    str | None,
    Header(description='the version the change is based on: "3" (the ETag of a read)'),
]
DryRun = Annotated[bool, Query(description="validate and show the diff; store nothing")]
Reason = Annotated[str | None, Query(max_length=255, description="why, for the audit trail")]
JsonObject = Annotated[dict[str, Any], Body(description="a JSON object")]


def _version_from(if_match: str | None) -> int | None:
    """The version named by an ``If-Match`` header (``"3"``, ``W/"3"`` or ``3``)."""
    if if_match is None:
        return None
    # Strong tags only: RFC 9110 compares If-Match strongly, so W/"3" never matches.
    found = _VERSION_TAG.fullmatch(if_match.strip())
    if found is None or int(found[1]) > models.MAX_VERSION:
        raise ApiProblem(400, 'If-Match must name one version, like "3"')
    return int(found[1])


def _check_key(manager: ConfigurationManager[Any], key: str) -> None:
    if len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise ApiProblem(404, f"{manager.namespace} has no such item (not a valid key)")
    if not manager.keyed and key != DEFAULT_KEY:
        raise ApiProblem(404, f"{manager.namespace} is a singleton; its only key is 'default'")


def _etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


async def _written(
    request: Request,
    manager: ConfigurationManager[Any],
    change: ConfigChange[Any],
    response: Response,
    environment: str | None,
) -> models.WriteResult:
    _etag(response, change.version)
    changed = change.changed_fields
    if change.old is None or change.new is None:
        # A created or deleted item has no effective value to compare with: list what
        # the change log lists (history, the event stream), so that all three agree.
        changed = change.stored_changed
    summary = models.ChangeSummary(
        seq=change.seq,
        version=change.version,
        action=str(change.action),
        changed=list(changed),
        pinned=list(change.pinned),
        unchanged=change.unchanged,
    )
    if change.new is None:  # a deleted (or hidden) item: nothing left to show
        return models.WriteResult(
            namespace=manager.namespace,
            key=change.key,
            environment=environment,
            version=change.version,
            value={},
            sources=[],
            problems=[],
            change=summary,
        )
    document = await views.document(hub_of(request), manager, change.key, environment)
    return models.WriteResult(**document.model_dump(), change=summary)


def _dry_run(before: Any, after: Any, environment: str | None) -> models.DryRun:
    shown = views.masked(after)
    return models.DryRun(
        value=shown, diff=diff(views.masked(before), shown), environment=environment
    )


@dataclass(slots=True)
class _Write:
    """What every write route starts from."""

    manager: ConfigurationManager[Any]
    key: str
    environment: str | None
    expected: int | None  # from If-Match
    found: views.State  # the effective value and the version now, in that environment

    @property
    def before(self) -> Any:
        return self.found.value

    @property
    def current(self) -> int:
        return self.found.version

    def require_version(self, wanted: int) -> None:
        """What the store would check, for dry runs: 412 unless at ``wanted``."""
        if self.current != wanted:
            detail = (
                f"{self.manager.namespace}/{self.key} is at version {self.current} in "
                f"{label(self.environment)}"
            )
            etag = {"ETag": f'"{self.current}"'}
            raise ApiProblem(412, detail, headers=etag, current_version=self.current)


async def _start_write(
    request: Request,
    who: Principal,
    namespace: str,
    key: str,
    if_match: str | None,
    environment: str | None,
    *,
    role: Role = Role.EDITOR,
) -> _Write:
    manager = manager_for(request, who, namespace, role=role)
    target = await environment_for(request, who, environment)
    _check_key(manager, key)
    found = await views.state(hub_of(request), manager, key, target)
    return _Write(manager, key, target, _version_from(if_match), found)


# --------------------------------------------------------------------------- reads


@router.get("/namespaces", responses=_PROBLEMS)
async def list_namespaces(
    request: Request, who: CurrentPrincipal, environment: EnvironmentParam = None
) -> list[models.NamespaceInfo]:
    """Every namespace the token may see, with its kind and size in the environment."""
    target = await environment_for(request, who, environment)
    hub = hub_of(request)
    found = []
    for manager in served(request, who):
        model = manager.model
        version = None
        if not manager.keyed:
            version = (await views.state(hub, manager, DEFAULT_KEY, target)).version
        found.append(
            models.NamespaceInfo(
                namespace=manager.namespace,
                keyed=manager.keyed,
                title=model.__name__,
                description=(model.__doc__ or "").strip().split("\n\n")[0] or None,
                items=await views.namespace_size(hub, manager, target),
                version=version,
                writable=who.may(Role.EDITOR),
                environment=target,
                inherits=manager.inherits,
            )
        )
    return found


@router.get("/namespaces/{namespace}/schema", responses=_PROBLEMS)
async def namespace_schema(request: Request, who: CurrentPrincipal, namespace: str) -> Any:
    """The JSON Schema of the namespace's model (the same in every environment)."""
    return manager_for(request, who, namespace).model.model_json_schema()


@router.get("/namespaces/{namespace}/documents", responses=_PROBLEMS)
async def list_documents(
    request: Request,
    who: CurrentPrincipal,
    namespace: str,
    limit: Annotated[int, Query(ge=1, le=10_000, description="at most this many")] = 1000,
    after: Annotated[str | None, Query(description="keys after this one (paging)")] = None,
    environment: EnvironmentParam = None,
) -> models.DocumentList:
    """The items the environment sees, by key (a singleton lists ``default`` even when
    nothing is stored): in an environment, the base's items and its own, less those it
    hides; in a namespace that does not inherit, the environment's own documents.

    ``next_after`` is set when more remain: pass it as ``after`` for the next page.
    """
    manager = manager_for(request, who, namespace)
    target = await environment_for(request, who, environment)
    return await views.listing(hub_of(request), manager, target, after=after, limit=limit)


@router.get("/namespaces/{namespace}/documents/{key}", responses=_PROBLEMS)
async def read_document(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    environment: EnvironmentParam = None,
) -> models.Document:
    """The effective value (secrets masked, in clear for a service token), where each
    field came from (base or overlay, with its version), and the version a write there
    checks (the ETag)."""
    manager = manager_for(request, who, namespace)
    target = await environment_for(request, who, environment)
    _check_key(manager, key)
    reveal = who.role.reveals_secrets
    document = await views.document(hub_of(request), manager, key, target, reveal=reveal)
    _etag(response, document.version)
    return document


@router.get("/namespaces/{namespace}/documents/{key}/history", responses=_PROBLEMS)
async def document_history(
    request: Request,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    environment: EnvironmentParam = None,
) -> list[models.HistoryEntry]:
    """Committed changes of the environment's own document, newest first, each with its
    field-level diff (an overlay's diffs are of its own fields)."""
    manager = manager_for(request, who, namespace)
    target = await environment_for(request, who, environment)
    _check_key(manager, key)
    return [
        models.HistoryEntry(
            **models.record_fields(r), diff=diff(r.before, r.after), environment=r.environment
        )
        for r in await manager.history(key, limit=limit, environment=target)
    ]


# --------------------------------------------------------------------------- writes


@router.put(
    "/namespaces/{namespace}/documents/{key}",
    responses={**_WRITE_PROBLEMS, 201: {"model": models.WriteResult}},
    response_model=models.WriteResult | models.DryRun,
)
async def replace_document(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    body: JsonObject,
    if_match: IfMatch = None,
    dry_run: DryRun = False,
    reason: Reason = None,
    environment: EnvironmentParam = None,
) -> models.WriteResult | models.DryRun:
    """Replace the document with the body (in an environment: the overlay becomes the
    fields that differ from the base). Without ``If-Match`` it must not exist yet; an
    item an environment inherits from the base is overridden with ``If-Match: "0"``."""
    w = await _start_write(request, who, namespace, key, if_match, environment)
    manager, expected, target = w.manager, w.expected, w.environment
    exists = w.before is not None if manager.keyed else w.current != 0
    creating = manager.keyed and (expected is None or (expected == 0 and w.before is None))
    if dry_run:
        if creating and exists:
            w.require_version(-1)  # PUT without If-Match creates: it exists (there)
        elif expected is not None or exists:
            w.require_version(expected or 0)
        after = await manager.preview(body, key=key, replace=True, environment=target)
        return _dry_run(w.before if exists else None, after, target)
    if creating:
        change = await manager.create(key, body, actor=who.name, reason=reason, environment=target)
    else:
        change = await manager.update(
            body,
            key=key,
            replace=True,
            expected_version=0 if expected is None else expected,
            actor=who.name,
            reason=reason,
            environment=target,
        )
    if change.action is Action.CREATE:  # also a deleted item made again
        response.status_code = 201
    return await _written(request, manager, change, response, target)


@router.patch(
    "/namespaces/{namespace}/documents/{key}",
    responses=_WRITE_PROBLEMS,
    response_model=models.WriteResult | models.DryRun,
)
async def patch_document(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    body: JsonObject,
    if_match: IfMatch = None,
    dry_run: DryRun = False,
    reason: Reason = None,
    environment: EnvironmentParam = None,
) -> models.WriteResult | models.DryRun:
    """Apply the body as a JSON merge patch (RFC 7386: ``null`` resets a field; in an
    environment, ``null`` removes the field from the overlay so it inherits again)."""
    w = await _start_write(request, who, namespace, key, if_match, environment)
    target = w.environment
    if w.manager.keyed and w.before is None:
        where = "" if target is None else f" in {target}"
        raise ApiProblem(404, f"{namespace} has no item {key!r}{where} (create it with PUT)")
    if dry_run:
        if w.expected is not None:
            w.require_version(w.expected)
        after = await w.manager.preview(body, key=key, environment=target)
        return _dry_run(w.before, after, target)
    change = await w.manager.update(
        body,
        key=key,
        expected_version=w.expected,
        actor=who.name,
        reason=reason,
        environment=target,
    )
    return await _written(request, w.manager, change, response, target)


@router.delete(
    "/namespaces/{namespace}/documents/{key}",
    responses={
        **_WRITE_PROBLEMS,
        428: {"model": models.Problem, "description": "If-Match is required"},
    },
    response_model=models.WriteResult | models.DryRun,
)
async def delete_document(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    if_match: IfMatch = None,
    dry_run: DryRun = False,
    reason: Reason = None,
    environment: EnvironmentParam = None,
) -> models.WriteResult | models.DryRun:
    """Delete an item, or reset a singleton to its defaults. Needs ``If-Match``. In an
    environment, an item of the base is hidden there only (reset shows it again), and
    a singleton's overlay is dropped (it inherits the base again)."""
    w = await _start_write(request, who, namespace, key, if_match, environment)
    target = w.environment
    if w.expected is None:
        raise ApiProblem(428, 'DELETE needs If-Match: "<version>" (the ETag you read)')
    if w.before is None or (not w.manager.keyed and w.current == 0):
        raise ApiProblem(404, f"{namespace}/{key} is not stored in {label(target)}")
    if dry_run:
        w.require_version(w.expected)
        after = await w.manager.preview(None, key=key, environment=target)
        return _dry_run(w.before, after, target)
    change = await w.manager.delete(
        key, expected_version=w.expected, actor=who.name, reason=reason, environment=target
    )
    return await _written(request, w.manager, change, response, target)


@router.post(
    "/namespaces/{namespace}/documents/{key}/rollback",
    responses=_WRITE_PROBLEMS,
    response_model=models.WriteResult | models.DryRun,
)
async def rollback_document(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    body: models.RollbackRequest,
    if_match: IfMatch = None,
    dry_run: DryRun = False,
    reason: Reason = None,
    environment: EnvironmentParam = None,
) -> models.WriteResult | models.DryRun:
    """Write a new version whose content equals ``to_version``'s (admin); versions
    count per environment."""
    w = await _start_write(request, who, namespace, key, if_match, environment, role=Role.ADMIN)
    manager, expected, target = w.manager, w.expected, w.environment
    if dry_run:
        if expected is not None:
            w.require_version(expected)
        after = await manager.validate_rollback(key, to_version=body.to_version, environment=target)
        return _dry_run(w.before, after, target)
    change = await manager.rollback(
        key,
        to_version=body.to_version,
        expected_version=expected,
        actor=who.name,
        reason=reason,
        environment=target,
    )
    return await _written(request, manager, change, response, target)


@router.post(
    "/namespaces/{namespace}/documents/{key}/reset",
    responses=_WRITE_PROBLEMS,
    response_model=models.WriteResult,
)
async def reset_document(
    request: Request,
    response: Response,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    body: models.ResetRequest,
    if_match: IfMatch = None,
    reason: Reason = None,
    environment: EnvironmentParam = None,
) -> models.WriteResult:
    """Remove ``fields`` from the environment's overlay (all of it: ``null``), so they
    inherit from the base again; dropping the overlay also shows an item it hid."""
    w = await _start_write(request, who, namespace, key, if_match, environment)
    target = w.environment
    if target is None or not w.manager.inherits:
        why = "the base has no overlay" if target is None else f"{namespace} does not inherit"
        raise ApiProblem(
            422,
            f"reset removes fields from an environment's overlay; {why}",
            errors=[{"path": "environment", "in": "query", "message": why}],
        )
    if w.expected is not None and w.expected != w.current:
        w.require_version(w.expected)
    change = await w.manager.reset(
        key,
        body.fields,
        environment=target,
        expected_version=w.expected,
        actor=who.name,
        reason=reason,
    )
    return await _written(request, w.manager, change, response, target)
