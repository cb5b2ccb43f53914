"""Namespaces and documents: read with provenance, write version-checked, audit, roll back."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response

from confman import DEFAULT_KEY, Action, ConfigChange, ConfigurationManager
from confman.manager import MAX_KEY_LENGTH
from confman.patch import leaf_items
from confman.secrets import mask_document

from . import models
from .auth import CurrentPrincipal, hub_of, manager_for, served
from .params import well_formed
from .problems import ApiProblem
from .tokens import Principal, Role

__all__ = ["router"]

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


def _masked(value: Any) -> dict[str, Any] | None:
    return None if value is None else mask_document(value.model_dump(mode="python"))


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[models.Diff]:
    """Leaf-level differences of two (masked) documents, by dotted path.

    Both documents are walked together, once (no recursion), so the cost is linear in
    their size, plus sorting what differs: equal members are settled by one comparison.
    An object on one side and a value on the other is the object's leaves removed (or
    added) and the value added (or removed); an empty object that gains or loses members
    is those members.
    """
    found: list[tuple[str, Literal["added", "removed", "changed"], Any, Any]] = []
    stack: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = [
        ("", before or {}, after or {})
    ]
    while stack:
        prefix, old, new = stack.pop()
        for name in old.keys() | new.keys():
            a, b = old.get(name, _ABSENT), new.get(name, _ABSENT)
            if a is b or (a is not _ABSENT and b is not _ABSENT and a == b):
                continue
            path = f"{prefix}{name}"
            if isinstance(a, Mapping) and isinstance(b, Mapping):
                stack.append((path + ".", a, b))
            elif _is_leaf(a) and _is_leaf(b) and a is not _ABSENT and b is not _ABSENT:
                found.append((path, "changed", a, b))
            else:
                if a is not _ABSENT:
                    found.extend((p, "removed", v, None) for p, v in _leaves(path, a))
                if b is not _ABSENT:
                    found.extend((p, "added", None, v) for p, v in _leaves(path, b))
    found.sort(key=lambda d: d[0])
    return [models.Diff(path=p, change=c, before=a, after=b) for p, c, a, b in found]


_ABSENT: Any = object()


def _is_leaf(value: Any) -> bool:
    """A value `leaf_items` yields itself: anything but a non-empty object."""
    return not (isinstance(value, Mapping) and value)


def _leaves(path: str, value: Any) -> list[tuple[str, Any]]:
    return list(leaf_items(value, path + ".")) if not _is_leaf(value) else [(path, value)]


def _check_key(manager: ConfigurationManager[Any], key: str) -> None:
    if len(key) > MAX_KEY_LENGTH or "\x00" in key:
        raise ApiProblem(404, f"{manager.namespace} has no such item (not a valid key)")
    if not manager.keyed and key != DEFAULT_KEY:
        raise ApiProblem(404, f"{manager.namespace} is a singleton; its only key is 'default'")


async def _document(manager: ConfigurationManager[Any], key: str) -> models.Document:
    _check_key(manager, key)
    value = await manager.fetch(key)
    if value is None:
        raise ApiProblem(404, f"{manager.namespace} has no item {key!r}")
    problems = [
        models.StoredProblem(
            version=p.version,
            source=p.source,
            errors=[models.ProblemError(path=e.path, message=e.message) for e in p.errors],
        )
        for p in manager.problems()
        if p.key == key
    ]
    return models.Document(
        namespace=manager.namespace,
        key=key,
        version=manager.version(key),
        value=_masked(value) or {},
        sources=[
            models.FieldOrigin(
                path=f.path,
                layer=str(f.layer),
                detail=f.detail,
                value=f.value,
                shadows=list(f.shadows),
            )
            for f in manager.explain(key)
        ],
        problems=problems,
    )


def _etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


async def _written(
    manager: ConfigurationManager[Any], change: ConfigChange[Any], response: Response
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
    if change.new is None:  # a deleted item: nothing left to show
        return models.WriteResult(
            namespace=manager.namespace,
            key=change.key,
            version=change.version,
            value={},
            sources=[],
            problems=[],
            change=summary,
        )
    document = await _document(manager, change.key)
    return models.WriteResult(**document.model_dump(), change=summary)


def _dry_run(before: Any, after: Any) -> models.DryRun:
    shown = _masked(after)
    return models.DryRun(value=shown, diff=diff(_masked(before), shown))


@dataclass(slots=True)
class _Write:
    """What every write route starts from."""

    manager: ConfigurationManager[Any]
    key: str
    expected: int | None  # from If-Match
    before: Any  # the effective value now (None: no such item)

    @property
    def current(self) -> int:
        return self.manager.version(self.key)

    def require_version(self, wanted: int) -> None:
        """What the store would check, for dry runs: 412 unless at ``wanted``."""
        if self.current != wanted:
            detail = f"{self.manager.namespace}/{self.key} is at version {self.current}"
            etag = {"ETag": f'"{self.current}"'}
            raise ApiProblem(412, detail, headers=etag, current_version=self.current)


async def _start_write(
    request: Request, who: Principal, namespace: str, key: str, if_match: str | None
) -> _Write:
    manager = manager_for(request, who, namespace, role=Role.EDITOR)
    _check_key(manager, key)
    return _Write(manager, key, _version_from(if_match), await manager.fetch(key))


# --------------------------------------------------------------------------- reads


@router.get("/namespaces", responses=_PROBLEMS)
async def list_namespaces(request: Request, who: CurrentPrincipal) -> list[models.NamespaceInfo]:
    """Every namespace the token may see, with its kind and size."""
    found = []
    counts = await hub_of(request).store.namespaces()  # lazy managers hold only some
    for manager in served(request, who):
        model = manager.model
        items = counts.get(manager.namespace, 0)
        version = None if manager.keyed else manager.version()
        found.append(
            models.NamespaceInfo(
                namespace=manager.namespace,
                keyed=manager.keyed,
                title=model.__name__,
                description=(model.__doc__ or "").strip().split("\n\n")[0] or None,
                items=items,
                version=version,
                writable=who.may(Role.EDITOR),
            )
        )
    return found


@router.get("/namespaces/{namespace}/schema", responses=_PROBLEMS)
async def namespace_schema(request: Request, who: CurrentPrincipal, namespace: str) -> Any:
    """The JSON Schema of the namespace's model."""
    return manager_for(request, who, namespace).model.model_json_schema()


