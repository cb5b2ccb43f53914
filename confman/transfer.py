"""Export and import: stored documents as a versioned, human-editable file.

An export holds documents as written, the base's and each environment's overlays (not
effective values), so that importing it elsewhere rebuilds the same layers::

    format: confman-export/1
    exported_at: '2026-12-02T14:00:00+00:00'
    environments:
    - {name: staging, description: pre-production}
    documents:
    - {environment: base, namespace: cache, key: default, version: 3, data: {...}}
    - {environment: staging, namespace: cache, key: default, version: 1, data: {...}}
    complete: true

``complete: true`` comes last: a YAML file cut short still parses, and without this
marker a truncated export would import as a smaller, valid one.

Secrets are never written in plaintext. By default each is left out and marked
``{"$secret": "omitted"}``; importing such a field keeps the secret the target already
stores there. ``with_secrets`` writes the stored ciphertext ``{"$fernet": "..."}``,
which only the same encryption keys read. A plaintext string where a secret belongs is
refused: it would otherwise land in files, reviews and shell history.

An import is one change set (action ``import``): every document is checked (namespace,
fields, secrets) before anything is written, then the set is judged and committed as a
whole, version-checked against each document's ``version`` unless ``force``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, SecretBytes, SecretStr

from .backup import BadFile, KeysCannotDecrypt
from .change import BASE, Action, ConfigChange
from .environments import ENVIRONMENTS_NAMESPACE, HIDDEN_MARK
from .exceptions import (
    ChangeSetInvalid,
    ConfmanError,
    NotFound,
    SecretsUnavailable,
    ValidationFailed,
)
from .layers import _model_in, unknown_fields
from .secrets import _TOKEN_FIELD

if TYPE_CHECKING:
    from .hub import ConfigHub
    from .manager import ConfigurationManager

__all__ = [
    "BASE_NAME",
    "FORMAT",
    "OMITTED",
    "ImportPlan",
    "ImportRefused",
    "dump_export",
    "export",
    "parse_export",
    "plan_import",
]

FORMAT = "confman-export/1"
BASE_NAME = "base"  # how a file names the base (no environment may be called that)
SECRET_MARK = "$secret"
OMITTED: Mapping[str, str] = {SECRET_MARK: "omitted"}
_TOP = ("format", "exported_at", "environments", "documents", "complete")
_ENTRY = ("environment", "namespace", "key", "version", "data")
_SKIPPED = frozenset({ENVIRONMENTS_NAMESPACE})  # the registry travels as `environments`

Progress = Callable[[str, int, int], None]


class ImportRefused(ValidationFailed):
    """Members of an import were refused by their models or rules; nothing was written.
    The message names the file, each document (by its place in the file) and field."""

    def __init__(self, message: str, failures: Iterable[ValidationFailed]) -> None:
        failures = tuple(failures)
        first = failures[0]
        self.namespace, self.key, self.environment = first.namespace, first.key, None
        self.errors = tuple(e for f in failures for e in f.errors)
        self.source = "import"
        self.failures = failures
        ConfmanError.__init__(self, message)


# --------------------------------------------------------------------------- export


def _omit_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _TOKEN_FIELD in value:
            return dict(OMITTED)
        return {k: _omit_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_omit_secrets(v) for v in value]
    return value


async def export(
    hub: ConfigHub,
    *,
    environment: str | None = None,
    everything: bool = True,
    namespaces: Iterable[str] | None = None,
    with_secrets: bool = False,
) -> dict[str, Any]:
    """The stored documents as an export document (see the module).

    ``everything``: the base and every environment's documents; otherwise the base and
    ``environment``'s (None: the base alone). Deleted documents (tombstones) are left
    out: they hold nothing to import. Hidden overlays (``{"$hidden": true}``) are kept.
    """
    wanted = None if namespaces is None else set(namespaces)
    if environment is not None:
        await hub.check_environment(environment)
    environments = [e for e in await hub.environments() if everything or e.name == environment]
    documents: list[dict[str, Any]] = []
    async for row in hub.store.all_documents():
        if row.data is None or row.namespace in _SKIPPED:
            continue
        if wanted is not None and row.namespace not in wanted:
            continue
        if not everything and row.environment not in (BASE, environment or BASE):
            continue
        data = row.data if with_secrets else _omit_secrets(row.data)
        documents.append(
            {
                "environment": row.environment or BASE_NAME,
                "namespace": row.namespace,
                "key": row.key,
                "version": row.version,
                "data": data,
            }
        )
    return {
        "format": FORMAT,
        "exported_at": datetime.now(UTC).isoformat(),
        "environments": [{"name": e.name, "description": e.description} for e in environments],
        "documents": documents,
        "complete": True,
    }


def dump_export(doc: Mapping[str, Any], fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    text: str = yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, width=100)
    return text


# --------------------------------------------------------------------------- import


def parse_export(text: str, name: str) -> dict[str, Any]:
    """Parse an export (YAML or JSON: JSON is YAML) and check its outline.

    Raises:
        BadFile: not YAML, cut short, another format or version, unknown members.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "cannot be parsed"
        raise BadFile(f"{name}: not valid YAML or JSON{at}: {problem}") from None
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("confman-export/"):
        raise BadFile(f"{name}: not a confman export (no `format: {FORMAT}`)")
    if doc["format"] != FORMAT:
        raise BadFile(f"{name}: export format {doc['format']!r} is not one this reads ({FORMAT})")
    unknown = sorted(str(k) for k in set(doc) - set(_TOP))
    if unknown:
        raise BadFile(f"{name}: unknown member(s) {', '.join(unknown)} (known: {', '.join(_TOP)})")
    if doc.get("complete") is not True:
        raise BadFile(f"{name}: the file ends early (truncated?): no `complete: true` at its end")
    for member in ("environments", "documents"):
        if not isinstance(doc.get(member) or [], list):
            raise BadFile(f"{name}: {member} must be a list")
    return doc


