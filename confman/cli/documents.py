"""``confman list/get/set/delete``: read and change documents, in the base or (``-e``)
an environment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import click

from ..change import BASE, Action, ConfigChange, Layer
from ..environments import ENVIRONMENTS_NAMESPACE, is_hidden
from ..exceptions import ConfmanError, NotFound
from ..hub import ConfigHub
from ..manager import DEFAULT_KEY, ConfigurationManager
from ..sources.base import parse_value
from .context import (
    Context,
    ManagerClass,
    actor_name,
    environment,
    key_for,
    pass_context,
    report_problems,
    shared_options,
    write_options,
)
from .errors import EXIT_OK, CliError, UsageError
from .output import label, masked, out, table, to_json, warn

__all__ = [
    "build_patch",
    "delete",
    "describe_change",
    "hidden_namespaces",
    "list_",
    "set_",
    "stored_keys",
]


# --------------------------------------------------------------------------- list and get

ITEM = "(item)"  # the path of an explain or diff row about a whole item (hidden, missing)


@click.command("list")
@environment
@shared_options
@pass_context
def list_(ctx: Context) -> int:
    """Namespaces with their kind, items and version (in an environment: and overlays)."""
    return asyncio.run(_list(ctx))


async def _list(ctx: Context) -> int:
    # As the API's namespace listing: items are stored documents (a singleton on its
    # defaults has none), and the namespaces the API hides are not listed.
    hidden = hidden_namespaces()
    rows: list[list[str]] = []
    failed = 0
    env = ctx.environment
    async with ctx.hub([]) as hub:
        stored = await hub.store.namespaces()
        own = {} if env is None else await hub.store.namespaces(environment=env)
        for namespace, cls in ctx.known.items():
            if namespace in hidden:
                continue
            kind = "collection" if cls.keyed else "singleton"
            try:
                manager = await hub.load(cls)
            except ConfmanError as e:
                failed += 1
                warn(f"{namespace}: {e}")
                rows.append([namespace, kind, "?", "?", *(["?"] if env else [])])
                continue
            if env is not None:
                rows.append([namespace, kind, *await _in_environment(hub, manager, env, own)])
                continue
            # Count what is stored: a lazily loaded manager holds only what it cached.
            items = str(stored.get(namespace, 0))
            if cls.keyed:
                rows.append([namespace, kind, items, ""])
            else:
                version = manager.version()
                rows.append([namespace, kind, items, str(version) if version else "0 (defaults)"])
        for namespace in sorted({*stored, *own}):
            if namespace not in ctx.known and namespace not in hidden:
                count = str(stored.get(namespace, 0))
                extra = [str(own.get(namespace, 0))] if env else []
                rows.append([namespace, "unknown (no manager; see --app)", count, "", *extra])
    out(table(["namespace", "kind", "items", "version", *(["overlays"] if env else [])], rows))
    if failed:
        raise CliError(f"{failed} namespace(s) could not be loaded (see the warnings above)")
    return EXIT_OK


async def _in_environment(
    hub: ConfigHub, manager: ConfigurationManager[Any], env: str, own: dict[str, int]
) -> list[str]:
    """items, version and overlays of ``manager``'s namespace in ``env``: the items in
    effect there, the version a ``set -e`` changes (singletons) and ``env``'s documents."""
    namespace = manager.namespace
    if manager.inherits:
        docs = await hub.store.load_namespace(namespace, environments=[BASE, env])
        base = {d.key for d in docs if d.environment == BASE and d.data is not None}
        over = {d.key: d.data for d in docs if d.environment == env}
        items = sum(
            1
            for key in {*base, *over}
            if (not is_hidden(over[key]) if over.get(key) is not None else key in base)
        )
    else:
        items = own.get(namespace, 0)
    version = ""
    if not manager.keyed:
        mine = manager.version()
        under = manager.version(environment=None) if manager.inherits else 0
        version = str(mine) if mine else f"0 (inherits base v{under})" if under else "0 (defaults)"
    return [str(items), version, str(own.get(namespace, 0))]


async def stored_keys(hub: ConfigHub, cls: ManagerClass, env: str | None) -> list[str]:
    """The keys stored for ``cls`` in ``env``'s view (the base's and its own), sorted."""
    wanted = [BASE] if env is None else [BASE, env] if cls.inherits else [env]
    documents = await hub.store.load_namespace(cls.namespace, environments=wanted)
    return sorted({d.key for d in documents})


def hidden_namespaces() -> frozenset[str]:
    """Namespaces of confman's own secrets, never listed (the API hides the same), and
    the environments' registry (``confman env list`` shows it)."""
    from ..api.tokens import ApiTokenManager
    from ..managers.virtual_key import VirtualKeySecretManager

    return frozenset(
        {ApiTokenManager.namespace, VirtualKeySecretManager.namespace, ENVIRONMENTS_NAMESPACE}
    )


