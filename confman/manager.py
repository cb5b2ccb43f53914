"""`ConfigurationManager[T]`: one typed configuration area, read from memory, written
through validated, version-checked, audited transactions, observed as Rx streams.

Define one in three lines::

    class FlagsManager(ConfigurationManager[Flags]):
        namespace = "flags"
        model = Flags
        keyed = False

and get it, loaded, from a hub: ``hub.manager(FlagsManager)``.

Environments: an instance holds its own scope (the base, or for a namespace that does
not inherit, its environment's documents) and, where the namespace inherits, its
environment's overlays on top; it reads any other environment from the database
(`resolve`) and writes any (``environment=``), validating each write on the effective
value of every environment it affects. See docs/environments.md.

Why one long module: the read path, the write path (patch, overlay, validate, limits,
no-op check, commit, emit; `_prepare` and `_finish`, which change sets share) and the
apply path (notices, catch-up) share the per-key entries, with their base and overlay
slots, and their invariants (strictly increasing versions per document, one emission per
version), and are kept together until the entry-storage strategy planned in
``shared/STYLE.md`` separates them: the overlay slot and the reads of other environments
are its first candidates to move out.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import enum
import logging
import re
import sys
import typing
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

import reactivex
from pydantic import BaseModel
from reactivex import Observable, abc

from .bus import ChangeNotice
from .change import BASE, Action, ChangeRecord, ConfigChange, FieldSource, Layer
from .environments import hidden, is_hidden
from .exceptions import (
    ConcurrencyConflict,
    ConfigSourceError,
    ConfmanError,
    FieldError,
    NotFound,
    SecretsUnavailable,
    ValidationFailed,
)
from .layers import Layering, unknown_fields
from .patch import (
    changed_paths,
    diff_patch,
    merge_patch,
    nul_paths,
    remove_paths,
    restrict,
)
from .secrets import (
    decrypt_document,
    encrypt_document,
    mask_document,
    masked_paths,
    plain_document,
)
from .store import LoggedChange, StoredDocument, Write
from .streams import IsolatingSubject

if TYPE_CHECKING:
    from .hub import ConfigHub

__all__ = ["DEFAULT_KEY", "OWN", "ConfigurationManager", "ManagerStats", "Problem", "Resolved"]

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

DEFAULT_KEY = "default"
MAX_KEY_LENGTH = 255  # config_documents.key and the audit columns are VARCHAR(255)
_NUL_MESSAGE = "contains a NUL character, which PostgreSQL cannot store"
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
# Hangul fillers and the blank Braille pattern: letters (Lo, So) that draw nothing.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_INVISIBLE_MESSAGE = (
    "must show at least one visible character (not only whitespace, zero-width, "
    "control or format characters)"
)
_NAMESPACE = re.compile(r"[a-z](?:_?[a-z0-9])*")
log = logging.getLogger("confman.manager")

#: While a write to an environment this instance does not hold is validated: that
#: environment, so that rules across managers (`validate_write`) judge it by that
#: environment's values (`rule_view`), not by this instance's own.
_RULE_ENVIRONMENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "confman_rule_environment", default=None
)
#: While a change set's members are built: `validate_write` is left to the set, which
#: runs it once every member's new value is known.
_RULES_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "confman_rules_deferred", default=False
)
#: While a change set's rules run: every member's new effective value, by (namespace,
#: environment the rule judges (None: this instance's own), key), so that each rule sees
#: the state after the whole set.
_PENDING: contextvars.ContextVar[dict[tuple[str, str | None, str], Any] | None] = (
    contextvars.ContextVar("confman_pending_set", default=None)
)

Change = Mapping[str, Any] | BaseModel | Callable[[Any], Any]
"""A partial document (merge patch), a whole value, or a function from value to value."""


_UNKNOWN: Any = object()  # a stored form not at hand


class _Own(enum.Enum):
    OWN = "own"


OWN = _Own.OWN
"""``environment=OWN`` (the default of every read and write): the hub's own environment
for this namespace; the base on a hub without one."""
Environment = str | None | _Own
"""Where a write goes: ``None`` the base, a name that environment, `OWN` the hub's."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A stored document or override this instance cannot use; the last valid value serves."""

    namespace: str
    key: str
    version: int
    source: str
    errors: tuple[FieldError, ...]
    seen_at: datetime

    def __str__(self) -> str:
        details = "; ".join(str(e) for e in self.errors)
        return f"{self.namespace}/{self.key} v{self.version} ({self.source}): {details}"


@dataclass(slots=True)
class ManagerStats:
    writes: int = 0
    unchanged_writes: int = 0  # writes that would have stored what was stored
    conflicts: int = 0
    validation_failures: int = 0
    notifications: int = 0
    subscriber_errors: int = 0


@dataclass(slots=True)
class _Entry(Generic[T]):
    version: int  # last version seen (0: never stored)
    stored: dict[str, Any] | None  # decrypted stored document; None: absent or deleted
    effective: T | None  # what readers get; None: no such item
    updated_at: datetime | None = None
    # When the stored version was refused: (version, document) that ``effective`` came
    # from, so explain() tells the truth; None when ``effective`` is the stored version.
    serving: tuple[int, dict[str, Any] | None] | None = None
    # The hub environment's overlay over ``stored`` (inheriting namespaces on a hub with
    # an environment): its version, plain document (None: none), stored form (for the
    # snapshot) and, as ``serving``, what ``effective`` came from while it is refused.
    overlay_version: int = 0
    overlay: dict[str, Any] | None = None
    overlay_raw: dict[str, Any] | None = None
    overlay_serving: tuple[int, dict[str, Any] | None] | None = None
    # (``stored``, its change-log form) as the write that stored it masked it: the next
    # write's ``before`` without validating it again. Trusted while ``stored`` is that
    # very document; whatever replaces ``stored`` leaves it stale, hence ignored.
    masked: tuple[dict[str, Any], dict[str, Any] | None] | None = None


@dataclass(frozen=True, slots=True)
class Resolved(Generic[T]):
    """One key's stored effective value in one environment (defaults, base, overlay: no
    instance's env files or variables), with where each field came from."""

    namespace: str
    key: str
    environment: str | None
    value: T | None  # None: no such item there (absent, deleted or hidden)
    base_version: int
    version: int  # the environment's own document (an overlay); 0: it has none
    hidden: bool
    sources: tuple[FieldSource, ...]


@dataclass(slots=True)
class _Candidate(Generic[T]):
    value: T | None
    effective: T | None
    plain: dict[str, Any] | None
    stored_form: dict[str, Any] | None
    masked: dict[str, Any] | None


@dataclass(slots=True)
class _Origin:
    actor: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class _Step(Generic[T]):
    """One prepared write: validated, not yet committed (see `ConfigurationManager._prepare`)."""

    manager: ConfigurationManager[T]
    key: str
    target: str  # the environment written ('' the base)
    slot: int | None  # what this instance holds of it: 0 own scope, 1 overlay, None nothing
    write: Write
    candidate: _Candidate[T]
    old: T | None  # the effective value before (None: no such item)
    unchanged: bool  # the write would store what is stored
    origin: _Origin
    at: datetime | None  # when the document last changed


class _Current(Generic[T]):
    """``manager.current``: one attribute lookup, the cheapest read Python has.

    The value lives in the instance's ``__dict__`` under ``current`` (set by
    `ConfigurationManager._set_current` whenever it changes). This descriptor defines no
    ``__set__``, so the instance attribute shadows it; it only answers where no value was
    ever set, i.e. on collections, and there with a clear error.
    """

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Current[T]: ...

    @overload
    def __get__(self, obj: ConfigurationManager[T], owner: type[Any]) -> T: ...

    def __get__(self, obj: ConfigurationManager[T] | None, owner: type[Any]) -> T | _Current[T]:
        if obj is None:
            return self
        raise TypeError(f"{obj.namespace} is a collection; use get(key)")


def _key(key: str) -> str:
    """``key`` interned: the read path looks entries up by the caller's string, often a
    literal (interned), and a dict finds an identical key without comparing characters.
    Keys read from the database are equal strings, not the same object: without this a
    read of a loaded document costs a string comparison more (N1 measured it)."""
    return sys.intern(key)


def _invisible(text: str) -> bool:
    """Whether ``text`` shows nothing: only whitespace, separators, control and format
    (zero-width) characters, or the letters that render as blanks."""
    return all(
        c.isspace() or c in _BLANK_LETTERS or unicodedata.category(c) in _INVISIBLE_CATEGORIES
        for c in text
    )


