"""Environments: named deployment stages (``development``, ``staging``, ``production``)
over one shared base, in one store.

Every document row belongs to the base (stored as ``''``; public APIs say ``None``) or to
one environment. An environment's row for a (namespace, key) is an **overlay**: a partial
document merged (JSON Merge Patch) over the base document of the same (namespace, key),
holding only the fields that differ, so a base change reaches every environment that does
not override that field. An overlay can also **hide** a base collection item in its
environment only (`HIDDEN`). A namespace whose manager says ``inherits = False``
(credentials: virtual keys, API tokens) never inherits: each environment holds its own
documents, and the base's are the base's alone.

The environments themselves are base documents of the reserved namespace
``_environments`` (key: the name, data: the description), so creating and deleting one
is versioned and audited in the change log like any other write.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .change import BASE, ChangeRecord
from .exceptions import EnvironmentNotEmpty, FieldError, UnknownEnvironment, ValidationFailed
from .store import ConfigStore, StoredDocument
from .store.tables import ENVIRONMENT_LENGTH

if TYPE_CHECKING:
    from .hub import ConfigHub

__all__ = [
    "BASE",
    "ENVIRONMENTS_NAMESPACE",
    "ENVIRONMENT_VARIABLE",
    "HIDDEN",
    "Environment",
    "EnvironmentNotEmpty",
    "UnknownEnvironment",
    "check_environment_name",
    "create_environment",
    "delete_environment",
    "hidden",
    "is_hidden",
    "list_environments",
    "stored_environment",
]

#: Where a hub's environment comes from when ``ConfigHub.connect`` is not told.
ENVIRONMENT_VARIABLE = "CONFMAN_ENVIRONMENT"
#: The base documents that list the environments (never a manager's namespace: those
#: start with a letter).
ENVIRONMENTS_NAMESPACE = "_environments"
_NAME = re.compile(r"[a-z][a-z0-9-]*")
_RESERVED = frozenset({"base", "all", "none"})
#: An overlay that hides the base item of its (namespace, key) in its environment. No
#: model field can be named ``$hidden`` (not an identifier), so it never means a value.
HIDDEN_MARK = "$hidden"
HIDDEN: Mapping[str, Any] = {HIDDEN_MARK: True}
MAX_DESCRIPTION = 1000


def hidden() -> dict[str, Any]:
    return dict(HIDDEN)


def is_hidden(doc: Mapping[str, Any] | None) -> bool:
    return doc is not None and doc.get(HIDDEN_MARK) is True


@dataclass(frozen=True, slots=True)
class Environment:
    """One environment as the registry holds it."""

    name: str
    description: str
    version: int
    updated_at: datetime
    updated_by: str | None


def check_environment_name(name: str) -> str:
    """``name`` if it can name an environment, else `ValidationFailed` saying why.

    Lower-case letters, digits and dashes, starting with a letter, at most 63
    characters (a DNS label, a topic level, a file suffix all take it as it is).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > ENVIRONMENT_LENGTH:
        reason = (
            f"must be lower-case letters, digits and dashes, start with a letter and be at "
            f"most {ENVIRONMENT_LENGTH} characters"
        )
    elif name in _RESERVED:
        reason = f"{name!r} is reserved ({', '.join(sorted(_RESERVED))} name no environment)"
    else:
        return name
    raise ValidationFailed(ENVIRONMENTS_NAMESPACE, str(name)[:40], [FieldError("name", reason)],
                           source="environment name")  # fmt: skip


def _environment(doc: StoredDocument) -> Environment:
    data = doc.data or {}
    return Environment(
        doc.key, str(data.get("description") or ""), doc.version, doc.updated_at, doc.updated_by
    )


async def list_environments(store: ConfigStore) -> list[Environment]:
    """Every environment, by name."""
    docs = await store.load_namespace(ENVIRONMENTS_NAMESPACE)
    return sorted((_environment(d) for d in docs if d.data is not None), key=lambda e: e.name)


async def stored_environment(store: ConfigStore, name: str) -> StoredDocument | None:
    """The registry row of ``name`` (a tombstone once deleted), or None."""
    return await store.load(ENVIRONMENTS_NAMESPACE, name)


async def create_environment(
    hub: ConfigHub, name: str, *, description: str = "", actor: str | None = None
) -> Environment:
    """Add ``name`` to the registry (see `ConfigHub.create_environment`)."""
    from .change import Action
    from .exceptions import ConcurrencyConflict
    from .store import Write

    check_environment_name(name)
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ValidationFailed(
            ENVIRONMENTS_NAMESPACE, name,
            [FieldError("description", f"must be text of at most {MAX_DESCRIPTION} characters")],
            source="create environment",
        )  # fmt: skip
    existing = await stored_environment(hub.store, name)
    if existing is not None and existing.data is not None:
        raise ConcurrencyConflict(
            ENVIRONMENTS_NAMESPACE, name, expected=0, current=existing.version
        )
    data = {"description": description}
    stored, _record = await hub.store.write(
        Write(
            namespace=ENVIRONMENTS_NAMESPACE,
            key=name,
            data=data,
            expected_version=0 if existing is None else existing.version,
            action=Action.CREATE,
            actor=actor,
            reason=f"create environment {name}",
            before=None,
            after=data,
            changed=["description"],
            origin=hub.instance_id,
        )
    )
    await _tell(hub, [(stored, _record)])
    return _environment(stored)


async def delete_environment(
    hub: ConfigHub,
    name: str,
    *,
    force: bool = False,
    actor: str | None = None,
    reason: str | None = None,
) -> int:
    """Remove ``name`` (see `ConfigHub.delete_environment`)."""
    from .change import Action
    from .patch import leaf_items
    from .store import Write

    existing = await stored_environment(hub.store, name)
    if existing is None or existing.data is None:
        raise UnknownEnvironment(name, sorted(hub.known_environments - {name}))
    documents = await hub.store.environment_documents(name)
    if documents and not force:
        raise EnvironmentNotEmpty(name, len(documents))
    why = reason or f"delete environment {name}"
    # Each removed document gets its own audited change-log row, in the same transaction
    # as the registry's: the environment and its documents go together or not at all.
    # ``before`` is not kept: an overlay is partial, and its masked form needs the model
    # (the paths it held are, in ``changed``).
    writes = [
        Write(
            namespace=d.namespace,
            key=d.key,
            data=None,
            expected_version=d.version,
            action=Action.DELETE,
            actor=actor,
            reason=why,
            before=None,
            after=None,
            changed=[p for p, _ in leaf_items(d.data or {})],
            origin=hub.instance_id,
            environment=name,
        )
        for d in documents
    ]
    writes.append(
        Write(
            namespace=ENVIRONMENTS_NAMESPACE,
            key=name,
            data=None,
            expected_version=existing.version,
            action=Action.DELETE,
            actor=actor,
            reason=why,
            before=existing.data,
            after=None,
            changed=["description"],
            origin=hub.instance_id,
        )
    )
    await _tell(hub, await hub.store.write_all(writes))
    return len(documents)


async def _tell(hub: ConfigHub, written: list[tuple[StoredDocument, ChangeRecord]]) -> None:
    from .bus import ChangeNotice

    for stored, record in written:
        hub._applied(record.seq)
        await hub._publish(
            ChangeNotice(
                stored.namespace,
                stored.key,
                stored.version,
                record.seq,
                hub.instance_id,
                stored.environment,
                replies=False,  # nobody waits on the registry
            )
        )
