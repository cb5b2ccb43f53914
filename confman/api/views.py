"""Documents as one environment sees them: read from memory for this server's own
environment, from the database (`ConfigurationManager.resolve`) for any other.

This server's own environment is what it serves: its env files and variables are part of
the effective value there. Any other environment is shown with its stored layers only
(model defaults, base, overlay), as the instances that run in it see it before their own
files and variables.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from confman import DEFAULT_KEY, ConfigHub, ConfigurationManager, FieldSource
from confman.environments import is_hidden
from confman.secrets import mask_document, plain_document
from confman.store import StoredDocument

from . import models
from .problems import ApiProblem
from .scope import document_version, holds, label

__all__ = ["State", "document", "listing", "namespace_size", "state"]

_BASE = ""  # how the store spells the base


def _store_name(environment: str | None) -> str:
    return _BASE if environment is None else environment


def masked(value: Any) -> dict[str, Any] | None:
    return None if value is None else mask_document(value.model_dump(mode="python"))


def shown(value: Any, *, reveal: bool) -> dict[str, Any]:
    """A value as a reader sees it: secrets masked, or in clear when ``reveal``."""
    if reveal:
        result: dict[str, Any] = plain_document(value.model_dump(mode="python"))
        return result
    return masked(value) or {}


def _origins(sources: list[FieldSource] | tuple[FieldSource, ...]) -> list[models.FieldOrigin]:
    return [
        models.FieldOrigin(
            path=f.path,
            layer=str(f.layer),
            detail=f.detail,
            value=f.value,
            shadows=list(f.shadows),
        )
        for f in sources
    ]


@dataclass(slots=True)
class State:
    """A (namespace, key) in one environment, as a write there starts from it."""

    value: Any  # the effective value (None: no such item there)
    version: int  # the environment's own document's version (the If-Match one)
    base_version: int | None
    hidden: bool = False


async def state(
    hub: ConfigHub, manager: ConfigurationManager[Any], key: str, environment: str | None
) -> State:
    if holds(hub, environment):
        value = await manager.fetch(key)
        version = manager.version(key)
        base: int | None = None
        if manager.inherits:
            base = version if environment is None else manager.version(key, environment=None)
        hidden = False
        if value is None and manager.inherits and environment is not None:
            hidden = (await manager.resolve(key, environment=environment)).hidden
        return State(value, version, base, hidden)
    resolved = await manager.resolve(key, environment=environment)
    return State(
        resolved.value,
        document_version(manager, resolved),
        resolved.base_version if manager.inherits else None,
        resolved.hidden,
    )


def _missing(manager: ConfigurationManager[Any], key: str, found: State, env: str | None) -> None:
    if found.value is not None:
        return
    if found.hidden:
        raise ApiProblem(
            404,
            f"{manager.namespace}/{key} is hidden in {label(env)} ({label(env)} "
            f"v{found.version}); reset it there to show the base item again",
            headers={"ETag": f'"{found.version}"'},
            environment=label(env),
            hidden=True,
            current_version=found.version,
        )
    raise ApiProblem(404, f"{manager.namespace} has no item {key!r} in {label(env)}")


async def document(
    hub: ConfigHub,
    manager: ConfigurationManager[Any],
    key: str,
    environment: str | None,
    *,
    reveal: bool = False,
) -> models.Document:
    """The effective value, its version and where each field came from.

    Secrets are masked unless ``reveal`` (a `Role` that `reveals_secrets`); ``sources``
    keep them masked either way, as the manager explains them: they say where a field
    came from, and ``value`` already carries what it is.
    """
    if holds(hub, environment):
        found = await state(hub, manager, key, environment)
        _missing(manager, key, found, environment)
        sources = _origins(manager.explain(key))
        problems = [
            models.StoredProblem(
                version=p.version,
                source=p.source,
                errors=[models.ProblemError(path=e.path, message=e.message) for e in p.errors],
            )
            for p in manager.problems()
            if p.key == key
        ]
    else:
        resolved = await manager.resolve(key, environment=environment)
        found = State(
            resolved.value,
            document_version(manager, resolved),
            resolved.base_version if manager.inherits else None,
            resolved.hidden,
        )
        _missing(manager, key, found, environment)
        sources, problems = _origins(resolved.sources), []
    return models.Document(
        namespace=manager.namespace,
        key=key,
        environment=environment,
        version=found.version,
        base_version=found.base_version,
        value=shown(found.value, reveal=reveal),
        sources=sources,
        problems=problems,
    )


# --------------------------------------------------------------------------- listings


async def _keys(
    hub: ConfigHub, namespace: str, environment: str, after: str, page: int
) -> AsyncIterator[StoredDocument]:
    """Live documents of one environment by key, read ``page`` at a time."""
    while True:
        found = await hub.store.list_documents(
            namespace, after=after, limit=page, environment=environment
        )
        for doc in found:
            yield doc
        if len(found) < page:
            return
        after = found[-1].key


async def _hidden_of(hub: ConfigHub, namespace: str, environment: str, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    rows = await hub.store.load_namespace(namespace, keys=keys, environments=[environment])
    return {d.key for d in rows if is_hidden(d.data)}


async def _merged(
    hub: ConfigHub, namespace: str, environment: str, after: str, page: int
) -> AsyncIterator[tuple[str, StoredDocument | None, StoredDocument | None]]:
    """(key, base document, overlay) in key order: the base's items and the
    environment's own, the ones it hides left out."""
    bases = aiter(_keys(hub, namespace, _BASE, after, page))
    overlays = aiter(_keys(hub, namespace, environment, after, page))
    base = await anext(bases, None)
    batch: list[StoredDocument] = []
    hidden: set[str] = set()

    async def next_overlay() -> StoredDocument | None:
        nonlocal batch, hidden
        if not batch:
            # Read a batch, then ask which of it are tombstones (list_documents has no data).
            while len(batch) < page:
                doc = await anext(overlays, None)
                if doc is None:
                    break
                batch.append(doc)
            hidden = await _hidden_of(hub, namespace, environment, [d.key for d in batch])
            if not batch:
                return None
        return batch.pop(0)

    overlay = await next_overlay()
    while base is not None or overlay is not None:
        if overlay is None or (base is not None and base.key < overlay.key):
            assert base is not None
            yield base.key, base, None
            base = await anext(bases, None)
            continue
        if base is None or overlay.key < base.key:
            if overlay.key not in hidden:
                yield overlay.key, None, overlay
        elif overlay.key not in hidden:
            yield base.key, base, overlay
        if base is not None and base.key == overlay.key:
            base = await anext(bases, None)
        overlay = await next_overlay()


