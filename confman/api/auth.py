"""Who is calling and what they may touch: FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from confman import ConfigHub, ConfigurationManager
from confman.managers.virtual_key import VirtualKeySecretManager

from .problems import ApiProblem
from .tokens import ApiTokenManager, Principal, Role

__all__ = ["HIDDEN_NAMESPACES", "CurrentPrincipal", "hub_of", "manager_for", "principal"]

# Never served as documents: tokens have routes of their own, and whoever could set the
# virtual-key secret before the first key is issued could mint keys of their own.
HIDDEN_NAMESPACES = frozenset({ApiTokenManager.namespace, VirtualKeySecretManager.namespace})

_bearer = HTTPBearer(auto_error=False, description="a token from `confman tokens create`")


def hub_of(request: Request) -> ConfigHub:
    hub: ConfigHub = request.app.state.hub
    return hub


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise ApiProblem(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    # A coroutine, though nothing here awaits: FastAPI runs a plain `def` dependency on a
    # worker thread, a hop per request that cost more than the whole lookup (in memory).
    found = hub_of(request).manager(ApiTokenManager).authenticate(credentials.credentials)
    if found is None:
        raise ApiProblem(
            401,
            "the token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    # Kept for the error handlers, which tell each caller only what its token may read.
    request.state.principal = found
    return found


CurrentPrincipal = Annotated[Principal, Depends(principal)]


def require(who: Principal, role: Role, action: str) -> None:
    if not who.may(role):
        raise ApiProblem(403, f"{action} needs the {role} role; token {who.name!r} is {who.role}")


def manager_for(
    request: Request, who: Principal, namespace: str, *, role: Role = Role.VIEWER
) -> ConfigurationManager[Any]:
    """The manager of ``namespace`` if ``who`` may use it with ``role``."""
    if not who.sees(namespace):
        raise ApiProblem(403, f"token {who.name!r} is not granted namespace {namespace!r}")
    visible = {m.namespace: m for m in served(request, who)}
    manager = visible.get(namespace)
    if manager is None:
        # A hidden namespace answers exactly as an unknown one does, and the list names
        # only what this token may see: neither tells that a hidden namespace exists.
        known = ", ".join(visible) or "none"
        raise ApiProblem(404, f"unknown namespace {namespace!r}; known: {known}")
    action = "reading" if role is Role.VIEWER else "writing" if role is Role.EDITOR else "this"
    require(who, role, action)
    return manager


def served(request: Request, who: Principal) -> list[ConfigurationManager[Any]]:
    """The managers ``who`` may see, by namespace."""
    return sorted(
        (
            m
            for m in hub_of(request).managers()
            if m.namespace not in HIDDEN_NAMESPACES and who.sees(m.namespace)
        ),
        key=lambda m: m.namespace,
    )