@router.get("/namespaces/{namespace}/documents", responses=_PROBLEMS)
async def list_documents(
    request: Request,
    who: CurrentPrincipal,
    namespace: str,
    limit: Annotated[int, Query(ge=1, le=10_000, description="at most this many")] = 1000,
    after: Annotated[str | None, Query(description="keys after this one (paging)")] = None,
) -> models.DocumentList:
    """Stored documents by key (a singleton lists ``default`` even when nothing is stored).

    ``next_after`` is set when more remain: pass it as ``after`` for the next page.
    """
    manager = manager_for(request, who, namespace)
    # One more than asked for says whether another page follows.
    page = await hub_of(request).store.list_documents(namespace, after=after or "", limit=limit + 1)
    documents = [
        models.DocumentSummary(
            key=d.key, version=d.version, updated_at=d.updated_at, updated_by=d.updated_by
        )
        for d in page[:limit]
    ]
    if not manager.keyed and not documents and after is None:
        documents = [
            models.DocumentSummary(
                key=DEFAULT_KEY, version=manager.version(), updated_at=None, updated_by=None
            )
        ]
    return models.DocumentList(
        namespace=namespace,
        keyed=manager.keyed,
        documents=documents,
        next_after=documents[-1].key if len(page) > limit else None,
    )