def _check_write_labels(namespace: str, key: str, origin: _Origin, action: Action) -> None:
    """Refuse a key, actor or reason the database cannot hold or a reader cannot see.

    A blank or invisible key is still deletable: it may have been stored before confman
    refused such keys, and deleting it is how it goes away.
    """
    actor, reason = origin.actor, origin.reason
    if (
        key[:1].isascii()
        and key[:1].isalnum()  # a visible first character: not blank, not invisible
        and len(key) <= MAX_KEY_LENGTH
        and "\x00" not in key
        and (actor is None or (len(actor) <= MAX_KEY_LENGTH and "\x00" not in actor))
        and (reason is None or "\x00" not in reason)
    ):
        return  # what nearly every write is: nothing below would refuse it
    labels = (("key", key), ("actor", actor), ("reason", reason))
    refused = [
        FieldError(name, f"is longer than {MAX_KEY_LENGTH} characters")
        for name, value in labels[:2]
        if value is not None and len(value) > MAX_KEY_LENGTH
    ] + [FieldError(name, _NUL_MESSAGE) for name, value in labels if value and "\x00" in value]
    if not key:
        refused.append(FieldError("key", "must not be empty"))
    elif action is not Action.DELETE and _invisible(key):
        refused.append(FieldError("key", _INVISIBLE_MESSAGE))
    if refused:
        shown = key[:40].replace("\x00", "\\0")
        if _invisible(shown):  # escaped, so that the message shows what the key holds
            shown = shown.encode("unicode_escape").decode("ascii")
        raise ValidationFailed(namespace, shown, refused, source=str(action))