@click.command()
@click.argument("namespace")
@click.argument("key", required=False)
@click.option("--explain", is_flag=True, help="show where each field comes from")
@environment
@shared_options
@pass_context
def get(ctx: Context, namespace: str, key: str | None, explain: bool) -> int:
    """Print an effective value as JSON (secrets masked); all items when KEY is omitted."""
    return asyncio.run(_get(ctx, namespace, key, explain))


async def _get(ctx: Context, namespace: str, given_key: str | None, explain: bool) -> int:
    cls = ctx.manager_class(namespace)
    key = key_for(cls, given_key, required=explain)
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        report_problems(manager)
        if key is None:  # a whole collection, as stored (lazy managers cache only some)
            items = {}
            for doc_key in await stored_keys(hub, cls, ctx.environment):
                found = await manager.fetch(doc_key)
                if found is not None:
                    items[doc_key] = masked(found)
            out(json.dumps(items, indent=2, ensure_ascii=False))
            return EXIT_OK
        value = await manager.fetch(key)
        hidden = value is None and explain and ctx.environment is not None and cls.inherits
        if hidden:
            hidden = (await manager.resolve(key)).hidden
        if value is None and not hidden:
            raise NotFound(f"{cls.namespace} has no item {key!r}{ctx.where}")
        if not explain:
            out(json.dumps(masked(value), indent=2, ensure_ascii=False))
            return EXIT_OK
        versions = await _versions(hub, manager, key, hidden)
        out(f"{label(cls.namespace, key)}{ctx.where}: {versions}")
        rows = [
            [f.path or ITEM, to_json(f.value), str(f.layer), f.detail or "", ", ".join(f.shadows)]
            for f in manager.explain(key)
        ]
        out(table(["path", "value", "layer", "detail", "shadows"], rows))
    return EXIT_OK


async def _versions(
    hub: ConfigHub, manager: ConfigurationManager[Any], key: str, hidden: bool
) -> str:
    """``get --explain``'s header: the versions of the documents under the value."""
    env = manager.environment
    version = manager.version(key)
    if env is None or not manager.inherits:
        return f"version {version}" if version else "nothing stored (version 0)"
    base = manager.version(key, environment=None)
    under = f"base version {base}" if base else "nothing in the base"
    if hidden:
        return f"hidden by {env} version {version} (over {under})"
    row = await hub.store.load(manager.namespace, key, environment=env)
    if row is not None and row.data is not None:
        return f"{env} version {version} over {under}"
    if not base:
        return "nothing stored (version 0)"
    removed = f" (its version {version} was removed)" if version else ""
    return f"no {env} overlay{removed}, inherits {under}"


# --------------------------------------------------------------------------- writes


def build_patch(assignments: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as JSON if they can be).

    Never echoes a value in an error: it might be a secret.

    Raises:
        UsageError: an assignment is malformed, or two assign the same field.
    """
    patch: dict[str, Any] = {}
    assigned: list[tuple[str, ...]] = []
    for position, text in enumerate(assignments, start=1):
        field, sep, raw = text.partition("=")
        parts = tuple(p.strip() for p in field.split("."))
        if not sep or not field.strip():
            raise UsageError(f"assignment {position} is not of the form field=value")
        if not all(parts):
            raise UsageError(f"assignment {position}: empty field name in {field.strip()!r}")
        for earlier in assigned:
            shorter = min(len(earlier), len(parts))
            if earlier[:shorter] == parts[:shorter]:
                raise UsageError(
                    f"{'.'.join(parts)} and {'.'.join(earlier)} are assigned together; "
                    "assign each field once"
                )
        assigned.append(parts)
        node = patch
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_value(raw)
    return patch


def _split_key(cls: ManagerClass, words: Sequence[str]) -> tuple[str | None, list[str]]:
    """``set``'s positionals: an optional KEY (no '='), then field=value assignments."""
    key: str | None = None
    rest = list(words)
    if rest and "=" not in rest[0]:
        first = rest.pop(0)
        if not cls.keyed and first != DEFAULT_KEY:
            raise UsageError(
                f"{cls.namespace} is a singleton: it takes no KEY, only field=value "
                f"assignments (got {first!r})"
            )
        key = first
    if not rest:
        raise UsageError("nothing to set: give at least one field=value")
    return key, rest


