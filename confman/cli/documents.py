"""``confman list/get/set/delete``: read and change documents."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..change import Action, ConfigChange, Layer
from ..exceptions import ConfmanError, NotFound
from ..manager import ConfigurationManager
from .base import (
    EXIT_OK,
    CliError,
    Context,
    _actor,
    _json,
    _key_for,
    _label,
    _masked,
    _out,
    _report_problems,
    _split_key,
    _table,
    _warn,
    build_patch,
)


async def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    rows: list[list[str]] = []
    failed = 0
    async with ctx.hub([]) as hub:
        stored = await hub.store.namespaces()
        for namespace, cls in ctx.known.items():
            kind = "collection" if cls.keyed else "singleton"
            try:
                manager = await hub.load(cls)
            except ConfmanError as e:
                failed += 1
                _warn(f"{namespace}: {e}")
                rows.append([namespace, kind, "?", "?"])
                continue
            if cls.keyed:
                # Count what is stored: a lazily loaded manager holds only what it cached.
                rows.append([namespace, kind, str(stored.get(namespace, 0)), ""])
            else:
                version = manager.version()
                shown = str(version) if version else "0 (defaults)"
                rows.append([namespace, kind, "1", shown])
        for namespace, count in sorted(stored.items()):
            if namespace not in ctx.known:
                rows.append([namespace, "unknown (no manager; see --app)", str(count), ""])
    _out(_table(["namespace", "kind", "items", "version"], rows))
    if failed:
        raise CliError(f"{failed} namespace(s) could not be loaded (see the warnings above)")
    return EXIT_OK


async def cmd_get(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    key = _key_for(cls, args.key, required=args.explain)
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        _report_problems(manager)
        if key is None:  # a whole collection, as stored (lazy managers cache only some)
            documents = await hub.store.load_namespace(cls.namespace)
            items = {}
            for doc in sorted(documents, key=lambda d: d.key):
                found = await manager.fetch(doc.key)
                if found is not None:
                    items[doc.key] = _masked(found)
            _out(json.dumps(items, indent=2, ensure_ascii=False))
            return EXIT_OK
        value = await manager.fetch(key)
        if value is None:
            raise NotFound(f"{cls.namespace} has no item {key!r}")
        if not args.explain:
            _out(json.dumps(_masked(value), indent=2, ensure_ascii=False))
            return EXIT_OK
        version = manager.version(key)
        stored = f"version {version}" if version else "nothing stored (version 0)"
        _out(f"{_label(cls.namespace, key)}: {stored}")
        rows = [
            [f.path, _json(f.value), str(f.layer), f.detail or "", ", ".join(f.shadows)]
            for f in manager.explain(key)
        ]
        _out(_table(["path", "value", "layer", "detail", "shadows"], rows))
    return EXIT_OK


def _describe_change(change: ConfigChange[Any], manager: ConfigurationManager[Any]) -> None:
    label = _label(change.namespace, change.key)
    verb = {
        Action.CREATE: "created",
        Action.UPDATE: "updated",
        Action.DELETE: "deleted",
        Action.ROLLBACK: "rolled back",
        Action.IMPORT: "imported",
    }[change.action]
    _out(f"{verb} {label}: now version {change.version}")
    if change.changed_fields:
        _out(f"changed: {', '.join(change.changed_fields)}")
    elif change.new is not None and change.old is not None and not change.pinned:
        _out("changed: nothing (the effective value is the same)")
    if change.pinned:
        origins: list[str] = []
        if change.new is not None:
            for f in manager.explain(change.key):
                pinned = any(f.path == p or f.path.startswith(p + ".") for p in change.pinned)
                overridden = f.layer in (Layer.ENV_FILE, Layer.ENVIRONMENT)
                if pinned and overridden and f.detail and f.detail not in origins:
                    origins.append(f.detail)
        by = f" ({', '.join(origins)})" if origins else ""
        _out(
            f"note: {', '.join(change.pinned)} pinned by an override{by}: the stored value "
            "changed, the effective value did not"
        )


async def cmd_set(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    word_key, assignments = _split_key(cls, args.words)
    key = _key_for(cls, word_key)
    assert key is not None
    patch = build_patch(assignments)
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        actor, reason = _actor(args), args.reason
        # fetch, not `in`: a lazily loaded manager (virtual keys) holds only what it cached.
        missing = cls.keyed and await manager.fetch(key) is None
        if missing and args.expect_version in (None, 0):
            change = await manager.create(key, patch, actor=actor, reason=reason)
        else:
            change = await manager.update(
                patch, key=key, expected_version=args.expect_version, actor=actor, reason=reason
            )
        _describe_change(change, manager)
    return EXIT_OK


async def cmd_delete(args: argparse.Namespace, ctx: Context) -> int:
    cls = ctx.manager_class(args.namespace)
    key = _key_for(cls, args.key)
    assert key is not None
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        change = await manager.delete(
            key, expected_version=args.expect_version, actor=_actor(args), reason=args.reason
        )
        _describe_change(change, manager)
        if not cls.keyed:
            _out(f"{cls.namespace} is back to its defaults (and any overrides)")
    return EXIT_OK