class ConfigurationManager(Generic[T]):
    """Base of every manager. Subclasses set three class variables.

    Attributes:
        namespace: the configuration area's name; also the variable prefix
            ``CONFMAN_<NAMESPACE>__``.
        model: the pydantic model every document of the namespace must satisfy.
        keyed: ``False`` for a singleton (one document, key ``"default"``); ``True`` for a
            collection of documents keyed by item id.
        requires: managers whose values this one's rules read; the hub loads them first.
    """

    namespace: ClassVar[str]
    model: ClassVar[type[BaseModel]]
    keyed: ClassVar[bool] = False
    requires: ClassVar[tuple[type[ConfigurationManager[Any]], ...]] = ()
    rules_read_others: ClassVar[bool] = False
    """Whether `validate_write` reads other managers (a change set then catches up
    before judging, so that the rules see the newest of them)."""
    inherits: ClassVar[bool] = True
    """Whether environments inherit the base's documents. ``False`` for credentials:
    each environment then holds its own documents, and none of the base's (a key issued
    in staging never authenticates in production)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        namespace = cls.__dict__.get("namespace")
        if namespace is not None and not _NAMESPACE.fullmatch(namespace):
            raise TypeError(
                f"{cls.__name__}.namespace {namespace!r} must be lower-case letters, digits "
                "and single underscores, start with a letter, and be at most 100 characters "
                "(it also names CONFMAN_<NAMESPACE>__ variables)"
            )
        model = cls.__dict__.get("model")
        if model is not None:
            declared = [
                arg
                for base in getattr(cls, "__orig_bases__", ())
                if typing.get_origin(base) is ConfigurationManager
                for arg in typing.get_args(base)
            ]
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise TypeError(f"{cls.__name__}.model must be a pydantic model class")
            if declared and isinstance(declared[0], type) and not issubclass(model, declared[0]):
                raise TypeError(
                    f"{cls.__name__}.model is {model.__name__}, but the class is declared "
                    f"ConfigurationManager[{declared[0].__name__}]"
                )

    def __init__(self, hub: ConfigHub) -> None:
        self.hub = hub
        self.stats = ManagerStats()
        self._model: type[T] = self.model  # type: ignore[assignment]
        self._layering: Layering[T] = Layering(
            self._model, self.namespace, keyed=self.keyed, sources=hub.sources
        )
        self._entries: dict[str, _Entry[T]] = {}
        self._problems: dict[str, Problem] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._subject: IsolatingSubject[ConfigChange[T]] = IsolatingSubject(
            self._count_subscriber_error
        )
        # Which documents this instance holds: its own scope (the base, or for a
        # namespace that does not inherit, the hub's environment) and, when it inherits
        # on a hub with an environment, that environment's overlays on top.
        own = hub.environment
        self._scope: str = BASE if self.inherits or own is None else own
        self._overlay_env: str | None = own if self.inherits else None
        self._bare: Layering[T] | None = None  # no overrides: stored layers only

    def __repr__(self) -> str:
        return f"<{type(self).__name__} namespace={self.namespace!r}>"

    # ----------------------------------------------------------------- reads (memory)

    current: _Current[T] = _Current()
    """The effective value of a singleton namespace. Memory only, never I/O."""

    def _set_current(self, value: T | None) -> None:
        if value is not None:
            self.__dict__["current"] = value

    def get(self, key: str = DEFAULT_KEY) -> T:
        """The effective value of ``key``. Memory only, never I/O.

        Raises:
            NotFound: no such item.
        """
        try:
            value = self._entries[key].effective
        except KeyError:
            value = None
        if value is None:
            raise NotFound(f"{self.namespace} has no item {key!r}")
        return value

    def find(self, key: str) -> T | None:
        """Like `get`, but ``None`` for a missing item."""
        entry = self._entries.get(key)
        return None if entry is None else entry.effective

    async def fetch(self, key: str) -> T | None:
        """The effective value of ``key``, from the database if it is not in memory.

        Managers that load their whole namespace (all but lazily loaded ones such as
        virtual keys) hold every key, so this is `find` without I/O.
        """
        return self.find(key)

    def keys(self) -> list[str]:
        return [k for k, e in self._entries.items() if e.effective is not None]

    def items(self) -> Iterator[tuple[str, T]]:
        for key, entry in list(self._entries.items()):
            if entry.effective is not None:
                yield key, entry.effective

    def __contains__(self, key: object) -> bool:
        entry = self._entries.get(key) if isinstance(key, str) else None
        return entry is not None and entry.effective is not None

    def version(self, key: str = DEFAULT_KEY, *, environment: Environment = OWN) -> int:
        """The version this instance has applied of the document a write to
        ``environment`` would change (0: never stored): by default its own environment's
        overlay where it has one, else the base.

        Raises:
            ConfmanError: ``environment`` is one this instance does not hold.
        """
        slot = self._slot_of(self._target_name(environment))
        if slot is None:
            raise ConfmanError(
                f"this instance holds {self._describe_scope()} of {self.namespace}, not "
                f"{environment!r}; use await resolve(key, environment=...)"
            )
        entry = self._entries.get(key)
        if entry is None:
            return 0
        return entry.version if slot == 0 else entry.overlay_version

    @property
    def environment(self) -> str | None:
        """The environment whose documents this instance applies over the base (or, for
        a namespace that does not inherit, instead of it); None: the base alone."""
        return self.hub.environment

    def _target_name(self, environment: Environment) -> str:
        """A write's or read's environment as the store spells it."""
        if environment is OWN:
            own = self.hub.environment
            return BASE if own is None else own
        return BASE if environment is None else environment

    def _slot_of(self, environment: str) -> int | None:
        """0: this instance's own scope; 1: its overlays; None: not held here."""
        if environment == self._scope:
            return 0
        if environment == self._overlay_env:
            return 1
        return None

    def _concerns(self, environment: str) -> bool:
        """Whether a change to ``environment``'s document changes what this instance
        serves: the base and its own environment's, nothing of any other."""
        return environment == self._scope or environment == self._overlay_env

    def _describe_scope(self) -> str:
        if self._overlay_env is not None:
            return f"the base and {self._overlay_env}'s overlays"
        return "the base" if self._scope == BASE else f"{self._scope}'s documents"

    @staticmethod
    def _label(environment: str, version: int) -> str:
        return f"{environment or 'base'} v{version}"

    def problems(self) -> list[Problem]:
        """Stored documents or overrides this instance refused, newest first."""
        return sorted(self._problems.values(), key=lambda p: p.seen_at, reverse=True)

    def explain(self, key: str = DEFAULT_KEY) -> list[FieldSource]:
        """For each effective field, the layer it came from and the layers it hides
        (secrets masked): ``database (base v7)``, ``database (production v3)``, an env
        file, a variable. An item its environment hides explains as one entry saying so.
        """
        entry = self._entries.get(key)
        if entry is not None and entry.effective is None and is_hidden(entry.overlay):
            assert self._overlay_env is not None
            shadowed = (f"database ({self._label(BASE, entry.version)})",)
            where = self._label(self._overlay_env, entry.overlay_version) + ", hidden"
            return [FieldSource("", Layer.DATABASE, where, None, shadowed)]
        value = self.get(key)
        return self._layering.explain(key, value, self._layers_of(entry))

    def _layers_of(self, entry: _Entry[T] | None) -> list[tuple[str, Mapping[str, Any]]]:
        """The stored documents under ``entry``'s effective value, lowest first."""
        if entry is None:
            return []
        version, stored = entry.serving if entry.serving is not None else (
            entry.version, entry.stored
        )  # fmt: skip
        layers: list[tuple[str, Mapping[str, Any]]] = []
        if stored is not None:
            layers.append((self._label(self._scope, version), stored))
        if self._overlay_env is not None:
            over_version, over = entry.overlay_serving if entry.overlay_serving else (
                entry.overlay_version, entry.overlay
            )  # fmt: skip
            if over is not None and not is_hidden(over):
                layers.append((self._label(self._overlay_env, over_version), over))
        return layers

    # ----------------------------------------------------------------- streams

    @property
    def changes(self) -> Observable[ConfigChange[T]]:
        """Hot stream of every change this instance applies (effective or not).

        Per key, versions are strictly increasing. Delivery is synchronous on the hub's
        event loop; use ``ops.observe_on(scheduler)`` to move it elsewhere.
        """
        return self._subject

    def observe(self, key: str = DEFAULT_KEY) -> Observable[T]:
        """The effective value of ``key`` now (if it exists), then each distinct new one.

        A deleted collection item emits nothing; watch `changes` for deletions.
        """
        return self._distinct(key, None)

    def select(self, fn: Callable[[T], R], key: str = DEFAULT_KEY) -> Observable[R]:
        """`observe` mapped through ``fn``, emitting only when the derived value changes.

        If ``fn`` raises for a value, that value is skipped (logged and counted as a
        subscriber error) and the subscription carries on.
        """
        return self._distinct(key, fn)

    def _distinct(self, key: str, fn: Callable[[T], Any] | None) -> Observable[Any]:
        # Built by hand rather than from operators: in an operator chain an exception in
        # ``fn`` or in the subscriber ends the subscription (the Rx contract), and the
        # first value would be delivered inside subscribe() where nothing guards it.
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            last: list[Any] = []

            def push(value: T) -> None:
                try:
                    derived = value if fn is None else fn(value)
                    if last and last[0] == derived:
                        return
                    last[:] = [derived]
                    observer.on_next(derived)
                except Exception as e:
                    log.exception("a %s subscriber raised; it stays subscribed", self.namespace)
                    self._count_subscriber_error(e)

            def on_change(change: ConfigChange[T]) -> None:
                if change.key == key and change.new is not None:
                    push(change.new)

            found = self.find(key)
            if found is not None:
                push(found)
            return self._subject.subscribe(
                on_change, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return reactivex.create(subscribe)

    def _count_subscriber_error(self, _: BaseException) -> None:
        self.stats.subscriber_errors += 1

    # ----------------------------------------------------------------- writes

    def validate(
        self,
        change: Mapping[str, Any] | T | Callable[[T], T],
        *,
        key: str = DEFAULT_KEY,
        replace: bool = False,
        environment: Environment = OWN,
    ) -> T:
        """Preview: the effective value ``change`` would give ``key``; nothing is written.

        ``environment`` must be one this instance holds (its own, or the base); see
        `resolve` for the others.

        Raises:
            ValidationFailed: the change is refused (field paths and messages).
        """
        slot = self._slot_of(self._target_name(environment))
        if slot is None:
            raise ConfmanError(f"this instance holds {self._describe_scope()}, not {environment!r}")
        entry = self._entries.get(key)
        if slot == 1:
            parent = entry.stored if entry else None
            before = entry.overlay if entry else None
            plain = self._apply_change(
                before, change, key, replace=replace, parent=parent, overlaying=True
            )
            candidate = self._candidate(key, plain, source="validate", parent=parent,
                                        overlaying=True)  # fmt: skip
        else:
            plain = self._apply_change(entry.stored if entry else None, change, key,
                                       replace=replace)  # fmt: skip
            candidate = self._candidate(key, plain, source="validate",
                                        overlay=entry.overlay if entry else None)  # fmt: skip
        if candidate.effective is None:
            raise NotFound(f"{self.namespace} has no item {key!r} there")
        return candidate.effective

    async def update(
        self,
        change: Mapping[str, Any] | T | Callable[[T], T],
        *,
        key: str = DEFAULT_KEY,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        retries: int = 0,
        wait_for_instances: float | None = None,
        replace: bool = False,
        environment: Environment = OWN,
    ) -> ConfigChange[T]:
        """Change ``key`` and return the committed change.

        ``environment`` says which document: `OWN` (the default) the hub's own
        environment's (its overlay, where the namespace inherits), ``None`` the base, a
        name that environment's. A change to an overlay is a merge patch onto the
        overlay (``null`` removes a field from it, so the field inherits again); a whole
        ``T``, ``replace``, or a function stores only the fields that differ from the
        base. Validation runs on the effective value of every environment the write
        affects: a base write that would make an overlay's result invalid is refused,
        naming the environment.

        A change that leaves the stored document as it is commits, publishes and logs
        nothing: it returns a `ConfigChange` with ``unchanged=True`` at the current
        version (see `ConfigChange`), and ``changes`` emits nothing.

        ``change`` is a partial dict (JSON Merge Patch onto the stored document), a whole
        ``T`` (replaces the stored document), or a function ``T -> T``. A function receives
        the *stored* value (defaults < database, without overrides), so environment
        overrides never leak into the database.

        Args:
            expected_version: fail with `ConcurrencyConflict` unless this is the stored
                version (0: must not exist yet). Without it, the version this instance
                last saw is checked, so a patch built on a stale value is never written.
            retries: after a conflict, reload the newest value and try again this many
                times (only without ``expected_version``).
            wait_for_instances: after the commit, wait up to this many seconds for every
                live instance of the cluster to answer; the returned change then carries
                a `FleetReport` in ``fleet`` (applied, refused with reasons, missing).
            replace: take a mapping ``change`` as the whole new document instead of a
                merge patch (what an HTTP ``PUT`` means); absent fields get defaults.

        Raises:
            ValidationFailed: refused before touching the database.
            ConcurrencyConflict: another writer won.
            NotFound: a collection item that does not exist (use `create`).
        """
        if self.keyed and key == DEFAULT_KEY and DEFAULT_KEY not in self:
            raise NotFound(f"{self.namespace} is a collection; name the key to update")
        attempts = 1 + (retries if expected_version is None else 0)
        for attempt in range(attempts):
            try:
                committed = await self._write(
                    key,
                    lambda stored, parent, over: self._apply_change(
                        stored, change, key, replace=replace, parent=parent, overlaying=over
                    ),
                    action=Action.UPDATE,
                    expected_version=expected_version,
                    origin=_Origin(actor, reason),
                    must_exist=self.keyed,
                    environment=environment,
                    replies=wait_for_instances is not None,
                )
            except ConcurrencyConflict:
                if attempt + 1 == attempts:
                    raise
                slot = self._slot_of(self._target_name(environment))
                if slot is not None:
                    await self._refresh_from_store(key, slot=slot)
                continue
            if wait_for_instances is None or committed.unchanged:
                return committed  # an unchanged write sent nothing for instances to take
            report = await self.hub.wait_for_instances(committed, wait_for_instances)
            return dataclasses.replace(committed, fleet=report)
        raise AssertionError("unreachable")

    async def create(
        self,
        key: str,
        value: Mapping[str, Any] | T,
        *,
        actor: str | None = None,
        reason: str | None = None,
        environment: Environment = OWN,
    ) -> ConfigChange[T]:
        """Create a collection item (in ``environment``: see `update`).

        Raises:
            ConcurrencyConflict: the item already exists there.
        """
        if not self.keyed:
            raise TypeError(f"{self.namespace} is a singleton; use update()")
        return await self._write(
            key,
            lambda _stored, parent, over: self._apply_change(
                None, value, key, source="create", replace=over, parent=parent, overlaying=over
            ),
            action=Action.CREATE,
            expected_version=None,
            origin=_Origin(actor, reason),
            must_not_exist=True,
            environment=environment,
        )

    async def delete(
        self,
        key: str = DEFAULT_KEY,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        environment: Environment = OWN,
    ) -> ConfigChange[T]:
        """Delete ``key``: a singleton falls back to its defaults; an item disappears.

        In an environment over an inheriting base: an item the base holds is hidden
        there (a tombstone overlay, which `explain` shows; `reset` brings it back), an
        item only the environment holds is removed, and a singleton's overlay is
        dropped (it inherits the base again).
        """

        return await self._write(
            key,
            lambda _stored, parent, over: self._gone(parent, over),
            action=Action.DELETE,
            expected_version=expected_version,
            origin=_Origin(actor, reason),
            must_exist=True,
            environment=environment,
        )

    async def reset(
        self,
        key: str = DEFAULT_KEY,
        fields: Iterable[str] | None = None,
        *,
        environment: Environment = OWN,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> ConfigChange[T]:
        """Remove ``fields`` (dotted paths; all of them when None) from ``key``'s overlay
        in ``environment``, so that they inherit from the base again. Dropping the whole
        overlay also shows an item the environment hid.

        Raises:
            ConfmanError: ``environment`` is the base, or the namespace does not inherit.
            NotFound: the environment has no overlay for ``key``.
        """
        target = self._target_name(environment)
        if target == BASE or not self.inherits:
            raise ConfmanError(
                f"reset removes fields from an environment's overlay; {self.namespace} "
                + ("in the base has none" if self.inherits else "does not inherit")
            )
        paths = None if fields is None else list(fields)

        def without(stored: dict[str, Any] | None, _parent: Any, _over: bool) -> Any:
            if stored is None:
                raise NotFound(f"{self.namespace}/{key} has no overlay in {target}")
            if paths is None or is_hidden(stored):
                return None
            left = remove_paths(stored, paths)
            return left or None

        return await self._write(
            key,
            without,
            action=Action.UPDATE,
            expected_version=expected_version,
            origin=_Origin(actor, reason or "reset to base"),
            environment=environment,
            resetting=True,
        )

    async def rollback(
        self,
        key: str = DEFAULT_KEY,
        *,
        to_version: int,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        environment: Environment = OWN,
    ) -> ConfigChange[T]:
        """Write a new version whose content equals ``to_version``'s (action ``rollback``);
        versions count per environment (``environment``: see `update`).

        The old content is validated again: a version the current model refuses cannot
        be restored. When the stored document already equals ``to_version``'s, nothing
        is written and the change returned has ``unchanged=True`` (as `update`).

        Raises:
            NotFound: ``key`` has no version ``to_version``.
            ValidationFailed: the old content is refused now.
            ConcurrencyConflict: another writer won.
        """
        target = await self._rollback_target(key, to_version, environment)
        return await self._write(
            key,
            lambda _stored, _parent, _over: target,
            action=Action.ROLLBACK,
            expected_version=expected_version,
            origin=_Origin(actor, reason or f"rollback to v{to_version}"),
            environment=environment,
        )

    async def validate_rollback(
        self, key: str = DEFAULT_KEY, *, to_version: int, environment: Environment = OWN
    ) -> T | None:
        """Preview of `rollback`: the effective value it would give ``key`` (``None``: the
        item would be deleted); nothing is written.

        Raises:
            NotFound: ``key`` has no version ``to_version``.
            ValidationFailed: the old content is refused now.
        """
        target_env = self._target_name(environment)
        target = await self._rollback_target(key, to_version, environment)
        parent, overlaying = await self._parent_of(key, target_env)
        candidate = self._candidate(
            key, target, source=str(Action.ROLLBACK), parent=parent, overlaying=overlaying,
            layered=self._slot_of(target_env) is not None,
        )  # fmt: skip
        return candidate.effective

    async def preview(
        self,
        change: Mapping[str, Any] | T | Callable[[T], T] | None,
        *,
        key: str = DEFAULT_KEY,
        replace: bool = False,
        environment: Environment = OWN,
    ) -> T | None:
        """Preview for any environment: the effective value ``change`` (``None``: a
        delete) would give ``key`` there; nothing is written. For an environment this
        instance holds it is `validate` (a delete: `validate_write`); for any other the
        stored layers are read from the database, as `resolve` reads them. A base
        change is also checked against every environment's overlay, as the write is.

        Raises:
            ValidationFailed: the change is refused (field paths and messages).
            NotFound: no such item there.
            UnknownEnvironment: no such environment.
        """
        target = self._target_name(environment)
        if target != BASE:
            await self.hub.check_environment(target)

        def build(stored: Any, parent: dict[str, Any] | None, over: bool) -> Any:
            if change is None:
                return self._gone(parent, over)
            return self._apply_change(
                stored, change, key, replace=replace, parent=parent, overlaying=over
            )

        action = Action.DELETE if change is None else Action.UPDATE
        async with self._lock(self._lock_name(key, target)):
            step = await self._prepare(
                key, build, target, action=action, expected_version=None, origin=_Origin(),
                must_exist=change is None, must_not_exist=False, resetting=False,
            )  # fmt: skip
        if target == BASE and self.inherits:
            await self._check_environments(key, step.candidate.plain)
        if change is not None and step.candidate.effective is None:
            raise NotFound(f"{self.namespace} has no item {key!r}{self._where(target)}")
        return step.candidate.effective

    def _gone(self, parent: dict[str, Any] | None, overlaying: bool) -> dict[str, Any] | None:
        """What a delete stores: an item the base holds is hidden in an environment;
        anything else is removed."""
        return hidden() if overlaying and self.keyed and parent is not None else None

    async def _parent_of(self, key: str, environment: str) -> tuple[dict[str, Any] | None, bool]:
        """(the base document under ``environment``'s document of ``key``, whether it is
        an overlay over it)."""
        if environment == BASE or not self.inherits:
            return None, False
        if self._scope == BASE:
            entry = self._entries.get(key)
            if entry is not None and environment == self._overlay_env:
                return entry.stored, True
        doc = await self.hub.backend.load(self.namespace, key)
        return (None if doc is None else self._decode(doc.data, key, doc.version)), True

    async def _rollback_target(
        self, key: str, to_version: int, environment: Environment = OWN
    ) -> dict[str, Any] | None:
        logged = await self.hub.backend.change_at(
            self.namespace, key, to_version, environment=self._target_name(environment)
        )
        return None if logged.data is None else decrypt_document(logged.data, self.hub.keyring)

    async def history(
        self, key: str = DEFAULT_KEY, *, limit: int = 50, environment: Environment = OWN
    ) -> list[ChangeRecord]:
        """Committed changes of ``key``'s document in ``environment`` (see `update`),
        newest first, secrets masked."""
        return await self.hub.backend.history(
            self.namespace, key, limit=limit, environment=self._target_name(environment)
        )

    def validate_write(self, key: str, value: T | None) -> None:
        """Extension point for rules beyond the model (e.g. across managers).

        Called before every write with the new stored value (``None`` for a delete);
        raise `ValidationFailed` to refuse it. A rule that reads another manager reads
        it through `rule_view`, so that a write to another environment is judged by
        that environment's values.
        """

    def _rule(self, key: str, value: T | None) -> None:
        if not _RULES_DEFERRED.get():  # a change set runs the rules over all of it
            self.validate_write(key, value)

    async def _prepare_rules(self, environment: str) -> None:
        """Before a write to ``environment``, which this instance does not hold: read
        what `validate_write` will need there (see `rule_view`). Nothing by default."""

    @staticmethod
    def rule_pending(namespace: str, key: str) -> tuple[bool, Any]:
        """(True, value) when the change set being judged writes ``namespace/key`` in
        the environment the rule judges (value None: it deletes or hides it); else
        (False, None): the rule looks where it always does."""
        pending = _PENDING.get()
        slot = (namespace, _RULE_ENVIRONMENT.get(), key)
        if pending is None or slot not in pending:
            return False, None
        return True, pending[slot]

    @staticmethod
    def rule_environment() -> str | None:
        """The environment a write being validated goes to, when this instance does not
        hold it (None: its own documents, which memory holds)."""
        return _RULE_ENVIRONMENT.get()

    async def values_in(self, environment: str) -> dict[str, T]:
        """Every item's stored effective value in ``environment`` (``''``: the base),
        read from the database: for rules judging a write to an environment that
        this instance does not hold."""
        wanted = [BASE, environment] if self.inherits and environment != BASE else [environment]
        rows = await self.hub.backend.load_namespace(self.namespace, environments=wanted)
        by_key: dict[str, dict[str, StoredDocument]] = {}
        for row in rows:
            by_key.setdefault(row.key, {})[row.environment] = row
        found: dict[str, T] = {}
        for key, docs in by_key.items():
            base = docs.get(BASE if self.inherits else environment)
            over = docs.get(environment) if self.inherits and environment != BASE else None
            try:
                resolved = self._resolved(key, environment, base, over)
            except ValidationFailed:
                continue  # an invalid stored value is nobody's to lean on
            if resolved.value is not None:
                found[key] = resolved.value
        return found

    # ----------------------------------------------------------------- internals

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _apply_change(
        self,
        stored: dict[str, Any] | None,
        change: Change,
        key: str,
        *,
        replace: bool = False,
        source: str = "update",
        parent: dict[str, Any] | None = None,
        overlaying: bool = False,
    ) -> dict[str, Any]:
        """The document ``change`` makes of ``stored``. ``overlaying``: ``stored`` is an
        overlay over ``parent`` (the base), and what comes back is the new overlay."""
        if isinstance(change, BaseModel):
            if not isinstance(change, self._model):
                raise TypeError(f"expected {self._model.__name__}, got {type(change).__name__}")
            whole = plain_document(change.model_dump(mode="python", exclude_unset=True))
            return diff_patch(parent or {}, whole) if overlaying else whole
        if overlaying and callable(change) and not isinstance(change, Mapping):
            combined = self._combined(parent, stored) or {}
            base = self._layering.validate(combined, key=key, source="stored value")
            result = change(base)
            if not isinstance(result, self._model):
                raise TypeError(
                    f"the update function must return a {self._model.__name__}, "
                    f"not {type(result).__name__}"
                )
            whole = plain_document(result.model_dump(mode="python", exclude_unset=True))
            return diff_patch(parent or {}, whole)
        if isinstance(change, Mapping):
            self._check_limits(change, key, source=source)
            unknown = unknown_fields(self._model, dict(change))
            if unknown:
                self.stats.validation_failures += 1
                raise ValidationFailed(
                    self.namespace,
                    key,
                    [FieldError(p, f"{self._model.__name__} has no such field") for p in unknown],
                    source=source,
                )
            if overlaying and replace:  # the whole effective document: store what differs
                return diff_patch(parent or {}, dict(change))
            if overlaying and is_hidden(stored):
                stored = None  # a patch to a hidden item starts a new overlay
            if replace:  # the whole document: null is a value here, not a removal
                return copy.deepcopy(dict(change))
            return merge_patch(stored or {}, change)
        if callable(change):
            base = self._layering.validate(stored or {}, key=key, source="stored value")
            result = change(base)
            if not isinstance(result, self._model):
                raise TypeError(
                    f"the update function must return a {self._model.__name__}, "
                    f"not {type(result).__name__}"
                )
            return plain_document(result.model_dump(mode="python", exclude_unset=True))
        raise TypeError(f"cannot update with {type(change).__name__}")

    @staticmethod
    def _combined(
        stored: dict[str, Any] | None, overlay: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The stored effective document: ``overlay`` merged over ``stored`` (None: no
        such item there)."""
        if overlay is None:
            return stored
        if is_hidden(overlay):
            return None
        return merge_patch(stored or {}, overlay)

    def _candidate(
        self,
        key: str,
        plain: dict[str, Any] | None,
        *,
        source: str,
        parent: dict[str, Any] | None = None,
        overlaying: bool = False,
        overlay: dict[str, Any] | None = None,
        layered: bool = True,
    ) -> _Candidate[T]:
        """Validate a would-be stored document; compute what would be stored and seen.

        ``overlaying``: ``plain`` is an overlay over ``parent``, and the two together are
        validated. ``overlay``: this instance's overlay over ``plain`` (a base write),
        which its effective value includes. ``layered``: this instance's env files and
        variables apply (a write to an environment it does not run in: they do not).
        """
        if plain is not None:
            self._check_limits(plain, key, source=source)
        nul = nul_paths(plain) if plain is not None else []
        if nul:
            self.stats.validation_failures += 1
            errors = [FieldError(p, _NUL_MESSAGE) for p in nul]
            raise ValidationFailed(self.namespace, key, errors, source=source)
        if overlaying:
            return self._overlay_candidate(key, plain, parent, source=source, layered=layered)
        try:
            if plain is None:
                self._rule(key, None)
                effective = None if self.keyed else self._layered(key, {}, source, layered)
                if overlay is not None and not is_hidden(overlay):
                    effective = self._layered(key, merge_patch({}, overlay), source, layered)
                return _Candidate(None, effective, None, None, None)
            value = self._layering.validate(plain, key=key, source=source)
            self._rule(key, value)
            seen = self._combined(plain, overlay)
            if seen is plain and not (layered and self._layering.overrides(key)):
                effective = value  # nothing on top: validating again gives value
            else:
                effective = None if seen is None else self._layered(key, seen, source, layered)
        except ValidationFailed:
            self.stats.validation_failures += 1
            raise
        return self._stored_forms(key, value, effective, source=source)

    def _layered(self, key: str, doc: dict[str, Any], source: str, layered: bool) -> T:
        if layered:
            return self._effective(key, doc, source)
        return self._layering.validate(doc, key=key, source=source)

    def _overlay_candidate(
        self,
        key: str,
        plain: dict[str, Any] | None,
        parent: dict[str, Any] | None,
        *,
        source: str,
        layered: bool,
    ) -> _Candidate[T]:
        """An overlay over ``parent``: the two are validated together; the overlay's own
        fields are what is stored (secrets encrypted, as in any document)."""
        if is_hidden(plain):
            assert plain is not None
            self._rule(key, None)
            return _Candidate(None, None, dict(plain), dict(plain), dict(plain))
        combined = self._combined(parent, plain)
        try:
            if combined is None:  # the overlay dropped, and no base item under it
                self._rule(key, None)
                effective = None if self.keyed else self._layered(key, {}, source, layered)
                return _Candidate(None, effective, None, None, None)
            value = self._layering.validate(combined, key=key, source=source)
            self._rule(key, value)
            effective = self._layered(key, combined, source, layered)
        except ValidationFailed:
            self.stats.validation_failures += 1
            raise
        if plain is None:  # the overlay dropped: the base shows through
            return _Candidate(value, effective, None, None, None)
        self._stored_forms(key, value, effective, source=source)  # refuses a pasted mask
        raw = restrict(value.model_dump(mode="python", exclude_unset=True), plain)
        return _Candidate(
            value,
            effective,
            plain_document(raw),
            encrypt_document(raw, self.hub.keyring),
            mask_document(raw),
        )

    def _stored_forms(
        self, key: str, value: T, effective: T | None, *, source: str
    ) -> _Candidate[T]:
        raw = value.model_dump(mode="python", exclude_unset=True)
        pasted = masked_paths(raw)
        if pasted and not self.hub.restores_masked_secrets:
            self.stats.validation_failures += 1
            raise ValidationFailed(
                self.namespace,
                key,
                [
                    FieldError(p, "is a masked secret as confman shows it, not a value")
                    for p in pasted
                ],
                source=source,
            )
        return _Candidate(
            value,
            effective,
            plain_document(raw),
            encrypt_document(raw, self.hub.keyring),
            mask_document(raw),
        )

    def _check_limits(self, doc: Mapping[str, Any], key: str, *, source: str) -> None:
        """Refuse a document or patch past the hub's `Limits`, before anything recursive
        (copying, merging, pydantic) touches it."""
        refused = self.hub.limits.check(doc)
        if refused is not None:
            self.stats.validation_failures += 1
            raise ValidationFailed(self.namespace, key, [refused], source=source)

    def _effective(self, key: str, plain: dict[str, Any], source: str) -> T:
        return self._layering.effective(key, plain, stored_source=source)

    def _masked(self, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        if stored is None:
            return None
        try:
            value = self._model.model_validate(stored)
        except ValueError:
            return None  # a corrupt document: nothing safe to show
        return mask_document(value.model_dump(mode="python", exclude_unset=True))

    async def write_stored(
        self,
        key: str,
        data: dict[str, Any] | None,
        *,
        environment: str | None,
        expected_version: int,
        action: Action,
        actor: str | None = None,
        reason: str | None = None,
    ) -> ConfigChange[T]:
        """Store one layer as given: the base document or, in an environment, its
        overlay (plain JSON, secrets in clear; None deletes it), if the stored version is
        ``expected_version``. Validated as every write is, against every environment it
        affects. What a remote hub's writes become on the server (`confman.remote`): the
        client built the layer with the same code as a direct write would.

        Raises:
            ConcurrencyConflict, ValidationFailed, NotFound: as any write.
        """
        if data is not None:
            self._check_limits(data, key, source=f"{action} (remote)")
        return await self._write(
            key,
            lambda _before, _parent, _over: None if data is None else copy.deepcopy(data),
            action=action,
            expected_version=expected_version,
            origin=_Origin(actor, reason),
            environment=environment,
        )

    async def _entry_for_write(self, key: str) -> _Entry[T] | None:
        """The entry a write starts from; lazily loaded managers override this."""
        return self._entries.get(key)

    async def _write(
        self,
        key: str,
        build: Callable[[dict[str, Any] | None, dict[str, Any] | None, bool], Any],
        *,
        action: Action,
        expected_version: int | None,
        origin: _Origin,
        must_exist: bool = False,
        must_not_exist: bool = False,
        environment: Environment = OWN,
        resetting: bool = False,
        replies: bool = False,
    ) -> ConfigChange[T]:
        """Build, validate and commit one document's new version (a change set of one).
        ``replies``: the writer will wait for every instance's reply, so the notice asks
        for them (other instances reply only to a catch-up run otherwise).

        ``build(before, parent, overlaying)`` makes the new document from the one stored
        in the target environment (an overlay over ``parent`` when ``overlaying``).
        """
        _check_write_labels(self.namespace, key, origin, action)
        target = self._target_name(environment)
        if target != BASE:
            await self.hub.check_environment(target)
        async with self._lock(self._lock_name(key, target)):
            step = await self._prepare(
                key, build, target, action=action, expected_version=expected_version,
                origin=origin, must_exist=must_exist, must_not_exist=must_not_exist,
                resetting=resetting, replies=replies,
            )  # fmt: skip
            if step.unchanged:
                return await self._confirm_unchanged(step)
            if target == BASE and self.inherits:
                await self._check_environments(key, step.candidate.plain)
            try:
                stored, record = await self.hub.backend.write(step.write)
            except ConcurrencyConflict:
                self.stats.conflicts += 1
                raise
            return await self._finish(step, stored, record)

    def _lock_name(self, key: str, environment: str) -> str:
        """Writes to what this instance holds share the apply path's lock of the key."""
        return key if self._slot_of(environment) is not None else f"{environment}\0{key}"

    async def _prepare(
        self,
        key: str,
        build: Callable[[dict[str, Any] | None, dict[str, Any] | None, bool], Any],
        target: str,
        *,
        action: Action,
        expected_version: int | None,
        origin: _Origin,
        must_exist: bool,
        must_not_exist: bool,
        resetting: bool,
        change_set: str | None = None,
        rules: bool = True,
        replies: bool = False,
    ) -> _Step[T]:
        """Everything a write does before the database: read what is stored (memory for
        what this instance holds, else the database), check versions, build, validate.
        Caller holds `_lock_name`'s lock. ``rules``: False leaves `validate_write` to the
        caller (a change set judges its members together).

        A write to an environment this instance does not hold is validated with the
        stored layers only (its env files and variables are not that environment's),
        and is not emitted here (it concerns other instances, which the notice tells).

        Raises:
            NotFound, ConcurrencyConflict, ValidationFailed: as the write would.
        """
        slot = self._slot_of(target)
        entry: _Entry[T] | None = None
        own: StoredDocument | None = None
        if slot is not None:
            entry = await self._entry_for_write(key)
            if expected_version is not None and self._version_in(entry, slot) != expected_version:
                # Our memory may only be behind the database: look before refusing.
                await self._refresh_from_store(key, locked=True, slot=slot)
                entry = await self._entry_for_write(key)
            overlaying = slot == 1
            parent = entry.stored if entry is not None and overlaying else None
            before = (entry.overlay if overlaying else entry.stored) if entry else None
            current = self._version_in(entry, slot)
        else:
            rows = await self._rows(key, target)
            own, under = rows.get(target), rows.get(BASE)
            overlaying = self.inherits
            parent = None if under is None else self._decode(under.data, key, under.version)
            before = None if own is None else self._decode(own.data, key, own.version)
            current = 0 if own is None else own.version
        seen = self._combined(parent, before) if overlaying else before
        exists = (before is not None) if resetting else seen is not None
        if must_exist and not exists:
            raise NotFound(f"{self.namespace} has no item {key!r}{self._where(target)}")
        if must_not_exist and exists:
            raise ConcurrencyConflict(self.namespace, key, expected=0, current=current)
        if expected_version is not None and current != expected_version:
            self.stats.conflicts += 1
            raise ConcurrencyConflict(
                self.namespace, key, expected=expected_version, current=current
            )
        plain = build(before, parent, overlaying)
        action = self._action_for(action, before, parent, plain, overlaying)
        if slot is None:
            await self._prepare_rules(target)
        judged_in = _RULE_ENVIRONMENT.set(target if slot is None else None)
        deferred = _RULES_DEFERRED.set(not rules)
        try:
            candidate = self._candidate(
                key, plain, source=str(action) if slot is not None else f"{action} in {target}",
                parent=parent, overlaying=overlaying,
                overlay=entry.overlay if entry is not None and not overlaying else None,
                layered=slot is not None,
            )  # fmt: skip
        finally:
            _RULES_DEFERRED.reset(deferred)
            _RULE_ENVIRONMENT.reset(judged_in)
        if slot is not None:
            old = entry.effective if entry else None
            serving = (entry.overlay_serving if overlaying else entry.serving) if entry else None
            unchanged = (
                entry is not None
                and before is not None
                and serving is None  # a refused stored version is healed by a write
                and (entry.effective is not None or overlaying)
                and candidate.plain == before
            )
        else:
            old = self._stored_value(key, seen)
            unchanged = before is not None and candidate.plain == before
        if overlaying:
            masked = self._masked_part(before, parent)
        elif entry is not None and entry.masked is not None and entry.masked[0] is before:
            masked = entry.masked[1]
        else:
            masked = self._masked(before)
        write = Write(
            namespace=self.namespace,
            key=key,
            data=candidate.stored_form,
            expected_version=current,
            action=action,
            actor=origin.actor,
            reason=origin.reason,
            before=masked,
            after=candidate.masked,
            changed=changed_paths(masked, candidate.masked),
            origin=self.hub.instance_id,
            environment=target,
            change_set=change_set,
            replies=replies,
        )
        at = own.updated_at if own is not None else (entry.updated_at if entry else None)
        return _Step(self, key, target, slot, write, candidate, old, unchanged, origin, at)

    def _stored_value(self, key: str, seen: dict[str, Any] | None) -> T | None:
        """The stored effective value of a document this instance does not hold."""
        if seen is not None:
            try:
                return self._layering.validate(seen, key=key, source="stored value")
            except ValidationFailed:
                return None
        return None if self.keyed else self._layering.validate({}, key=key, source="defaults")

    async def _confirm_unchanged(self, step: _Step[T]) -> ConfigChange[T]:
        """The answer to a write that would store what is stored: nothing is written."""
        if step.slot is not None:
            entry = self._entries[step.key]
            return await self._unchanged(
                step.key, entry, step.write.action, step.origin, step.target,
                step.write.expected_version,
            )  # fmt: skip
        self.stats.unchanged_writes += 1
        return ConfigChange(
            namespace=self.namespace, key=step.key, old=step.old, new=step.old,
            version=step.write.expected_version, seq=0, action=step.write.action,
            changed_fields=(), actor=step.origin.actor, reason=step.origin.reason,
            origin=self.hub.instance_id, at=step.at or datetime.now(UTC), unchanged=True,
            environment=step.target,
        )  # fmt: skip

    async def _finish(
        self, step: _Step[T], stored: StoredDocument, record: ChangeRecord
    ) -> ConfigChange[T]:
        """After the commit: tell the other instances, then take the new version here
        (where this instance holds it) and emit it. Caller holds the key's lock."""
        self.stats.writes += 1
        # Tell the other instances first: their latency should not include this
        # instance's own subscribers.
        await self.hub._publish(
            ChangeNotice(
                self.namespace,
                step.key,
                stored.version,
                record.seq,
                self.hub.instance_id,
                step.target,
                record.change_set,
                step.write.replies,
                self.hub._seal(record, stored.data),
            )
        )
        candidate = step.candidate
        change: ConfigChange[T] | None = None
        if step.slot == 1:
            change = self._commit_overlay(
                step.key, stored.version, candidate.plain, stored.data, candidate.effective, record
            )
        elif step.slot == 0:
            change = self._commit(
                step.key, stored.version, candidate.plain, candidate.effective, record,
                stored.data,
            )  # fmt: skip
            entry = self._entries.get(step.key)  # lazily loaded managers keep theirs elsewhere
            if entry and candidate.plain is not None and entry.stored is candidate.plain:
                entry.masked = (candidate.plain, candidate.masked)
        if step.slot is not None:
            self.hub._applied(record.seq)
        if change is None:  # not held here (or, under the lock, cannot happen)
            change = self._make_change(step.key, step.old, candidate.effective, record)
        return change

    @staticmethod
    def _action_for(
        action: Action,
        before: dict[str, Any] | None,
        parent: dict[str, Any] | None,
        plain: dict[str, Any] | None,
        overlaying: bool,
    ) -> Action:
        """The change log's word for a write: an update of nothing creates; an overlay
        over an existing base item updates it; an overlay removed is deleted."""
        if overlaying and plain is None and before is not None:
            return Action.DELETE
        if action is Action.UPDATE and before is None and not (overlaying and parent):
            return Action.CREATE
        return action

    @staticmethod
    def _where(environment: str) -> str:
        return f" in {environment}" if environment else ""

    @staticmethod
    def _version_in(entry: _Entry[T] | None, slot: int) -> int:
        if entry is None:
            return 0
        return entry.version if slot == 0 else entry.overlay_version

    def _masked_part(
        self, doc: dict[str, Any] | None, parent: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """An overlay as the change log shows it: its own fields, secrets masked (found
        by validating it over its base; None when that fails: nothing safe to show)."""
        if doc is None:
            return None
        if is_hidden(doc):
            return dict(doc)
        try:
            value = self._model.model_validate(merge_patch(parent or {}, doc))
        except ValueError:
            return None
        return mask_document(restrict(value.model_dump(mode="python", exclude_unset=True), doc))

    async def _check_environments(self, key: str, new_base: dict[str, Any] | None) -> None:
        """Refuse a base write that would make an environment's effective value invalid.

        Only when this hub knows of environments: without any, no overlay can exist.
        An environment created since then, whose overlay this misses, still refuses an
        invalid result when its instances apply it (they keep serving the last valid
        value, and report the problem).
        """
        if not self.hub.known_environments:
            return
        for doc in await self.hub.backend.load_everywhere(self.namespace, key):
            if doc.environment == BASE or doc.data is None:
                continue
            overlay = self._decode(doc.data, key, doc.version)
            if overlay is None or is_hidden(overlay):
                continue
            combined = merge_patch(new_base or {}, overlay)
            source = (
                f"environment {doc.environment} ({self._label(doc.environment, doc.version)} "
                "over the new base)"
            )
            try:
                value = self._layering.validate(combined, key=key, source=source)
                self.validate_write(key, value)
            except ValidationFailed as e:
                self.stats.validation_failures += 1
                raise ValidationFailed(
                    self.namespace, key, e.errors, source=source, environment=doc.environment
                ) from None

    async def _unchanged(
        self,
        key: str,
        entry: _Entry[T],
        action: Action,
        origin: _Origin,
        environment: str = BASE,
        version: int | None = None,
    ) -> ConfigChange[T]:
        """The answer to a write that would store what is stored: nothing is written.

        Caller holds the key's lock. Committing would have checked the version in the
        database; so does this, or "unchanged at v3" could be said while v4 is stored.

        Raises:
            ConcurrencyConflict: the database holds a newer version than this instance.
        """
        held = entry.version if version is None else version
        stored = await self.hub.backend.load(self.namespace, key, environment=environment)
        current = 0 if stored is None else stored.version
        if current != held:
            self.stats.conflicts += 1
            slot = self._slot_of(environment)
            await self._refresh_from_store(key, locked=True, slot=0 if slot is None else slot)
            raise ConcurrencyConflict(self.namespace, key, expected=held, current=current)
        self.stats.unchanged_writes += 1
        return ConfigChange(
            namespace=self.namespace,
            key=key,
            old=entry.effective,
            new=entry.effective,
            version=held,
            seq=0,
            action=action,
            changed_fields=(),
            actor=origin.actor,
            reason=origin.reason,
            origin=self.hub.instance_id,
            at=entry.updated_at or datetime.now(UTC),
            unchanged=True,
            environment=environment or None,
        )

    def _make_change(
        self,
        key: str,
        old: T | None,
        new: T | None,
        record: ChangeRecord,
        written: tuple[dict[str, Any] | None] | None = None,
    ) -> ConfigChange[T]:
        changed: tuple[str, ...] = ()
        if old is not None and new is not None:
            # Python-mode dumps compare as they are (a SecretStr by its value), so no
            # masking or JSON conversion is needed just to find the changed paths.
            changed = tuple(changed_paths(old.model_dump(), new.model_dump()))
        pinned = self._layering.pinned(key, record.changed)
        return ConfigChange(
            namespace=self.namespace,
            key=key,
            old=old,
            new=new,
            version=record.version,
            seq=record.seq,
            action=record.action,
            changed_fields=changed,
            actor=record.actor,
            reason=record.reason,
            origin=record.origin,
            at=record.committed_at,
            pinned=pinned,
            stored_changed=record.changed,
            environment=record.environment,
            change_set=record.change_set,
            written=written,
        )

    def _commit(
        self,
        key: str,
        version: int,
        plain: dict[str, Any] | None,
        effective: T | None,
        record: ChangeRecord,
        raw: Any = _UNKNOWN,
    ) -> ConfigChange[T] | None:
        """Make ``version`` current and tell subscribers. Caller holds the key's lock.
        ``raw``: the stored form written, when at hand (it rides on the change)."""
        entry = self._entries.get(key)
        if entry is not None and version <= entry.version:
            return None
        old = entry.effective if entry else None
        if entry is None:
            entry = self._entries[_key(key)] = _Entry(
                version, plain, effective, record.committed_at
            )
        else:
            entry.version, entry.stored, entry.effective = version, plain, effective
            entry.updated_at, entry.serving = record.committed_at, None
        return self._announce(key, old, effective, record, raw)

    def _commit_overlay(
        self,
        key: str,
        version: int,
        plain: dict[str, Any] | None,
        raw: dict[str, Any] | None,
        effective: T | None,
        record: ChangeRecord,
    ) -> ConfigChange[T] | None:
        """`_commit` for this instance's environment's overlay of ``key``."""
        entry = self._entries.get(key)
        if entry is not None and version <= entry.overlay_version:
            return None
        if entry is None:
            entry = self._entries[_key(key)] = _Entry(0, None, None, record.committed_at)
        old = entry.effective
        entry.overlay_version, entry.overlay, entry.overlay_raw = version, plain, raw
        entry.effective, entry.updated_at, entry.overlay_serving = (
            effective, record.committed_at, None
        )  # fmt: skip
        return self._announce(key, old, effective, record, raw)

    def _announce(
        self,
        key: str,
        old: T | None,
        effective: T | None,
        record: ChangeRecord,
        raw: Any = _UNKNOWN,
    ) -> ConfigChange[T]:
        """A new version is in memory: clear its problem, serve it, tell subscribers."""
        self._problems.pop(key, None)
        if not self.keyed:
            self._set_current(effective)
        written = None if raw is _UNKNOWN else (raw,)
        change = self._make_change(key, old, effective, record, written)
        self._emit(change)
        return change

    def _emit(self, change: ConfigChange[T]) -> None:
        held = self.hub._held_changes
        if held is not None:  # a change set is being applied: told once it all is
            held.append((self, change))
            return
        self._deliver(change)

    def _deliver(self, change: ConfigChange[T]) -> None:
        self.stats.notifications += 1
        self._subject.on_next(change)

    def _decode(self, data: Any, key: str = "?", version: int = 0) -> dict[str, Any] | None:
        """Stored form to plain JSON.

        Raises:
            ValidationFailed: the row is not a document at all (not a JSON object, a
                malformed secret token); the caller treats it like any invalid document.
            SecretsUnavailable: a secret cannot be decrypted with the configured keys.
        """
        if data is None:
            return None
        source = f"database ({self.namespace}/{key} v{version})"
        if not isinstance(data, dict):
            reason = f"the stored document is a JSON {type(data).__name__}, not an object"
            raise ValidationFailed(self.namespace, key, [FieldError("", reason)], source=source)
        try:
            return decrypt_document(data, self.hub.keyring)
        except ValueError as e:
            raise ValidationFailed(
                self.namespace, key, [FieldError("", str(e))], source=source
            ) from None

    def _resolve_stored(
        self,
        key: str,
        version: int,
        plain: dict[str, Any] | None,
        overlay: dict[str, Any] | None = None,
        environment: str | None = None,
    ) -> tuple[bool, T | None]:
        """The effective value for a stored document (with this instance's overlay over
        it), or record why it cannot be used."""
        where = f"{environment} " if environment else ""
        source = f"database ({where}{self.namespace}/{key} v{version})"
        try:
            plain = self._combined(plain, overlay)
            if plain is None:
                hides = overlay is not None
                return True, (None if self.keyed or hides else self._effective(key, {}, source))
            return True, self._effective(key, plain, source)
        except ConfigSourceError:
            raise
        except ValidationFailed as e:
            problem = Problem(self.namespace, key, version, e.source, e.errors, datetime.now(UTC))
            self._problems[key] = problem
            log.error("refusing stored document, serving the last valid value: %s", problem)
            return False, None

    def _apply_logged(self, key: str, logged: LoggedChange) -> None:
        """Apply a committed version read from the change log. Caller holds the lock."""
        record = logged.record
        if self._slot_of(record.environment or BASE) == 1:
            self._apply_overlay(key, logged)
            return
        entry = self._entries.get(key)
        if entry is not None and record.version <= entry.version:
            return
        plain: dict[str, Any] | None = None
        try:
            plain = self._decode(logged.data, key, record.version)
            over = entry.overlay if entry is not None else None
            usable, effective = self._resolve_stored(key, record.version, plain, over)
        except (ValidationFailed, SecretsUnavailable) as e:
            # An unreadable row, or our overrides make this version invalid here: keep
            # serving the last valid value, and say why.
            errors = e.errors if isinstance(e, ValidationFailed) else (FieldError("", str(e)),)
            source = e.source if isinstance(e, ValidationFailed) else "database"
            self._problems[key] = Problem(
                self.namespace, key, record.version, source, errors, datetime.now(UTC)
            )
            log.error("refusing %s/%s v%s: %s", self.namespace, key, record.version, e)
            usable, effective = False, None
        if not usable:
            # Remember the version (a later write must check against it) and the stored
            # document (a patch heals it), but keep the last valid value in service, and
            # what it came from (for explain).
            if entry is None:
                self._entries[_key(key)] = _Entry(record.version, plain, None, record.committed_at)
            else:
                if entry.serving is None:
                    entry.serving = (entry.version, entry.stored)
                entry.version, entry.stored = record.version, plain
            return
        self._commit(key, record.version, plain, effective, record, logged.data)

    def _apply_overlay(self, key: str, logged: LoggedChange) -> None:
        """`_apply_logged` for a version of this instance's environment's overlay."""
        record = logged.record
        entry = self._entries.get(key)
        if entry is not None and record.version <= entry.overlay_version:
            return
        environment = self._overlay_env
        try:
            plain = self._decode(logged.data, key, record.version)
            base = entry.stored if entry is not None else None
            # An overlay dropped (None) leaves the base alone.
            usable, effective = self._resolve_stored(key, record.version, base, plain, environment)
        except (ValidationFailed, SecretsUnavailable) as e:
            errors = e.errors if isinstance(e, ValidationFailed) else (FieldError("", str(e)),)
            source = e.source if isinstance(e, ValidationFailed) else "database"
            self._problems[key] = Problem(
                self.namespace, key, record.version, source, errors, datetime.now(UTC)
            )
            log.error("refusing %s/%s %s v%s: %s", self.namespace, key, environment,
                      record.version, e)  # fmt: skip
            plain, usable, effective = None, False, None
        if not usable:
            if entry is None:
                entry = self._entries[_key(key)] = _Entry(0, None, None, record.committed_at)
            if entry.overlay_serving is None:
                entry.overlay_serving = (entry.overlay_version, entry.overlay)
            entry.overlay_version, entry.overlay = record.version, plain
            entry.overlay_raw = logged.data
            return
        self._commit_overlay(key, record.version, plain, logged.data, effective, record)

    async def _catch_up(self, logged: list[LoggedChange]) -> None:
        """Apply change-log rows in seq order (from the hub's catch-up).

        Every version is applied, not only the newest of each key, so that a watcher
        (``confman watch``) sees each change. One row that cannot be applied must not
        cost the others their turn: the hub will not read these rows again. Rows of
        environments this instance does not run in are not its business.
        """
        logged = [c for c in logged if self._concerns(c.record.environment or BASE)]
        for item in logged:
            key = item.record.key
            try:
                async with self._lock(key):
                    self._apply_logged(key, item)
            except Exception as e:
                self._problems[key] = Problem(
                    self.namespace, key, item.record.version, "database",
                    (FieldError("", f"{type(e).__name__}: {e}"),), datetime.now(UTC),
                )  # fmt: skip
                log.exception("cannot apply %s/%s v%s", self.namespace, key, item.record.version)

    async def _on_notice(self, notice: ChangeNotice) -> None:
        slot = self._slot_of(notice.environment)
        if slot is None:
            return
        if notice.version <= self._version_in(self._entries.get(notice.key), slot):
            return
        logged = self.hub._unseal(notice)
        if logged is None:
            logged = await self.hub.backend.change_at(
                self.namespace, notice.key, notice.version, environment=notice.environment
            )
        async with self._lock(notice.key):
            self._apply_logged(notice.key, logged)

    async def _refresh_from_store(self, key: str, *, locked: bool = False, slot: int = 0) -> None:
        environment = self._scope if slot == 0 else self._overlay_env
        assert environment is not None
        doc = await self.hub.backend.load(self.namespace, key, environment=environment)
        if doc is None or doc.version <= self._version_in(self._entries.get(key), slot):
            return
        logged = await self.hub.backend.change_at(
            self.namespace, key, doc.version, environment=environment
        )
        if locked:
            self._apply_logged(key, logged)
        else:
            async with self._lock(key):
                self._apply_logged(key, logged)

    def _environments_held(self) -> list[str]:
        return [self._scope] if self._overlay_env is None else [self._scope, self._overlay_env]

    async def _load(self) -> None:
        """Load every stored document (start-up). Emits nothing."""
        self._load_documents(
            await self.hub.backend.load_namespace(
                self.namespace, environments=self._environments_held()
            )
        )

    def _load_snapshot(self, documents: Iterable[StoredDocument]) -> None:
        """Start-up from the snapshot file (the database is unreachable). Emits nothing."""
        self._load_documents(documents)

    def _load_documents(self, documents: Iterable[StoredDocument]) -> None:
        overlays: list[StoredDocument] = []
        for doc in documents:
            if doc.environment == self._scope:
                self._load_document(doc)
            elif doc.environment == self._overlay_env:
                overlays.append(doc)  # after every base document: they sit on top
        for doc in overlays:
            self._load_overlay(doc)
        if not self.keyed and DEFAULT_KEY not in self._entries:
            effective = self._effective(DEFAULT_KEY, {}, "model defaults")
            self._entries[DEFAULT_KEY] = _Entry(0, None, effective)
            self._set_current(effective)

    def _load_document(self, doc: StoredDocument) -> None:
        # SecretsUnavailable propagates: stored secrets with no usable key stop start-up.
        try:
            plain = self._decode(doc.data, doc.key, doc.version)
        except ValidationFailed as e:
            self._problems[doc.key] = Problem(
                self.namespace, doc.key, doc.version, e.source, e.errors, datetime.now(UTC)
            )
            log.error("refusing stored document, serving defaults: %s", self._problems[doc.key])
            plain, usable, effective = None, False, None
        else:
            usable, effective = self._resolve_stored(doc.key, doc.version, plain)
        serving: tuple[int, dict[str, Any] | None] | None = None
        if not usable:
            serving = (0, None)
            if not self.keyed:
                effective = self._effective(doc.key, {}, "model defaults")
        self._entries[_key(doc.key)] = _Entry(
            doc.version, plain, effective, doc.updated_at, serving
        )
        if not self.keyed:
            self._set_current(effective)

    def _load_overlay(self, doc: StoredDocument) -> None:
        """Put this instance's environment's overlay over the loaded base document."""
        entry = self._entries.get(doc.key)
        if entry is None:
            entry = self._entries[_key(doc.key)] = _Entry(0, None, None, doc.updated_at)
        try:
            plain = self._decode(doc.data, doc.key, doc.version)
            usable, effective = self._resolve_stored(
                doc.key, doc.version, entry.stored, plain, self._overlay_env
            )
        except ValidationFailed as e:
            self._problems[doc.key] = Problem(
                self.namespace, doc.key, doc.version, e.source, e.errors, datetime.now(UTC)
            )
            plain, usable, effective = None, False, None
        entry.overlay_version, entry.overlay, entry.overlay_raw = doc.version, plain, doc.data
        if not usable:
            log.error("refusing the %s overlay, serving the base: %s", self._overlay_env,
                      self._problems.get(doc.key))  # fmt: skip
            entry.overlay_serving = (0, None)
            return
        entry.effective = effective
        if not self.keyed:
            self._set_current(effective)

    async def resolve(
        self, key: str = DEFAULT_KEY, *, environment: Environment = OWN
    ) -> Resolved[T]:
        """``key``'s stored effective value in ``environment`` (defaults, base, overlay;
        no instance's env files or variables), read from the database, with the layer of
        every field. For any environment, not only this instance's.

        Raises:
            UnknownEnvironment: no such environment.
        """
        target = self._target_name(environment)
        if target != BASE:
            await self.hub.check_environment(target)
        rows = await self._rows(key, target)
        base = rows.get(BASE if self.inherits else target)
        overlay = rows.get(target) if self.inherits and target != BASE else None
        return self._resolved(key, target, base, overlay)

    async def _rows(self, key: str, environment: str) -> dict[str, StoredDocument]:
        """``key``'s stored rows that make its value in ``environment``, by environment:
        the base's and the environment's where the namespace inherits, else its own."""
        if self.inherits and environment != BASE:
            return {
                d.environment: d
                for d in await self.hub.backend.load_everywhere(self.namespace, key)
                if d.environment in (BASE, environment)
            }
        row = await self.hub.backend.load(self.namespace, key, environment=environment)
        return {} if row is None else {environment: row}

    def _resolved(
        self,
        key: str,
        environment: str,
        base: StoredDocument | None,
        overlay: StoredDocument | None,
    ) -> Resolved[T]:
        """`resolve` from rows already read (compare reads many at once)."""
        if self._bare is None:
            self._bare = Layering(self._model, self.namespace, keyed=self.keyed, sources=())
        under = None if base is None else self._decode(base.data, key, base.version)
        over = None if overlay is None else self._decode(overlay.data, key, overlay.version)
        combined = self._combined(under, over)
        base_env = BASE if self.inherits else environment
        layers: list[tuple[str, Mapping[str, Any]]] = []
        if under is not None and base is not None:
            layers.append((self._label(base_env, base.version), under))
        if over is not None and overlay is not None and not is_hidden(over):
            layers.append((self._label(environment, overlay.version), over))
        value: T | None = None
        if combined is not None or not self.keyed:
            value = self._bare.validate(combined or {}, key=key, source=f"database ({key})")
        sources = () if value is None else tuple(self._bare.explain(key, value, layers))
        return Resolved(
            namespace=self.namespace,
            key=key,
            environment=environment or None,
            value=value,
            base_version=0 if base is None else base.version,
            version=0 if overlay is None else overlay.version,
            hidden=is_hidden(over),
            sources=sources,
        )

    def _close(self) -> None:
        self._subject.on_completed()