def describe_change(change: ConfigChange[Any], manager: ConfigurationManager[Any]) -> None:
    """Print what a write did: its version, the changed fields, and any pinned ones."""
    where = label(change.namespace, change.key)
    if change.environment is not None:
        where += f" in {change.environment}"
    if change.unchanged:
        out(f"unchanged {where}: still version {change.version} (nothing written)")
        return
    verb = {
        Action.CREATE: "created",
        Action.UPDATE: "updated",
        Action.DELETE: "deleted",
        Action.ROLLBACK: "rolled back",
        Action.IMPORT: "imported",
    }[change.action]
    out(f"{verb} {where}: now version {change.version}")
    if change.changed_fields:
        out(f"changed: {', '.join(change.changed_fields)}")
    elif change.new is not None and change.old is not None and not change.pinned:
        out("changed: nothing (the effective value is the same)")
    if change.pinned:
        origins: list[str] = []
        if change.new is not None:
            pinned_paths = set(change.pinned)
            for f in manager.explain(change.key):
                # A field is pinned when it or an object above it is: one set lookup per
                # level of its path, not one scan of every pinned path per field.
                parts = f.path.split(".")
                pinned = any(".".join(parts[:i]) in pinned_paths for i in range(1, len(parts) + 1))
                overridden = f.layer in (Layer.ENV_FILE, Layer.ENVIRONMENT)
                if pinned and overridden and f.detail and f.detail not in origins:
                    origins.append(f.detail)
        by = f" ({', '.join(origins)})" if origins else ""
        out(
            f"note: {', '.join(change.pinned)} pinned by an override{by}: the stored value "
            "changed, the effective value did not"
        )


@click.command(
    "set",
    help="Change fields (a merge patch); creates a collection item that does not exist.\n\n"
    "FIELD may be dotted (limits.rpm=10); VALUE is JSON if it parses, else a string; "
    "null resets a field to its default.",
)
@click.argument("namespace")
@click.argument("words", nargs=-1, required=True, metavar="[KEY] FIELD=VALUE...")
@write_options
@environment
@shared_options
@pass_context
def set_(
    ctx: Context,
    namespace: str,
    words: tuple[str, ...],
    expect_version: int | None,
    reason: str | None,
    actor: str | None,
) -> int:
    return asyncio.run(_set(ctx, namespace, words, expect_version, reason, actor))


async def _set(
    ctx: Context,
    namespace: str,
    words: Sequence[str],
    expect_version: int | None,
    reason: str | None,
    given_actor: str | None,
) -> int:
    cls = ctx.manager_class(namespace)
    word_key, assignments = _split_key(cls, words)
    key = key_for(cls, word_key)
    assert key is not None
    patch = build_patch(assignments)
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        who = actor_name(given_actor)
        # fetch, not `in`: a lazily loaded manager (virtual keys) holds only what it cached.
        missing = cls.keyed and await manager.fetch(key) is None
        where = ctx.environment  # None: the base
        if missing and where is not None and cls.inherits and (await manager.resolve(key)).hidden:
            warn(
                f"{label(cls.namespace, key)} is hidden in {where}: this creates it anew there "
                f"(give every required field); `confman reset {cls.namespace} {key} --all "
                f"-e {where}` shows the base's again"
            )
        if missing and expect_version in (None, 0):
            change = await manager.create(key, patch, actor=who, reason=reason, environment=where)
        else:
            change = await manager.update(
                patch,
                key=key,
                expected_version=expect_version,
                actor=who,
                reason=reason,
                environment=where,
            )
        describe_change(change, manager)
    return EXIT_OK


@click.command()
@click.argument("namespace")
@click.argument("key", required=False)
@write_options
@environment
@shared_options
@pass_context
def delete(
    ctx: Context,
    namespace: str,
    key: str | None,
    expect_version: int | None,
    reason: str | None,
    actor: str | None,
) -> int:
    """Delete an item, or reset a singleton to its defaults."""
    return asyncio.run(_delete(ctx, namespace, key, expect_version, reason, actor))


async def _delete(
    ctx: Context,
    namespace: str,
    given_key: str | None,
    expect_version: int | None,
    reason: str | None,
    given_actor: str | None,
) -> int:
    cls = ctx.manager_class(namespace)
    key = key_for(cls, given_key)
    assert key is not None
    async with ctx.hub([cls]) as hub:
        manager = hub.manager(cls)
        change = await manager.delete(
            key,
            expected_version=expect_version,
            actor=actor_name(given_actor),
            reason=reason,
            environment=ctx.environment,
        )
        describe_change(change, manager)
        env = ctx.environment
        if env is not None and cls.inherits:
            if not cls.keyed:
                out(f"{cls.namespace} in {env} inherits the base again (and any overrides)")
            elif (await manager.resolve(key)).hidden:
                out(
                    f"hidden in {env} only (the base keeps it); "
                    f"`confman reset {cls.namespace} {key} --all -e {env}` shows it again"
                )
        elif not cls.keyed:
            out(f"{cls.namespace} is back to its defaults (and any overrides)")
    return EXIT_OK