@dataclass(slots=True)
class _Entry:
    where: str  # "FILE: documents[3] cache/default in staging", for every message
    manager: ConfigurationManager[Any]
    environment: str | None
    key: str
    data: dict[str, Any]
    version: int


@dataclass(slots=True)
class ImportPlan:
    """An import checked and ready: `preview` shows its diff, `commit` writes it."""

    hub: ConfigHub
    name: str
    entries: list[_Entry]
    #: Environments the file names that the database lacks, with their descriptions:
    #: `commit` creates them first; `preview` cannot judge their documents yet.
    new_environments: dict[str, str] = field(default_factory=dict)
    force: bool = False

    def _change_set(self, *, actor: str | None, reason: str | None, previewing: bool) -> Any:
        cs = self.hub.change_set(actor=actor, reason=reason or f"import {self.name}")
        for e in self.entries:
            if previewing and e.environment in self.new_environments:
                continue
            cs.set_document(
                e.manager, e.key, e.data, environment=e.environment,
                expected_version=None if self.force else e.version, action=Action.IMPORT,
            )  # fmt: skip
        return cs

    async def preview(self) -> list[ConfigChange[Any]]:
        """The diff, per document (nothing written). Raises as `commit` does."""
        cs = self._change_set(actor=None, reason=None, previewing=True)
        return await self._judged(cs.preview)

    async def commit(
        self, *, actor: str | None = None, reason: str | None = None
    ) -> tuple[str, list[ConfigChange[Any]]]:
        """Create the missing environments, then write every document as one change set;
        returns its id and changes.

        Raises:
            ImportRefused: documents were refused (each named); nothing was written.
            ChangeSetConflict: documents changed since the export (without ``force``).
        """
        for env, description in self.new_environments.items():
            await self.hub.create_environment(env, description=description, actor=actor)
        self.new_environments = {}
        cs = self._change_set(actor=actor, reason=reason, previewing=False)
        return cs.id, await self._judged(cs.commit)

    async def _judged(self, run: Callable[[], Any]) -> list[ConfigChange[Any]]:
        try:
            changes: list[ConfigChange[Any]] = await run()
        except ChangeSetInvalid as e:
            where = {(x.manager.namespace, x.key, x.environment): x.where for x in self.entries}
            # A failure names the base as None or "" (the row key), an overlay by name.
            parts = [
                f"{_where(where, f)}: " + "; ".join(str(err) for err in f.errors)
                for f in e.failures
            ]
            raise ImportRefused(" | ".join(parts), e.failures) from None
        return changes


