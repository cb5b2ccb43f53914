"""Environments as things (list, create, delete) and the comparison of two of them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from confman.environments import check_environment_name

from . import models
from .auth import CurrentPrincipal, hub_of, manager_for, require, served
from .params import well_formed
from .problems import ApiProblem
from .scope import environment_for, label
from .tokens import Role

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["environments"])
# Compare takes ``namespace`` more than once; the other routes refuse a repeated parameter.
_WELL_FORMED = [Depends(well_formed)]

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": models.Problem, "description": text}
    for status, text in {
        401: "no or unknown token",
        403: "the token may not do this (or not in that environment)",
        404: "no such environment (the problem lists the known ones)",
        503: "the database is unreachable",
    }.items()
}


@router.get("/environments", responses=_PROBLEMS, dependencies=_WELL_FORMED)
async def list_environments(
    request: Request, who: CurrentPrincipal
) -> list[models.EnvironmentInfo]:
    """Every environment (those the token may use), with how many documents it holds."""
    hub = hub_of(request)
    counts = await hub.store.overlay_counts()
    return [
        models.EnvironmentInfo(
            name=e.name,
            description=e.description,
            version=e.version,
            updated_at=e.updated_at,
            updated_by=e.updated_by,
            documents=counts.get(e.name, 0),
        )
        for e in await hub.environments()
        if who.reaches(e.name)
    ]


@router.post(
    "/environments",
    status_code=201,
    dependencies=_WELL_FORMED,
    responses={
        **_PROBLEMS,
        409: {"model": models.Problem, "description": "an environment of that name exists"},
        422: {"model": models.Problem, "description": "a bad name (errors[].path: name)"},
    },
)
async def create_environment(
    request: Request, who: CurrentPrincipal, body: models.EnvironmentRequest
) -> models.EnvironmentInfo:
    """Create an environment (admin); audited in the change log."""
    require(who, Role.ADMIN, "creating environments")
    check_environment_name(body.name)  # 422 naming the field "name"
    if "\x00" in body.description:
        raise ApiProblem(
            422,
            "the description holds a NUL character, which no database column can",
            errors=[{"path": "description", "message": "contains a NUL character"}],
        )
    hub = hub_of(request)
    if body.name in {e.name for e in await hub.environments()}:
        raise ApiProblem(409, f"environment {body.name!r} exists already", environment=body.name)
    created = await hub.create_environment(body.name, description=body.description, actor=who.name)
    return models.EnvironmentInfo(
        name=created.name,
        description=created.description,
        version=created.version,
        updated_at=created.updated_at,
        updated_by=created.updated_by,
        documents=0,
    )


@router.delete(
    "/environments/{name}",
    dependencies=_WELL_FORMED,
    responses={
        **_PROBLEMS,
        409: {"model": models.Problem, "description": "it holds documents; delete with force"},
    },
)
async def delete_environment(
    request: Request,
    who: CurrentPrincipal,
    name: str,
    force: Annotated[bool, Query(description="delete its documents too (each audited)")] = False,
    reason: Annotated[str | None, Query(max_length=255, description="for the audit")] = None,
) -> models.EnvironmentDeleted:
    """Delete an environment (admin). One that still holds documents needs ``force``;
    each document removed is a change-log entry of its own."""
    require(who, Role.ADMIN, "deleting environments")
    target = await environment_for(request, who, name)
    if target is None:
        raise ApiProblem(
            422,
            "the base is not an environment; it cannot be deleted",
            errors=[{"path": "name", "in": "path", "message": "names the base"}],
        )
    hub = hub_of(request)
    removed = await hub.delete_environment(target, force=force, actor=who.name, reason=reason)
    return models.EnvironmentDeleted(name=target, removed=removed)


@router.get("/compare", responses=_PROBLEMS)
async def compare(
    request: Request,
    who: CurrentPrincipal,
    left: Annotated[str, Query(max_length=63, description="an environment, or 'base'")],
    right: Annotated[str, Query(max_length=63, description="an environment, or 'base'")],
    namespace: Annotated[list[str] | None, Query(description="only these namespaces")] = None,
    everything: Annotated[
        bool, Query(alias="all", description="every field, not only the differences")
    ] = False,
) -> models.Comparison:
    """Field by field, the stored effective values of two environments (defaults, base,
    overlay: no instance's files or variables) and the layer each came from. Secrets are
    compared by a fingerprint valid within this answer only, never shown."""
    a = await environment_for(request, who, left)
    b = await environment_for(request, who, right)
    if namespace:
        names = [manager_for(request, who, ns).namespace for ns in dict.fromkeys(namespace)]
    else:
        names = [m.namespace for m in served(request, who)]
    found = await hub_of(request).compare(a, b, namespaces=names, everything=everything)
    return models.Comparison(
        left=label(a),
        right=label(b),
        everything=found.everything,
        fields=[
            models.ComparedField(
                namespace=f.namespace,
                key=f.key,
                path=f.path,
                left=f.left,
                right=f.right,
                left_source=f.left_source,
                right_source=f.right_source,
                left_present=f.left_present,
                right_present=f.right_present,
                secret=f.secret,
                same=f.same,
            )
            for f in found.fields
        ],
    )
