"""Health, readiness, the cluster view, tokens and key rotation."""

from __future__ import annotations

import dataclasses
import os
import socket
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from confman import ConfmanError, StoreUnavailable
from confman.rotation import rotate_keys
from confman.store import head_revision

from . import models
from .auth import HIDDEN_NAMESPACES, CurrentPrincipal, hub_of, require, served
from .problems import ApiProblem
from .scope import EnvironmentParam, environment_for
from .tokens import BASE_NAME, ApiTokenManager, Principal, Role

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """The process answers (it does not look at the database)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["operations"],
    responses={503: {"model": models.Readiness, "description": "not ready, and why"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers, within the hub's ``readiness_timeout`` (2 s by
    default), and its schema is at the migrations' head."""
    try:
        await hub_of(request).check_ready()
    except StoreUnavailable as e:
        body = models.Readiness(status="unready", database=f"unreachable: {e}")
        return JSONResponse(body.model_dump(), status_code=503)
    except ConfmanError as e:
        body = models.Readiness(status="unready", database=str(e))
        return JSONResponse(body.model_dump(), status_code=503)
    except Exception as e:  # the driver's own errors: unreachable, refused, timed out
        detail = f"unreachable ({type(e).__name__})"
        body = models.Readiness(status="unready", database=detail)
        return JSONResponse(body.model_dump(), status_code=503)
    ready = models.Readiness(status="ready", database="ok", schema_revision=head_revision())
    return JSONResponse(ready.model_dump())


@router.get("/api/v1/whoami", tags=["tokens"])
async def whoami(who: CurrentPrincipal) -> models.WhoAmI:
    """The caller's token: its name, role, namespaces and environments."""
    grants = None if who.namespaces is None else sorted(who.namespaces)
    stages = None if who.environments is None else sorted(who.environments)
    return models.WhoAmI(name=who.name, role=who.role, namespaces=grants, environments=stages)


def _shown(who: Principal, namespace: str) -> bool:
    """Whether the cluster view may tell ``who`` anything about ``namespace``."""
    if namespace in HIDDEN_NAMESPACES:
        return who.may(Role.ADMIN)  # tokens and key material: only their managers
    return who.sees(namespace)


def _problem_namespace(problem: str) -> str:
    # Instances report each problem as `Problem.__str__`: "namespace/key v3 (source): ...".
    return problem.split("/", 1)[0]


def _drift_namespace(detail: str) -> str:
    # A "values" drift names its namespace first: "namespace: same stored versions ...".
    return detail.split(":", 1)[0]


def _visible_cluster(who: Principal, view: models.ClusterView) -> models.ClusterView:
    """``view`` as ``who`` may see it: problems, digests and drift of the namespaces the
    token may read only, with or without Redis alike.

    Unparseable entries are withheld rather than shown (a namespace that cannot be read
    off an entry is no namespace the token is granted, unless it is granted all).
    """
    instances = []
    for instance in view.instances:
        if not who.reaches(instance.get("environment")):
            continue  # an instance of an environment the token may not use
        shown = dict(instance)
        problems = instance.get("problems") or ()
        shown["problems"] = [p for p in problems if _shown(who, _problem_namespace(p))]
        if isinstance(instance.get("namespaces"), dict):
            digests = instance["namespaces"].items()
            shown["namespaces"] = {ns: d for ns, d in digests if _shown(who, ns)}
        instances.append(shown)
    problems_of = {i.get("instance_id"): i["problems"] for i in instances}
    drift = []
    for entry in view.drift:
        if "environment" in entry and not who.reaches(entry["environment"]):
            continue
        kind = entry.get("kind")
        if kind == "problems":
            left = problems_of.get(entry.get("instance_id"), [])
            if not left:
                continue
            entry = {**entry, "detail": "; ".join(left)}
        elif kind == "values" and not _shown(who, _drift_namespace(str(entry.get("detail")))):
            continue
        drift.append(entry)
    return view.model_copy(update={"instances": instances, "drift": drift})