def _where(where: Mapping[tuple[str, str, str | None], str], f: ValidationFailed) -> str:
    found = where.get((f.namespace, f.key, f.environment or None))
    return found or f"{f.namespace}/{f.key}" + (f" in {f.environment}" if f.environment else "")


async def plan_import(
    hub: ConfigHub,
    doc: Mapping[str, Any],
    name: str,
    *,
    force: bool = False,
    on_progress: Progress | None = None,
) -> ImportPlan:
    """Check every document of a parsed export against the loaded managers and turn it
    into plain documents (secrets decrypted, omitted ones taken from what is stored).

    Raises:
        BadFile: an unknown namespace, environment or field, a plaintext secret, an
            omitted secret with none stored, a malformed entry (file and field named).
        KeysCannotDecrypt: a secret's ciphertext matches no configured key.
    """
    declared: dict[str, str] = {}
    for i, env in enumerate(doc.get("environments") or []):
        if not isinstance(env, dict) or not isinstance(env.get("name"), str):
            raise BadFile(f"{name}: environments[{i}]: expected {{name: ..., description: ...}}")
        declared[env["name"]] = str(env.get("description") or "")
    known = set(hub.known_environments)
    plan = ImportPlan(hub, name, [], {n: d for n, d in declared.items() if n not in known}, force)
    rows = doc.get("documents") or []
    for i, entry in enumerate(rows):
        plan.entries.append(
            await _entry(hub, entry, f"{name}: documents[{i}]", known | set(declared))
        )
        if on_progress:
            on_progress("checking documents", i + 1, len(rows))
    return plan


async def _entry(hub: ConfigHub, entry: Any, where: str, environments: set[str]) -> _Entry:
    if not isinstance(entry, dict):
        raise BadFile(f"{where}: expected {{{', '.join(_ENTRY)}}}")
    unknown = sorted(str(k) for k in set(entry) - set(_ENTRY))
    if unknown:
        raise BadFile(f"{where}: unknown member(s) {', '.join(unknown)}")
    namespace, key, env = (str(entry.get(n) or "") for n in ("namespace", "key", "environment"))
    if not (namespace and key and env) or not all(
        isinstance(entry.get(n), str) for n in ("namespace", "key", "environment")
    ):
        raise BadFile(f"{where}: environment, namespace and key are required (text)")
    target = None if env == BASE_NAME else env
    where = f"{where} {namespace}/{key}" + ("" if target is None else f" in {target}")
    try:
        manager = hub.by_namespace(namespace)
    except NotFound:
        known = ", ".join(sorted(m.namespace for m in hub.managers())) or "none"
        raise BadFile(f"{where}: unknown namespace {namespace!r} (known: {known})") from None
    if target is not None and target not in environments:
        raise BadFile(f"{where}: unknown environment {target!r} (neither in the file nor here)")
    version = entry.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BadFile(f"{where}: version must be a whole number >= 0")
    data = entry.get("data")
    if not isinstance(data, dict):
        raise BadFile(f"{where}: data must be a mapping (a document)")
    if data.get(HIDDEN_MARK) is not True:  # a hidden overlay is a marker, not fields
        bad = unknown_fields(manager.model, data)
        if bad:
            raise BadFile(f"{where}: unknown field(s) {', '.join(bad)} for {namespace}")
        stored = await _stored(hub, manager, key, target)
        data = _secrets(hub, manager.model, data, stored, where, "")
        _no_markers(data, where, "")
    return _Entry(where, manager, target, key, data, version)