@router.get("/namespaces/{namespace}/documents/{key}", responses=_PROBLEMS)
async def read_document(
    request: Request, response: Response, who: CurrentPrincipal, namespace: str, key: Key
) -> models.Document:
    """The effective value (secrets masked), where each field came from, and the version."""
    document = await _document(manager_for(request, who, namespace), key)
    _etag(response, document.version)
    return document


@router.get("/namespaces/{namespace}/documents/{key}/history", responses=_PROBLEMS)
async def document_history(
    request: Request,
    who: CurrentPrincipal,
    namespace: str,
    key: Key,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[models.HistoryEntry]:
    """Committed changes, newest first, each with its field-level diff."""
    manager = manager_for(request, who, namespace)
    _check_key(manager, key)
    return [
        models.HistoryEntry(**models.record_fields(r), diff=diff(r.before, r.after))
        for r in await manager.history(key, limit=limit)
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
) -> models.WriteResult | models.DryRun:
    """Replace the document with the body. Without ``If-Match`` it must not exist yet."""
    w = await _start_write(request, who, namespace, key, if_match)
    manager, expected = w.manager, w.expected
    exists = w.before is not None if manager.keyed else w.current != 0
    if dry_run:
        if not expected and exists:
            w.require_version(0)
        elif expected:
            w.require_version(expected)
        after = manager.validate(body, key=key, replace=True)
        return _dry_run(w.before if exists else None, after)
    if manager.keyed and not expected:  # none, or "0": must not exist yet
        change = await manager.create(key, body, actor=who.name, reason=reason)
    else:
        change = await manager.update(
            body,
            key=key,
            replace=True,
            expected_version=0 if expected is None else expected,
            actor=who.name,
            reason=reason,
        )
    if change.action is Action.CREATE:  # also a deleted item made again
        response.status_code = 201
    return await _written(manager, change, response)


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
) -> models.WriteResult | models.DryRun:
    """Apply the body as a JSON merge patch (RFC 7386: ``null`` resets a field)."""
    w = await _start_write(request, who, namespace, key, if_match)
    if w.manager.keyed and w.before is None:
        raise ApiProblem(404, f"{namespace} has no item {key!r} (create it with PUT)")
    if dry_run:
        if w.expected is not None:
            w.require_version(w.expected)
        return _dry_run(w.before, w.manager.validate(body, key=key))
    change = await w.manager.update(
        body, key=key, expected_version=w.expected, actor=who.name, reason=reason
    )
    return await _written(w.manager, change, response)


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
) -> models.WriteResult | models.DryRun:
    """Delete an item, or reset a singleton to its defaults. Needs ``If-Match``."""
    w = await _start_write(request, who, namespace, key, if_match)
    if w.expected is None:
        raise ApiProblem(428, 'DELETE needs If-Match: "<version>" (the ETag you read)')
    if w.before is None or w.current == 0:
        raise ApiProblem(404, f"{namespace}/{key} is not stored")
    if dry_run:
        w.require_version(w.expected)
        w.manager.validate_write(key, None)  # rules across managers (a route still in use)
        after = None if w.manager.keyed else w.manager.validate({}, key=key, replace=True)
        return _dry_run(w.before, after)
    change = await w.manager.delete(key, expected_version=w.expected, actor=who.name, reason=reason)
    return await _written(w.manager, change, response)


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
) -> models.WriteResult | models.DryRun:
    """Write a new version whose content equals ``to_version``'s (admin)."""
    manager = manager_for(request, who, namespace, role=Role.ADMIN)
    _check_key(manager, key)
    expected = _version_from(if_match)
    if dry_run:
        w = _Write(manager, key, expected, await manager.fetch(key))
        if expected is not None:
            w.require_version(expected)
        after = await manager.validate_rollback(key, to_version=body.to_version)
        return _dry_run(w.before, after)
    change = await manager.rollback(
        key,
        to_version=body.to_version,
        expected_version=expected,
        actor=who.name,
        reason=reason,
    )
    return await _written(manager, change, response)
