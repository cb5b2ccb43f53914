"""Compare two environments field by field: the stored effective values on each side
(model defaults, base, overlay) and the layer each came from.

Per-instance layers (env files, variables) are not part of it: they belong to one
instance, not to an environment; `ConfigurationManager.explain` shows them there.
Secrets are compared by an HMAC fingerprint under a key made for one comparison and
then forgotten: equal secrets show equal fingerprints within one answer, and nothing
that could be looked up or compared across answers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretBytes, SecretStr

from .change import BASE, FieldSource
from .exceptions import FieldError, ValidationFailed
from .patch import leaf_items

if TYPE_CHECKING:
    from .hub import ConfigHub
    from .manager import ConfigurationManager, Resolved

__all__ = ["Comparison", "FieldComparison", "compare"]

ABSENT = "absent"
#: Documents one namespace may hold for a comparison: compare reads a namespace whole,
#: and a bound keeps one request from reading a credentials store of millions.
MAX_COMPARED = 20_000


@dataclass(frozen=True, slots=True)
class FieldComparison:
    """One field of one (namespace, key) on both sides.

    ``left``/``right`` are JSON values (a secret as ``"fingerprint:…"``), ``None`` with
    ``*_present`` false where that side has no such field or item. ``*_source`` names
    the layer: ``default``, ``database (base v7)``, ``database (production v3)``,
    ``hidden (production v3)`` or ``absent``.
    """

    namespace: str
    key: str
    path: str
    left: Any
    right: Any
    left_source: str
    right_source: str
    left_present: bool
    right_present: bool
    secret: bool

    @property
    def same(self) -> bool:
        return self.left_present == self.right_present and self.left == self.right


@dataclass(frozen=True, slots=True)
class Comparison:
    left: str | None  # None: the base
    right: str | None
    fields: tuple[FieldComparison, ...]
    everything: bool

    @property
    def differences(self) -> tuple[FieldComparison, ...]:
        return tuple(f for f in self.fields if not f.same)


def _source(found: FieldSource | None) -> str:
    if found is None:
        return "default"
    return f"{found.layer}" + (f" ({found.detail})" if found.detail else "")


def _leaves(
    resolved: Resolved[Any], fingerprint: Any
) -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """(path -> JSON value, path -> source, secret paths) of one side."""
    if resolved.value is None:
        return {}, {}, set()
    python = dict(leaf_items(resolved.value.model_dump(mode="python")))
    values: dict[str, Any] = {}
    secret_paths: set[str] = set()
    for path, value in leaf_items(resolved.value.model_dump(mode="json")):
        secret = python.get(path)
        if isinstance(secret, (SecretStr, SecretBytes)):
            secret_paths.add(path)
            values[path] = fingerprint(secret.get_secret_value())
        else:
            values[path] = value
    sources = {s.path: _source(s) for s in resolved.sources}
    return values, sources, secret_paths


def _side_label(resolved: Resolved[Any]) -> str:
    if resolved.hidden:
        return f"hidden ({resolved.environment} v{resolved.version})"
    return ABSENT


async def compare(
    hub: ConfigHub,
    left: str | None,
    right: str | None,
    *,
    namespaces: Iterable[str] | None = None,
    everything: bool = False,
) -> Comparison:
    """See `ConfigHub.compare`."""
    for side in (left, right):
        if side is not None:
            await hub.check_environment(side)
    managers: list[ConfigurationManager[Any]]
    if namespaces is None:
        # Namespaces that do not inherit (credentials) differ between environments by
        # design: every key would be "missing on one side". Compared only when named.
        managers = sorted((m for m in hub.managers() if m.inherits), key=lambda m: m.namespace)
    else:
        managers = [hub.by_namespace(n) for n in dict.fromkeys(namespaces)]
    pepper = secrets.token_bytes(32)

    def fingerprint(value: str | bytes) -> str:
        data = value.encode() if isinstance(value, str) else value
        return "fingerprint:" + hmac.new(pepper, data, hashlib.sha256).hexdigest()[:16]

    a, b = BASE if left is None else left, BASE if right is None else right
    fields: list[FieldComparison] = []
    for manager in managers:
        if manager.inherits:
            wanted = list(dict.fromkeys((BASE, a, b)))
        else:
            wanted = list(dict.fromkeys((a, b)))
        held = await hub.store.count_documents(manager.namespace, wanted)
        if held > MAX_COMPARED:
            raise ValidationFailed(
                manager.namespace, "",
                [FieldError("namespaces", f"{manager.namespace} holds {held:,} documents "
                            f"in these environments; compare compares at most {MAX_COMPARED:,}")],
                source="compare",
            )  # fmt: skip
        rows = await hub.store.load_namespace(manager.namespace, environments=wanted)
        by_key: dict[str, dict[str, Any]] = {}
        for row in rows:
            by_key.setdefault(row.key, {})[row.environment] = row
        keys = sorted(by_key) if manager.keyed else ["default"]
        for key in keys:
            docs = by_key.get(key, {})
            sides = [
                manager._resolved(
                    key,
                    env,
                    docs.get(BASE) if manager.inherits else docs.get(env),
                    docs.get(env) if manager.inherits and env != BASE else None,
                )
                for env in (a, b)
            ]
            fields.extend(_fields(manager.namespace, key, sides[0], sides[1], fingerprint,
                                  everything))  # fmt: skip
    return Comparison(left, right, tuple(fields), everything)


def _fields(
    namespace: str,
    key: str,
    left: Resolved[Any],
    right: Resolved[Any],
    fingerprint: Any,
    everything: bool,
) -> list[FieldComparison]:
    lv, ls, lsecret = _leaves(left, fingerprint)
    rv, rs, rsecret = _leaves(right, fingerprint)
    out: list[FieldComparison] = []
    if left.value is None or right.value is None:
        if left.value is None and right.value is None:
            return out
        # The item exists on one side only: one row says so, whatever its fields.
        out.append(
            FieldComparison(
                namespace,
                key,
                "",
                None if left.value is None else "present",
                None if right.value is None else "present",
                _side_label(left) if left.value is None else "present",
                _side_label(right) if right.value is None else "present",
                left.value is not None,
                right.value is not None,
                False,
            )
        )
        if not everything:
            return out
    for path in dict.fromkeys([*lv, *rv]):
        item = FieldComparison(
            namespace,
            key,
            path,
            lv.get(path),
            rv.get(path),
            ls.get(path, "default") if path in lv else ABSENT,
            rs.get(path, "default") if path in rv else ABSENT,
            path in lv,
            path in rv,
            path in lsecret or path in rsecret,
        )
        if everything or not item.same:
            out.append(item)
    return out