async def _stored(
    hub: ConfigHub, manager: ConfigurationManager[Any], key: str, environment: str | None
) -> dict[str, Any] | None:
    row = await hub.store.load(manager.namespace, key, environment=environment or BASE)
    if row is None or row.data is None:
        return None
    return manager._decode(row.data, key, row.version)


def _secret_kind(annotation: Any) -> str | None:
    """``"one"`` for a secret field (optional or not), ``"map"`` for dict[str, secret]."""
    import types
    import typing

    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if annotation in (SecretStr, SecretBytes):
        return "one"
    if origin in (typing.Union, types.UnionType):
        kinds = {_secret_kind(a) for a in args if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if origin is typing.Annotated:
        return _secret_kind(args[0])
    if origin is dict and len(args) == 2 and _secret_kind(args[1]) == "one":
        return "map"
    return None


def _secrets(
    hub: ConfigHub,
    model: type[BaseModel],
    data: dict[str, Any],
    stored: dict[str, Any] | None,
    where: str,
    prefix: str,
) -> dict[str, Any]:
    """``data`` with each secret field's ciphertext decrypted and each omitted one
    replaced by the stored value (walked along the model, as `unknown_fields` is)."""
    out = dict(data)
    for name, value in data.items():
        info = model.model_fields.get(name)
        if info is None:
            continue
        path = f"{prefix}{name}"
        here = stored.get(name) if isinstance(stored, dict) else None
        kind = _secret_kind(info.annotation)
        if kind == "one":
            out[name] = _secret(hub, value, here, where, path)
        elif kind == "map" and isinstance(value, dict):
            out[name] = {
                k: _secret(hub, v, here.get(k) if isinstance(here, dict) else None, where,
                           f"{path}.{k}")
                for k, v in value.items()
            }  # fmt: skip
        elif (sub := _model_in(info.annotation)) is not None and isinstance(value, dict):
            out[name] = _secrets(hub, sub, value, here, where, path + ".")
    return out


def _secret(hub: ConfigHub, value: Any, stored: Any, where: str, path: str) -> Any:
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {_TOKEN_FIELD}:
        try:
            return hub.keyring.decrypt(str(value[_TOKEN_FIELD]))
        except SecretsUnavailable:
            raise KeysCannotDecrypt(
                f"{where}: field {path}: its ciphertext cannot be decrypted with the "
                "configured encryption keys (CONFMAN_ENCRYPTION_KEY must hold the keys "
                "of the exporting database); nothing was written"
            ) from None
    if isinstance(value, dict) and value == OMITTED:
        if stored is None:
            raise BadFile(
                f"{where}: field {path}: the secret was omitted and none is stored here; "
                "export with --with-secrets, or remove the field"
            )
        return stored
    if isinstance(value, str):
        raise BadFile(
            f"{where}: field {path}: a plaintext secret; a file holds secrets only as "
            'ciphertext ({"$fernet": ...}, from `confman export --with-secrets`) or '
            'omitted ({"$secret": "omitted"}); set it with `confman set` instead'
        )
    raise BadFile(f'{where}: field {path}: not a secret ({{"$fernet": ...}} expected)')


def _no_markers(value: Any, where: str, path: str) -> None:
    """Ciphertext or an omission marker left where no secret field is: refuse it rather
    than store a token as if it were the value."""
    if isinstance(value, dict):
        if _TOKEN_FIELD in value or SECRET_MARK in value:
            raise BadFile(f"{where}: field {path or '(document)'}: a secret marker at a field "
                          "that is not a secret")  # fmt: skip
        for k, v in value.items():
            _no_markers(v, where, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_markers(v, where, f"{path}[{i}]")
