"""The values confman hands out about changes: stream events, history rows, provenance."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from .cluster.fleet import FleetReport

__all__ = ["BASE", "Action", "ChangeRecord", "ConfigChange", "FieldSource", "Layer"]

BASE = ""
"""How the store spells the base (the documents every environment inherits). Public
APIs say ``None`` for it: ``update(..., environment=None)`` writes the base."""

T = TypeVar("T", bound=BaseModel)


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ROLLBACK = "rollback"
    IMPORT = "import"
    PROMOTE = "promote"


@dataclass(frozen=True, slots=True)
class ConfigChange(Generic[T]):
    """One committed change as an instance saw it.

    ``old``/``new`` are effective values (overrides applied); ``new`` is ``None`` when a
    collection item was deleted, ``old`` is ``None`` when it was created.
    ``changed_fields`` are the dotted paths whose *effective* value changed; ``pinned``
    are the stored paths this write changed that an override hides, so the writer can
    see at once why the effective value did not move.

    ``unchanged`` is ``True`` only on what a write (`ConfigurationManager.update`,
    ``rollback``) returns when it would have stored exactly the stored document: then
    nothing was committed, published or logged, ``version`` is the current version,
    ``seq`` is 0, ``old`` and ``new`` are both the current value, ``changed_fields`` and
    ``stored_changed`` are empty, and `effective` is ``False``. Such a change never
    appears on ``changes``.
    """

    namespace: str
    key: str
    old: T | None
    new: T | None
    version: int
    seq: int
    action: Action
    changed_fields: tuple[str, ...]
    actor: str | None
    reason: str | None
    origin: str
    at: datetime
    pinned: tuple[str, ...] = ()
    stored_changed: tuple[str, ...] = ()
    """The stored paths the change wrote: the change log's ``changed`` for this seq."""
    fleet: FleetReport | None = None
    """With ``update(..., wait_for_instances=...)``: which instances took the change."""
    unchanged: bool = False
    """The write stored nothing: the document already was what it asked for."""
    environment: str | None = None
    """Whose document changed: ``None`` for the base, else that environment's overlay
    (or, in a namespace that does not inherit, that environment's own document).
    ``version`` counts per (environment, namespace, key)."""
    change_set: str | None = None
    """The change set it was committed in (None: a write of one document). An instance
    applies a set whole and only then emits its members, one after another."""
    written: tuple[dict[str, Any] | None] | None = field(default=None, compare=False, repr=False)
    """``(document,)``: the stored document this change wrote, in stored form (secrets
    encrypted; None: deleted), when the instance had it at hand; else None. What a
    server sends in the change's event without reading it back."""
    per_environment: tuple[ConfigChange[T], ...] = ()
    """Only on a preview (`ChangeSet.preview`, ``dry_run``) of a base write: the change
    as each environment that inherits it would see it (the stored layers: the new base
    under that environment's overlay, the set's own overlays included), one entry per
    environment whose effective value it moves, each naming that ``environment``."""

    @property
    def effective(self) -> bool:
        """Whether readers see a different value after this change."""
        if self.unchanged:
            return False
        return bool(self.changed_fields) or (self.old is None) != (self.new is None)


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One row of the change log (audit trail), secrets masked."""

    seq: int
    namespace: str
    key: str
    version: int
    action: Action
    actor: str | None
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    changed: tuple[str, ...]
    origin: str
    committed_at: datetime
    environment: str | None = None  # None: the base
    change_set: str | None = None  # the set it was committed in; None: a write of one


class Layer(enum.StrEnum):
    DEFAULT = "default"
    DATABASE = "database"
    ENV_FILE = "env_file"
    ENVIRONMENT = "environment"


@dataclass(frozen=True, slots=True)
class FieldSource:
    """Where one effective field came from.

    ``detail`` names the source precisely: ``"v3"`` for the database, the file path for
    an env file, the variable name for the environment. ``shadows`` lists lower layers
    that also set the field and lost, e.g. a database value pinned by a variable.
    """

    path: str
    layer: Layer
    detail: str | None
    value: Any
    shadows: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        if self.layer in (Layer.ENV_FILE, Layer.ENVIRONMENT) and self.detail:
            where = self.detail
        else:
            where = f"{self.layer}" + (f" ({self.detail})" if self.detail else "")
        hidden = f"; overrides {', '.join(self.shadows)}" if self.shadows else ""
        return f"{self.path} = {self.value!r}  <- {where}{hidden}"