def _summary(key: str, base: StoredDocument | None, own: StoredDocument | None,
             inherits: bool) -> models.DocumentSummary:  # fmt: skip
    newest = max((d for d in (base, own) if d is not None), key=lambda d: d.updated_at)
    return models.DocumentSummary(
        key=key,
        version=0 if own is None else own.version,
        base_version=(0 if base is None else base.version) if inherits else None,
        updated_at=newest.updated_at,
        updated_by=newest.updated_by,
    )


async def listing(
    hub: ConfigHub,
    manager: ConfigurationManager[Any],
    environment: str | None,
    *,
    after: str | None,
    limit: int,
) -> models.DocumentList:
    """One page of the items ``environment`` sees, by key (``next_after``: more remain).

    In an environment over an inheriting base: the base's items and the environment's
    own, less the ones it hides; elsewhere the environment's (or the base's) documents.
    """
    namespace = manager.namespace
    overlaying = manager.inherits and environment is not None
    documents: list[models.DocumentSummary] = []
    more = False
    if overlaying:
        assert environment is not None
        async for key, base, own in _merged(hub, namespace, environment, after or "", limit + 1):
            if len(documents) == limit:
                more = True
                break
            documents.append(_summary(key, base, own, inherits=True))
    else:
        page = await hub.store.list_documents(
            namespace, after=after or "", limit=limit + 1, environment=_store_name(environment)
        )
        more = len(page) > limit
        # The base of an inheriting namespace is its own base document; elsewhere the
        # environment keeps its documents apart (no base version to show).
        documents = [
            _summary(d.key, d if manager.inherits else None, d, manager.inherits)
            for d in page[:limit]
        ]
    if not manager.keyed and not documents and after is None:
        found = await state(hub, manager, DEFAULT_KEY, environment)
        documents = [
            models.DocumentSummary(
                key=DEFAULT_KEY,
                version=found.version,
                base_version=found.base_version,
                updated_at=None,
                updated_by=None,
            )
        ]
    return models.DocumentList(
        namespace=namespace,
        environment=environment,
        keyed=manager.keyed,
        documents=documents,
        next_after=documents[-1].key if more else None,
    )


async def namespace_size(
    hub: ConfigHub, manager: ConfigurationManager[Any], environment: str | None
) -> int:
    """How many items ``environment`` sees in the namespace."""
    namespace = manager.namespace
    base = (await hub.store.namespaces()).get(namespace, 0)
    if environment is None:
        return base
    if not manager.inherits:
        return (await hub.store.namespaces(environment=environment)).get(namespace, 0)
    overlays = await hub.store.load_namespace(namespace, environments=[environment])
    live = [d for d in overlays if d.data is not None]
    if not live:
        return base
    under = await hub.store.load_namespace(namespace, keys=[d.key for d in live])
    in_base = {d.key for d in under if d.data is not None}
    added = sum(1 for d in live if d.key not in in_base and not is_hidden(d.data))
    hidden = sum(1 for d in live if d.key in in_base and is_hidden(d.data))
    return base + added - hidden
