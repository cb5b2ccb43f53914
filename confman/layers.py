"""Layering: model defaults < database < env files < process environment.

`Layering` holds one namespace's overrides, checks them against the model at start-up,
merges them over a stored document, and explains where each effective field came from.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Sequence
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
    """
    if model.model_config.get("extra") == "allow":
        return []
    unknown: list[str] = []
    for path, _ in leaf_items(doc):
        parts = path.split(".")
        if _resolve_path(model, parts, exact=True) is None:
            unknown.append(path)
    return unknown


def _covers(paths: Iterable[str], path: str) -> bool:
    return any(p == path or path.startswith(p + ".") or p.startswith(path + ".") for p in paths)


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
        paths = [e.path for e in errors]
        blamed = [o for o in found if _covers([p for p in paths if p], o.dotted)]
        unexplained = [p for p in paths if not p or not _covers([o.dotted for o in blamed], p)]
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
        self, key: str, value: T, stored: dict[str, Any], *, version: int
    ) -> list[FieldSource]:
        stored_paths = [p for p, _ in leaf_items(stored)]
        found = self.overrides(key)
        shown = mask_document(value.model_dump(mode="python"))
        result: list[FieldSource] = []
        for path, leaf in leaf_items(shown):
            setters: list[tuple[Layer, str]] = []
            if _covers(stored_paths, path):
                setters.append((Layer.DATABASE, f"v{version}"))
            setters.extend((o.layer, o.origin) for o in found if _covers([o.dotted], path))
            if not setters:
                result.append(FieldSource(path, Layer.DEFAULT, None, leaf))
                continue
            layer, detail = setters[-1]
            shadows = tuple(
                f"{lower_layer} ({lower_detail})" for lower_layer, lower_detail in setters[:-1]
            )
            result.append(FieldSource(path, layer, detail, leaf, shadows))
        return result
