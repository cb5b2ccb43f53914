"""Which environment a request is about, and whether its token may go there.

Every route that reads or writes documents takes ``?environment=NAME``: ``base`` for the
base, a registered environment's name, or nothing for this server's own environment
(the one ``confman serve --environment`` names; the base without it). An unknown name is
a 404 listing the known ones, never a new environment; a token limited to environments
gets a 403 naming the environment it may not use.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request

from confman import ConfigHub, ConfigurationManager
from confman.environments import UnknownEnvironment

from .auth import hub_of
from .problems import ApiProblem
from .tokens import BASE_NAME, Principal

__all__ = [
    "BASE_NAME",
    "EnvironmentParam",
    "check_allowed",
    "document_version",
    "environment_for",
    "holds",
    "label",
    "named",
]

EnvironmentParam = Annotated[
    str | None,
    Query(
        max_length=63,
        description="the environment ('base': the base; omitted: this server's own "
        "environment, the base unless it runs with --environment)",
    ),
]


def label(environment: str | None) -> str:
    """How messages name an environment (``None``: the base)."""
    return BASE_NAME if environment is None else environment


def named(raw: str | None) -> str | None:
    """A public environment name as the core spells it (``base`` is None)."""
    return None if raw is None or raw == BASE_NAME else raw


async def known(hub: ConfigHub, name: str) -> None:
    """Return if ``name`` is a registered environment, else 404 listing the known ones."""
    if name in hub.known_environments:
        return
    found = {e.name for e in await hub.environments()}  # one created since the last read
    if name not in found:
        raise UnknownEnvironment(name, sorted(found))


def check_allowed(who: Principal, environment: str | None) -> None:
    """403 naming ``environment`` unless ``who`` may use it."""
    if not who.reaches(environment):
        granted = ", ".join(sorted(who.environments or ())) or "none"
        raise ApiProblem(
            403,
            f"token {who.name!r} is not granted environment {label(environment)!r} "
            f"(it is limited to: {granted})",
            environment=label(environment),
        )


async def environment_for(request: Request, who: Principal, raw: str | None) -> str | None:
    """The environment a request names (``None``: the base), checked: it exists and the
    token may use it.

    Raises:
        UnknownEnvironment: answered 404 with the known names.
        ApiProblem: 403 for a token not granted it.
    """
    hub = hub_of(request)
    target = hub.environment if raw is None else named(raw)
    if target is not None:
        await known(hub, target)
    check_allowed(who, target)
    request.state.environment = target
    return target


def holds(hub: ConfigHub, environment: str | None) -> bool:
    """Whether this server serves ``environment`` from memory (its own environment:
    its env files and variables apply there); any other is read from the database."""
    return environment == hub.environment


def document_version(manager: ConfigurationManager[Any], resolved: Any) -> int:
    """The version a write to ``resolved``'s environment checks (`Resolved` of `resolve`):
    the overlay's in an environment over an inheriting base, else the document's own."""
    if resolved.environment is None or not manager.inherits:
        version: int = resolved.base_version
    else:
        version = resolved.version
    return version