@router.get("/api/v1/cluster", tags=["operations"])
async def cluster(
    request: Request, who: CurrentPrincipal, environment: EnvironmentParam = None
) -> models.ClusterView:
    """This instance and, with Redis, the fleet: instances (each with its environment),
    leader, drift (of the namespaces and environments the token may read). With
    ``environment``, only the instances of that environment ('base': of none)."""
    hub = hub_of(request)
    only = await environment_for(request, who, environment) if environment else _ANY
    try:
        database_seq: int | None = await hub.store.max_seq()
    except ConfmanError:
        database_seq = None
    view = models.ClusterView(
        instance_id=hub.instance_id,
        redis=False,
        is_leader=hub.is_leader,
        applied_seq=hub.applied_seq,
        database_seq=database_seq,
        leader=None,
        fencing_token=None,
        instances=[
            {
                "instance_id": hub.instance_id,
                # What a Redis heartbeat carries, so both paths describe this instance alike.
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": datetime.fromtimestamp(hub.started_at, UTC),
                "applied_seq": hub.applied_seq,
                "problems": [str(p) for p in hub.problems()],
                "degraded": hub.degraded,
                "environment": hub.environment,
            }
        ],
        drift=[],
    )
    try:
        status = await hub.cluster_status()
    except ConfmanError:
        return _only(_visible_cluster(who, view), only)  # a lone instance (no redis_url)
    fleet = view.model_copy(
        update={
            "redis": True,
            "leader": status.leader,
            "fencing_token": status.fencing_token,
            "database_seq": status.database_seq,
            "instances": [jsonable_encoder(dataclasses.asdict(i)) for i in status.instances],
            "drift": [jsonable_encoder(dataclasses.asdict(d)) for d in status.drift],
        }
    )
    return _only(_visible_cluster(who, fleet), only)


_ANY = object()  # no environment named: every instance the token may see


def _only(view: models.ClusterView, environment: Any) -> models.ClusterView:
    if environment is _ANY:
        return view
    instances = [i for i in view.instances if i.get("environment") == environment]
    ids = {i.get("instance_id") for i in instances}
    drift = [
        d
        for d in view.drift
        if d.get("environment", environment) == environment
        and (d.get("instance_id") is None or d.get("instance_id") in ids)
    ]
    return view.model_copy(update={"instances": instances, "drift": drift})


# --------------------------------------------------------------------------- admin


def _tokens(request: Request) -> ApiTokenManager:
    return hub_of(request).manager(ApiTokenManager)


@router.get("/api/v1/tokens", tags=["tokens"])
async def list_tokens(request: Request, who: CurrentPrincipal) -> list[models.TokenInfo]:
    """Every token (never a token's value or hash)."""
    require(who, Role.ADMIN, "managing tokens")
    return [
        models.TokenInfo(
            name=name,
            role=token.role,
            namespaces=None if token.namespaces is None else list(token.namespaces),
            environments=None if token.environments is None else list(token.environments),
            created_at=token.created_at,
        )
        for name, token in sorted(_tokens(request).items())
    ]


@router.post(
    "/api/v1/tokens",
    tags=["tokens"],
    status_code=201,
    responses={412: {"model": models.Problem, "description": "a token of that name exists"}},
)
async def create_token(
    request: Request, who: CurrentPrincipal, body: models.TokenRequest
) -> models.TokenCreated:
    """Create a token; its value is in the answer and nowhere else, ever."""
    require(who, Role.ADMIN, "managing tokens")
    known = {m.namespace for m in served(request, who)}
    unknown = [
        {"path": f"namespaces.{i}", "message": "no such namespace"}
        for i, name in enumerate(body.namespaces or ())
        if name not in known
    ]
    if unknown:
        raise ApiProblem(422, "the token names unknown namespaces", errors=unknown)
    stages = {e.name for e in await hub_of(request).environments()} | {BASE_NAME}
    strangers = [
        {"path": f"environments.{i}", "message": "no such environment (nor 'base')"}
        for i, name in enumerate(body.environments or ())
        if name not in stages
    ]
    if strangers:
        raise ApiProblem(422, "the token names unknown environments", errors=strangers)
    issued = await _tokens(request).create_token(
        body.name,
        body.role,
        namespaces=body.namespaces,
        environments=body.environments,
        actor=who.name,
    )
    token = _tokens(request).get(issued.name)
    return models.TokenCreated(
        name=issued.name,
        role=issued.role,
        namespaces=None if issued.namespaces is None else list(issued.namespaces),
        environments=None if issued.environments is None else list(issued.environments),
        created_at=token.created_at,
        token=issued.plaintext,
    )


@router.delete("/api/v1/tokens/{name}", tags=["tokens"], status_code=204)
async def revoke_token(request: Request, who: CurrentPrincipal, name: str) -> Response:
    """Revoke a token on every instance."""
    require(who, Role.ADMIN, "managing tokens")
    await _tokens(request).revoke(name, actor=who.name)
    return Response(status_code=204)


@router.post("/api/v1/keys/rotate", tags=["operations"])
async def rotate(request: Request, who: CurrentPrincipal) -> dict[str, Any]:
    """Re-encrypt every stored secret under the newest encryption key (admin)."""
    require(who, Role.ADMIN, "rotating keys")
    try:
        count = await rotate_keys(hub_of(request), actor=who.name)
    except ConfmanError as e:
        raise ApiProblem(409, str(e)) from e
    return {"re_encrypted": count}
