"""`ConfigurationManager[T]`: one typed configuration area, read from memory, written
through validated, version-checked, audited transactions, observed as Rx streams.

Define one in three lines::

    class FlagsManager(ConfigurationManager[Flags]):
        namespace = "flags"
        model = Flags
        keyed = False

and get it, loaded, from a hub: ``hub.manager(FlagsManager)``.

Why one long module: the read path, the write path (patch, validate, limits, no-op
check, commit, emit) and the apply path (notices, catch-up) share the per-key entries and
their invariants (strictly increasing versions, one emission per version), and are kept
together until the entry-storage strategy planned in ``shared/STYLE.md`` separates them.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import re
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
from .change import Action, ChangeRecord, ConfigChange, FieldSource
from .exceptions import (
    ConcurrencyConflict,
    ConfigSourceError,
    FieldError,
    NotFound,
    SecretsUnavailable,
    ValidationFailed,
)
from .layers import Layering, unknown_fields
from .patch import changed_paths, merge_patch, nul_paths
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

__all__ = ["DEFAULT_KEY", "ConfigurationManager", "ManagerStats", "Problem"]

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

Change = Mapping[str, Any] | BaseModel | Callable[[Any], Any]
"""A partial document (merge patch), a whole value, or a function from value to value."""


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
    labels = (("key", key), ("actor", origin.actor), ("reason", origin.reason))
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

    def version(self, key: str = DEFAULT_KEY) -> int:
        """The stored version this instance has applied (0: never stored)."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry.version

    def problems(self) -> list[Problem]:
        """Stored documents or overrides this instance refused, newest first."""
        return sorted(self._problems.values(), key=lambda p: p.seen_at, reverse=True)

    def explain(self, key: str = DEFAULT_KEY) -> list[FieldSource]:
        """For each effective field, the layer it came from (secrets masked)."""
        entry = self._entries.get(key)
        value = self.get(key)
        version, stored = (0, None) if entry is None else (entry.version, entry.stored)
        if entry is not None and entry.serving is not None:
            version, stored = entry.serving
        return self._layering.explain(key, value, stored or {}, version=version)

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
    ) -> T:
        """Preview: the effective value ``change`` would give ``key``; nothing is written.

        Raises:
            ValidationFailed: the change is refused (field paths and messages).
        """
        entry = self._entries.get(key)
        plain = self._apply_change(entry.stored if entry else None, change, key, replace=replace)
        candidate = self._candidate(key, plain, source="validate")
        assert candidate.effective is not None
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
    ) -> ConfigChange[T]:
        """Change ``key`` and return the committed change.

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
                    lambda stored: self._apply_change(stored, change, key, replace=replace),
                    action=Action.UPDATE,
                    expected_version=expected_version,
                    origin=_Origin(actor, reason),
                    must_exist=self.keyed,
                )
            except ConcurrencyConflict:
                if attempt + 1 == attempts:
                    raise
                await self._refresh_from_store(key)
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
    ) -> ConfigChange[T]:
        """Create a collection item.

        Raises:
            ConcurrencyConflict: the item already exists.
        """
        if not self.keyed:
            raise TypeError(f"{self.namespace} is a singleton; use update()")
        return await self._write(
            key,
            lambda _stored: self._apply_change(None, value, key, source="create"),
            action=Action.CREATE,
            expected_version=None,
            origin=_Origin(actor, reason),
            must_not_exist=True,
        )

    async def delete(
        self,
        key: str = DEFAULT_KEY,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> ConfigChange[T]:
        """Delete ``key``: a singleton falls back to its defaults; an item disappears."""
        return await self._write(
            key,
            lambda _stored: None,
            action=Action.DELETE,
            expected_version=expected_version,
            origin=_Origin(actor, reason),
            must_exist=True,
        )

    async def rollback(
        self,
        key: str = DEFAULT_KEY,
        *,
        to_version: int,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> ConfigChange[T]:
        """Write a new version whose content equals ``to_version``'s (action ``rollback``).

        The old content is validated again: a version the current model refuses cannot
        be restored. When the stored document already equals ``to_version``'s, nothing
        is written and the change returned has ``unchanged=True`` (as `update`).

        Raises:
            NotFound: ``key`` has no version ``to_version``.
            ValidationFailed: the old content is refused now.
            ConcurrencyConflict: another writer won.
        """
        target = await self._rollback_target(key, to_version)
        return await self._write(
            key,
            lambda _stored: target,
            action=Action.ROLLBACK,
            expected_version=expected_version,
            origin=_Origin(actor, reason or f"rollback to v{to_version}"),
        )

    async def validate_rollback(self, key: str = DEFAULT_KEY, *, to_version: int) -> T | None:
        """Preview of `rollback`: the effective value it would give ``key`` (``None``: the
        item would be deleted); nothing is written.

        Raises:
            NotFound: ``key`` has no version ``to_version``.
            ValidationFailed: the old content is refused now.
        """
        target = await self._rollback_target(key, to_version)
        return self._candidate(key, target, source=str(Action.ROLLBACK)).effective

    async def _rollback_target(self, key: str, to_version: int) -> dict[str, Any] | None:
        logged = await self.hub.store.change_at(self.namespace, key, to_version)
        return None if logged.data is None else decrypt_document(logged.data, self.hub.keyring)

    async def history(self, key: str = DEFAULT_KEY, *, limit: int = 50) -> list[ChangeRecord]:
        """Committed changes of ``key``, newest first, secrets masked."""
        return await self.hub.store.history(self.namespace, key, limit=limit)

    def validate_write(self, key: str, value: T | None) -> None:
        """Extension point for rules beyond the model (e.g. across managers).

        Called before every write with the new stored value (``None`` for a delete);
        raise `ValidationFailed` to refuse it.
        """

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
    ) -> dict[str, Any]:
        if isinstance(change, BaseModel):
            if not isinstance(change, self._model):
                raise TypeError(f"expected {self._model.__name__}, got {type(change).__name__}")
            return plain_document(change.model_dump(mode="python", exclude_unset=True))
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

    def _candidate(self, key: str, plain: dict[str, Any] | None, *, source: str) -> _Candidate[T]:
        """Validate a would-be stored document; compute what would be stored and seen."""
        if plain is not None:
            self._check_limits(plain, key, source=source)
        nul = nul_paths(plain) if plain is not None else []
        if nul:
            self.stats.validation_failures += 1
            errors = [FieldError(p, _NUL_MESSAGE) for p in nul]
            raise ValidationFailed(self.namespace, key, errors, source=source)
        try:
            if plain is None:
                self.validate_write(key, None)
                effective = None if self.keyed else self._effective(key, {}, source)
                return _Candidate(None, effective, None, None, None)
            value = self._layering.validate(plain, key=key, source=source)
            self.validate_write(key, value)
            effective = self._effective(key, plain, source)
        except ValidationFailed:
            self.stats.validation_failures += 1
            raise
        raw = value.model_dump(mode="python", exclude_unset=True)
        pasted = masked_paths(raw)
        if pasted:
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

    async def _entry_for_write(self, key: str) -> _Entry[T] | None:
        """The entry a write starts from; lazily loaded managers override this."""
        return self._entries.get(key)

    async def _write(
        self,
        key: str,
        build: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        *,
        action: Action,
        expected_version: int | None,
        origin: _Origin,
        must_exist: bool = False,
        must_not_exist: bool = False,
    ) -> ConfigChange[T]:
        _check_write_labels(self.namespace, key, origin, action)
        async with self._lock(key):
            entry = await self._entry_for_write(key)
            if expected_version is not None and (entry.version if entry else 0) != expected_version:
                # Our memory may only be behind the database: look before refusing.
                await self._refresh_from_store(key, locked=True)
                entry = await self._entry_for_write(key)
            exists = entry is not None and entry.stored is not None
            if must_exist and not exists:
                raise NotFound(f"{self.namespace} has no item {key!r}")
            base_version = entry.version if entry else 0
            if must_not_exist and exists:
                raise ConcurrencyConflict(self.namespace, key, expected=0, current=base_version)
            if expected_version is not None and base_version != expected_version:
                self.stats.conflicts += 1
                raise ConcurrencyConflict(
                    self.namespace, key, expected=expected_version, current=base_version
                )
            before = entry.stored if entry else None
            plain = build(before)
            if (action is Action.UPDATE and entry is not None and entry.stored is None) or (
                action is Action.UPDATE and entry is None
            ):
                action = Action.CREATE
            candidate = self._candidate(key, plain, source=str(action))
            if (
                entry is not None
                and before is not None
                and entry.serving is None  # a refused stored version is healed by a write
                and entry.effective is not None
                and candidate.plain == before
            ):
                return await self._unchanged(key, entry, action, origin)
            before_masked = self._masked(before)
            try:
                stored, record = await self.hub.store.write(
                    Write(
                        namespace=self.namespace,
                        key=key,
                        data=candidate.stored_form,
                        expected_version=base_version,
                        action=action,
                        actor=origin.actor,
                        reason=origin.reason,
                        before=before_masked,
                        after=candidate.masked,
                        changed=changed_paths(before_masked, candidate.masked),
                        origin=self.hub.instance_id,
                    )
                )
            except ConcurrencyConflict:
                self.stats.conflicts += 1
                raise
            self.stats.writes += 1
            # Tell the other instances first: their latency should not include this
            # instance's own subscribers.
            await self.hub._publish(
                ChangeNotice(self.namespace, key, stored.version, record.seq, self.hub.instance_id)
            )
            old = entry.effective if entry else None
            change = self._commit(key, stored.version, candidate.plain, candidate.effective, record)
            self.hub._applied(record.seq)
            if change is None:  # cannot happen under the lock; keep the caller informed anyway
                change = self._make_change(key, old, candidate.effective, record)
        return change

    async def _unchanged(
        self, key: str, entry: _Entry[T], action: Action, origin: _Origin
    ) -> ConfigChange[T]:
        """The answer to a write that would store what is stored: nothing is written.

        Caller holds the key's lock. Committing would have checked the version in the
        database; so does this, or "unchanged at v3" could be said while v4 is stored.

        Raises:
            ConcurrencyConflict: the database holds a newer version than this instance.
        """
        stored = await self.hub.store.load(self.namespace, key)
        current = 0 if stored is None else stored.version
        if current != entry.version:
            self.stats.conflicts += 1
            await self._refresh_from_store(key, locked=True)
            raise ConcurrencyConflict(self.namespace, key, expected=entry.version, current=current)
        self.stats.unchanged_writes += 1
        return ConfigChange(
            namespace=self.namespace,
            key=key,
            old=entry.effective,
            new=entry.effective,
            version=entry.version,
            seq=0,
            action=action,
            changed_fields=(),
            actor=origin.actor,
            reason=origin.reason,
            origin=self.hub.instance_id,
            at=entry.updated_at or datetime.now(UTC),
            unchanged=True,
        )

    def _make_change(
        self, key: str, old: T | None, new: T | None, record: ChangeRecord
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
        )

    def _commit(
        self,
        key: str,
        version: int,
        plain: dict[str, Any] | None,
        effective: T | None,
        record: ChangeRecord,
    ) -> ConfigChange[T] | None:
        """Make ``version`` current and tell subscribers. Caller holds the key's lock."""
        entry = self._entries.get(key)
        if entry is not None and version <= entry.version:
            return None
        old = entry.effective if entry else None
        if entry is None:
            entry = self._entries[key] = _Entry(version, plain, effective, record.committed_at)
        else:
            entry.version, entry.stored, entry.effective = version, plain, effective
            entry.updated_at, entry.serving = record.committed_at, None
        self._problems.pop(key, None)
        if not self.keyed:
            self._set_current(effective)
        if effective is None and self.keyed:
            # A deleted item leaves only its version behind, to keep versions increasing.
            entry.stored = None
        change = self._make_change(key, old, effective, record)
        self._emit(change)
        return change

    def _emit(self, change: ConfigChange[T]) -> None:
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
        self, key: str, version: int, plain: dict[str, Any] | None
    ) -> tuple[bool, T | None]:
        """The effective value for a stored document, or record why it cannot be used."""
        source = f"database ({self.namespace}/{key} v{version})"
        try:
            if plain is None:
                return True, (None if self.keyed else self._effective(key, {}, source))
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
        entry = self._entries.get(key)
        if entry is not None and record.version <= entry.version:
            return
        plain: dict[str, Any] | None = None
        try:
            plain = self._decode(logged.data, key, record.version)
            usable, effective = self._resolve_stored(key, record.version, plain)
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
                self._entries[key] = _Entry(record.version, plain, None, record.committed_at)
            else:
                if entry.serving is None:
                    entry.serving = (entry.version, entry.stored)
                entry.version, entry.stored = record.version, plain
            return
        self._commit(key, record.version, plain, effective, record)

    async def _catch_up(self, logged: list[LoggedChange]) -> None:
        """Apply change-log rows in seq order (from the hub's catch-up).

        Every version is applied, not only the newest of each key, so that a watcher
        (``confman watch``) sees each change. One row that cannot be applied must not
        cost the others their turn: the hub will not read these rows again.
        """
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
        if notice.version <= self.version(notice.key):
            return
        logged = await self.hub.store.change_at(self.namespace, notice.key, notice.version)
        async with self._lock(notice.key):
            self._apply_logged(notice.key, logged)

    async def _refresh_from_store(self, key: str, *, locked: bool = False) -> None:
        doc = await self.hub.store.load(self.namespace, key)
        if doc is None or doc.version <= self.version(key):
            return
        logged = await self.hub.store.change_at(self.namespace, key, doc.version)
        if locked:
            self._apply_logged(key, logged)
        else:
            async with self._lock(key):
                self._apply_logged(key, logged)

    async def _load(self) -> None:
        """Load every stored document (start-up). Emits nothing."""
        self._load_documents(await self.hub.store.load_namespace(self.namespace))

    def _load_snapshot(self, documents: Iterable[StoredDocument]) -> None:
        """Start-up from the snapshot file (the database is unreachable). Emits nothing."""
        self._load_documents(documents)

    def _load_documents(self, documents: Iterable[StoredDocument]) -> None:
        for doc in documents:
            self._load_document(doc)
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
        self._entries[doc.key] = _Entry(doc.version, plain, effective, doc.updated_at, serving)
        if not self.keyed:
            self._set_current(effective)

    def _close(self) -> None:
        self._subject.on_completed()
