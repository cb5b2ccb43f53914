"""Promote: make one environment's stored effective values equal another's.

``hub.promote("staging", "production", namespaces=["router"])`` builds one change set
(action ``promote``) that writes **production's overlays**, never the base:

- an item the source has: the target's overlay becomes exactly what differs between
  the base and the source's effective document (no overlay at all when that is nothing);
- an item the source lacks while the base has it: hidden in the target (a tombstone);
- an item neither the source nor the base has: the target's own item is removed.

Namespaces that do not inherit (credentials) are never promoted: a staging key must not
become a production key. Fields the promoting instance's own env files or variables pin
are reported on each change (``pinned``), not silently skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .change import BASE, Action, ConfigChange
from .environments import hidden
from .exceptions import FieldError, ValidationFailed
from .patch import diff_patch

if TYPE_CHECKING:
    from .hub import ConfigHub
    from .manager import ConfigurationManager
    from .store import StoredDocument

__all__ = ["promote"]


async def promote(
    hub: ConfigHub,
    source: str,
    target: str,
    *,
    namespaces: Iterable[str] | None = None,
    dry_run: bool = False,
    actor: str | None = None,
    reason: str | None = None,
) -> list[ConfigChange[Any]]:
    """See `ConfigHub.promote`."""
    if source == target:
        raise ValidationFailed(
            "", "", [FieldError("to", "must name another environment than from")],
            source="promote",
        )  # fmt: skip
    for name in (source, target):
        await hub.check_environment(name)
    if namespaces is None:
        managers = [m for m in hub.managers() if m.inherits]
    else:
        managers = [hub.by_namespace(n) for n in dict.fromkeys(namespaces)]
        refused = [m.namespace for m in managers if not m.inherits]
        if refused:
            reason = "never inherits across environments (credentials); promote copies none"
            raise ValidationFailed(
                refused[0], "", [FieldError("namespaces", f"{n} {reason}") for n in refused],
                source="promote",
            )  # fmt: skip
    cs = hub.change_set(actor=actor, reason=reason or f"promote {source} to {target}")
    for manager in sorted(managers, key=lambda m: m.namespace):
        rows = await hub.store.load_namespace(
            manager.namespace, environments=[BASE, source, target]
        )
        by_key: dict[str, dict[str, StoredDocument]] = {}
        for row in rows:
            by_key.setdefault(row.key, {})[row.environment] = row
        for key in sorted(by_key):
            _promote_key(cs, manager, key, by_key[key], source, target)
    if not len(cs):
        return []
    if dry_run:
        return await cs.preview()
    return await cs.commit()


def _plain(manager: ConfigurationManager[Any], row: StoredDocument | None) -> Any:
    return None if row is None else manager._decode(row.data, row.key, row.version)


def _promote_key(
    cs: Any,
    manager: ConfigurationManager[Any],
    key: str,
    docs: dict[str, StoredDocument],
    source: str,
    target: str,
) -> None:
    base = _plain(manager, docs.get(BASE))
    wanted = manager._combined(base, _plain(manager, docs.get(source)))
    have_row = docs.get(target)
    have = _plain(manager, have_row)
    if manager._combined(base, have) == wanted:
        return  # already the same there
    overlay: dict[str, Any] | None
    if wanted is None:
        overlay = hidden() if base is not None and manager.keyed else None
    else:
        overlay = diff_patch(base or {}, wanted) or None
    if overlay == have:
        return
    cs.set_document(
        manager, key, overlay, environment=target,
        expected_version=0 if have_row is None else have_row.version, action=Action.PROMOTE,
    )  # fmt: skip
