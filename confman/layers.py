"""Layering: model defaults < database < env files < process environment.

`Layering` holds one namespace's overrides, checks them against the model at start-up,
merges them over a stored document, and explains where each effective field came from.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from .change import FieldSource, Layer
from .exceptions import ConfigSourceError, FieldError, ValidationFailed
from .patch import leaf_items, overlay
from .secrets import mask_document
from .sources import Override, OverrideSource

__all__ = ["Layering", "field_errors", "unknown_fields"]

T = TypeVar("T", bound=BaseModel)


def field_errors(error: ValidationError) -> list[FieldError]:
    """pydantic's errors as (dotted path, message) pairs, never echoing the input."""
    return [
        FieldError(".".join(str(p) for p in e["loc"]), e["msg"])
        for e in error.errors(include_input=False, include_url=False, include_context=False)
    ]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``Sub``, ``Sub | None``, ``Annotated``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        models = [m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def _takes_text(model: type[BaseModel], path: Sequence[str]) -> bool:
    """Whether the field at ``path`` is text (``str``, ``SecretStr``, optional or not).

    An override of such a field keeps the text as written: ``12345`` or ``null`` is a
    perfectly good API key, not a number or a removal.
    """
    current: type[BaseModel] | None = model
    annotation: Any = None
    for part in path:
        if current is None or part not in current.model_fields:
            return False
        annotation = current.model_fields[part].annotation
        current = _model_in(annotation)
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (
        typing.Union, types.UnionType
    ) else (annotation,)  # fmt: skip
    kinds = [a for a in args if a is not type(None)]
    return bool(kinds) and all(a in (str, SecretStr) for a in kinds)


def _resolve_path(
    model: type[BaseModel], path: Sequence[str], *, exact: bool = False
) -> tuple[str, ...] | None:
    """Map a lower-cased override path onto real field names, or ``None`` if unknown.

    Descends through nested models; below a field that is not a model (a dict, a list,
    ``Any``) the rest of the path is free-form and kept as given.
    """
    resolved: list[str] = []
    current: type[BaseModel] | None = model
    for i, part in enumerate(path):
        if current is None:
            return (*resolved, *path[i:])
        fold = (lambda s: s) if exact else str.lower
        by_name = {fold(name): (name, f) for name, f in current.model_fields.items()}
        by_name.update(
            {fold(f.alias): (name, f) for name, f in current.model_fields.items() if f.alias}
        )
        hit = by_name.get(fold(part))
        if hit is None:
            return None
        name, info = hit
        resolved.append(name)
        current = _model_in(info.annotation)
    return tuple(resolved)


def unknown_fields(model: type[BaseModel], doc: dict[str, Any]) -> list[str]:
    """Dotted paths in ``doc`` that name no field of ``model``.

    pydantic ignores unknown fields by default; a patch that names one is almost always
    a typo, and storing it silently would hide that, so writers refuse it.

    The document is walked along the model, so only members that name model fields are
    looked at one by one: below a field that is not a model (a dict, a list) the rest
    is free-form and costs nothing. The walk uses a stack, not recursion.
    """
    if model.model_config.get("extra") == "allow":
        return []
    unknown: list[str] = []
    stack: list[tuple[str, Iterator[tuple[str, Any]], type[BaseModel]]] = [
        ("", iter(doc.items()), model)
    ]
    while stack:
        prefix, members, current = stack[-1]
        fields = _fields_of(current)
        for name, value in members:
            path = f"{prefix}{name}"
            inner = fields.get(name, _UNKNOWN)
            if inner is _UNKNOWN:
                if isinstance(value, Mapping) and value:
                    unknown.extend(p for p, _ in leaf_items(value, path + "."))
                else:
                    unknown.append(path)
            elif inner is not None and isinstance(value, Mapping) and value:
                stack.append((path + ".", iter(value.items()), inner))
                break
        else:
            stack.pop()
    return unknown


_UNKNOWN: Any = object()


@functools.cache
def _fields_of(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """Field names and aliases of ``model``, each with the model it holds (if any)."""
    found = {name: _model_in(f.annotation) for name, f in model.model_fields.items()}
    found.update({f.alias: _model_in(f.annotation) for f in model.model_fields.values() if f.alias})
    return found


def _covers(paths: Iterable[str], path: str) -> bool:
    """Whether one of ``paths`` is ``path``, inside it, or holds it.

    Linear in ``paths``: callers pass the overrides of one key (set by the operator, a
    handful) or the paths of refused fields, never every path of a document.
    """
    return any(p == path or path.startswith(p + ".") or p.startswith(path + ".") for p in paths)


class _OverrideTrie:
    """The overrides of one key by path, so that a walk of the document finds, at each
    path, the overrides above, at and below it without comparing every pair."""

    __slots__ = ("below", "children", "own")

    def __init__(self) -> None:
        self.children: dict[str, _OverrideTrie] = {}
        self.own: list[int] = []  # overrides ending here, by index (precedence order)
        self.below: list[int] = []  # overrides ending here or under here

    @classmethod
    def of(cls, overrides: Sequence[Override]) -> _OverrideTrie:
        root = cls()
        for index, found in enumerate(overrides):
            node = root
            for part in found.path:
                node = node.children.setdefault(part, cls())
                node.below.append(index)
            node.own.append(index)
        return root


_STORED_LEAF: Any = object()  # the stored document has a value at or above this path
_NOT_STORED: Any = object()


def _stored_below(stored: Any, name: str) -> Any:
    """What the stored document holds at member ``name`` of ``stored`` (a walk state)."""
    if stored is _STORED_LEAF or stored is _NOT_STORED:
        return stored
    value = stored.get(name, _NOT_STORED)
    if value is _NOT_STORED:
        return _NOT_STORED
    return value if isinstance(value, Mapping) and value else _STORED_LEAF


class Layering(Generic[T]):
    """The overrides of one namespace and how they combine with stored documents.

    Args:
        model: the namespace's pydantic model.
        namespace: the namespace, as in variable names (``CONFMAN_<NAMESPACE>__...``).
        keyed: whether the namespace is a collection (variables then name the key).
        sources: override sources in ascending precedence.

    Raises:
        ConfigSourceError: an override names a field the model does not have.
    """

    def __init__(
        self,
        model: type[T],
        namespace: str,
        *,
        keyed: bool,
        sources: Sequence[OverrideSource],
    ) -> None:
        self.model = model
        self.namespace = namespace
        self._by_key: dict[str | None, list[Override]] = {}
        for source in sources:
            for found in source.overrides(namespace, keyed=keyed):
                path = _resolve_path(model, found.path)
                key = found.key if keyed else "default"
                if path is None:
                    raise ConfigSourceError(
                        namespace,
                        key or "default",
                        [FieldError(found.dotted, f"{model.__name__} has no such field")],
                        source=found.origin,
                    )
                value = found.value
                if found.raw is not None and _takes_text(model, path):
                    value = found.raw
                fixed = Override(
                    found.layer, found.origin, found.variable, found.key, path, value, found.raw
                )
                self._by_key.setdefault(key, []).append(fixed)

    def overrides(self, key: str) -> list[Override]:
        """This key's overrides, lowest precedence first."""
        return self._by_key.get(key, [])

    def override_keys(self) -> set[str]:
        return {k for k in self._by_key if k is not None}

    def merged(self, key: str, stored: dict[str, Any]) -> dict[str, Any]:
        doc = stored
        for found in self.overrides(key):
            doc = overlay(doc, found.as_document())
        return doc

    def validate(self, data: dict[str, Any], *, key: str, source: str) -> T:
        try:
            return self.model.model_validate(data)
        except ValidationError as e:
            raise ValidationFailed(self.namespace, key, field_errors(e), source=source) from None

    def effective(self, key: str, stored: dict[str, Any], *, stored_source: str) -> T:
        """The effective value of ``key`` given its stored (decrypted) document.

        Raises:
            ValidationFailed: the stored document itself is invalid (``stored_source``).
            ConfigSourceError: the document is valid but an override makes it invalid;
                names the override(s) at fault.
        """
        found = self.overrides(key)
        if not found:
            return self.validate(stored, key=key, source=stored_source)
        try:
            return self.model.model_validate(self.merged(key, stored))
        except ValidationError as e:
            errors = field_errors(e)
        self.validate(stored, key=key, source=stored_source)  # is the document to blame?
        blamed = self._blame(key, stored, found, errors)
        raise ConfigSourceError(
            self.namespace, key, errors, source=", ".join(o.origin for o in blamed)
        )

    def _blame(
        self,
        key: str,
        stored: dict[str, Any],
        found: list[Override],
        errors: list[FieldError],
    ) -> list[Override]:
        """The overrides at fault: those naming a refused field, then those that break
        the document on their own (a rule across fields), else all of them."""
        # Linear in the refused fields: each is held against the key's few overrides.
        paths = [e.path for e in errors]
        named = [p for p in paths if p]
        blamed = [o for o in found if _covers(named, o.dotted)]
        blamed_paths = [o.dotted for o in blamed]
        unexplained = [p for p in paths if not p or not _covers(blamed_paths, p)]
        if unexplained:
            for o in found:
                if o in blamed:
                    continue
                try:
                    self.model.model_validate(overlay(stored, o.as_document()))
                except ValidationError:
                    blamed.append(o)
        return [o for o in found if o in blamed] or found

    def pinned(self, key: str, paths: Iterable[str]) -> tuple[str, ...]:
        overridden = [o.dotted for o in self.overrides(key)]
        return tuple(p for p in paths if _covers(overridden, p))

    def explain(
        self, key: str, value: T, stored: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[FieldSource]:
        """For each leaf of ``value``, the layer that set it and the layers it shadows.

        ``stored`` are the stored documents under the overrides, lowest first, each with
        how to name it: ``("base v7", base), ("production v3", overlay)``.

        One walk of the shown document, carrying along where the walk is in each stored
        document and among the overrides: linear in the document's size (the number of
        stored layers, at most two, and of the key's overrides, set by the operator, are
        small factors).
        """
        found = self.overrides(key)
        shown = mask_document(value.model_dump(mode="python"))
        names = [(Layer.DATABASE, detail) for detail, _ in stored]
        result: list[FieldSource] = []
        none: tuple[int, ...] = ()
        # Each frame: path prefix, members left, stored states (one per stored layer),
        # override node (or None), overrides ending above this path.
        stack: list[
            tuple[
                str, Iterator[tuple[str, Any]], tuple[Any, ...], _OverrideTrie | None,
                tuple[int, ...],
            ]
        ]  # fmt: skip
        roots = tuple(doc for _, doc in stored)
        stack = [("", iter(shown.items()), roots, _OverrideTrie.of(found), none)]
        while stack:
            prefix, members, at_stored, node, above = stack[-1]
            for name, leaf in members:
                path = f"{prefix}{name}"
                here = tuple(_stored_below(at, name) for at in at_stored)
                child = None if node is None else node.children.get(name)
                if isinstance(leaf, Mapping) and leaf:
                    inherited = above if node is None else above + tuple(node.own)
                    stack.append((path + ".", iter(leaf.items()), here, child, inherited))
                    break
                setters: list[tuple[Layer, str]] = [
                    names[i] for i, h in enumerate(here) if h is not _NOT_STORED
                ]
                at = () if node is None else node.own
                under = () if child is None else child.below
                if above or at or under:  # most fields of most documents: no override
                    covering = sorted((*above, *at, *under))
                    setters.extend((found[i].layer, found[i].origin) for i in covering)
                if not setters:
                    result.append(FieldSource(path, Layer.DEFAULT, None, leaf))
                    continue
                layer, detail = setters[-1]
                shadows = tuple(
                    f"{lower_layer} ({lower_detail})" for lower_layer, lower_detail in setters[:-1]
                )
                result.append(FieldSource(path, layer, detail, leaf, shadows))
            else:
                stack.pop()
        return result
