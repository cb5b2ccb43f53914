"""Client API keys of an LLM gateway (namespace ``virtual_key``, a collection).

The gateway hands each client a *virtual key*; ``await keys.issue(...)`` returns its
plaintext exactly once. The plaintext is never stored: the document key is
``HMAC-SHA256(server secret, plaintext)`` in hex, so ``await keys.authenticate(plaintext)``
is one hash and one lookup. The hash of a key presented lately is remembered (see
"The key-id memo" below), so a hit is usually two lookups.

Memory. A fleet can hold hundreds of thousands of keys, so this manager does not load the
namespace at start-up. It keeps a bounded TTL cache of the keys it has looked up (and a
separate bounded cache of unknown ones, so a flood of bad keys cannot evict good ones),
loads a miss from the database once however many requests miss on it at the same moment,
and replaces exactly the changed key when a change arrives, from this instance at once,
from others through the bus or the change log. `cache_info` reports the figures.

Reads. ``get``/``find``/``keys``/``items``/``in`` keep the base contract (memory, never
I/O) and therefore see only cached keys: ``get`` of an uncached key raises `NotFound`
saying so. ``await fetch(key)`` looks a key up in the database when it is not cached.

Changes. ``changes`` emits every change this instance writes and every change made
elsewhere as this instance learns of it, once per version and in increasing versions per
key. ``old`` is the previous value when the key was cached here, else ``None``.

The server secret. Keys are hashed with the ``hmac_key`` of the small singleton namespace
``virtual_key_secret`` (`VirtualKeySecretManager`, loaded automatically): set it with
``CONFMAN_VIRTUAL_KEY_SECRET__HMAC_KEY`` (like any override), or let the first ``issue``
generate one and store it, encrypted like every secret, so every instance shares it with no
set-up and encryption-key rotation re-encrypts it without changing it. Once keys are issued
the stored secret cannot be changed or deleted: that would revoke every key at once.

The key-id memo. A gateway authenticates on every request, and the HMAC costs about twice
a cachetools lookup, more than anything else in a hit. So the ids of presented plaintexts
that name a stored key are kept in a bounded TTL cache (``key_id_memo_size`` entries,
default ``cache_size``; ``cache_ttl_seconds``), replaced by an empty one when the server
secret changes; unknown plaintexts are hashed every time and never kept. It names keys
only: the cache entry still decides, so revocation and expiry apply as before. The price:
up to that many recently presented plaintexts stay in process memory (never on disk);
the process holds each while serving its request anyway, and the decrypted provider
credentials all the time. An entry is not served past the TTL, but cachetools frees
expired entries only when the memo is next written to or `cache_info` runs (each
``/metrics`` scrape of ``confman serve`` calls it), so on an idle instance they can stay
longer. ``key_id_memo_size = 0`` turns the memo off: every request then hashes.

Why a long module: the lazy, bounded caches, the single-flight loads and the
key-id memo are what make ``authenticate`` cheap; they belong to this manager alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

from cachetools import TTLCache
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    StringConstraints,
    field_validator,
)

from ..bus import ChangeNotice
from ..change import ChangeRecord, ConfigChange, FieldSource
from ..exceptions import (
    ConcurrencyConflict,
    ConfigSourceError,
    FieldError,
    NotFound,
    ValidationFailed,
)
from ..manager import DEFAULT_KEY, OWN, Change, ConfigurationManager, Environment, Problem, _Entry
from ..store import LoggedChange, StoredDocument

if TYPE_CHECKING:
    from ..hub import ConfigHub

__all__ = [
    "KEY_PREFIX",
    "Budget",
    "BudgetPeriod",
    "CacheInfo",
    "IssuedKey",
    "VirtualKey",
    "VirtualKeyConfigurationManager",
    "VirtualKeySecret",
    "VirtualKeySecretManager",
]

log = logging.getLogger("confman.managers.virtual_key")

KEY_PREFIX = "sk-cm-"
"""Plaintext keys look like ``sk-cm-<43 url-safe characters>`` (256 random bits)."""

_MAX_PLAINTEXT = 512  # longer input is refused before hashing


# ----------------------------------------------------------------------------- key ids

_SHA256_BLOCK = 64  # bytes
_IPAD = bytes(b ^ 0x36 for b in range(256))  # translation tables, as the stdlib's hmac
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _hmac_sha256(key: bytes) -> Callable[[bytes], str]:
    """``hexdigest(msg)``: HMAC-SHA256 of ``msg`` under ``key``, in hex.

    Bit for bit ``hmac.new(key, msg, hashlib.sha256).hexdigest()`` (the tests check it on
    generated keys and messages): issued keys are named by it, so it must never change.

    Why not the stdlib: every `authenticate` computes one, and it is the largest part of
    a cache hit. ``hmac.HMAC.copy()`` of an HMAC keyed once is a Python-level method (a
    new wrapper object around the copied C state): copy, update and hexdigest cost 2-3x
    what follows; the one-shot ``hmac.digest`` sets OpenSSL's HMAC up from the key on
    every call, slower still. RFC 2104 section 4 allows precomputing instead: the hash
    states after the two key blocks (``key ^ ipad``, ``key ^ opad``) depend on the key
    only, so they are computed once here, and a message costs two C-level state copies,
    two updates, a digest and a hexdigest: ``H(key ^ opad || H(key ^ ipad || msg))``.
    """
    if len(key) > _SHA256_BLOCK:  # RFC 2104: a key longer than a block is hashed first
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")  # ... and every key is zero-padded to a block
    inner_copy = hashlib.sha256(key.translate(_IPAD)).copy
    outer_copy = hashlib.sha256(key.translate(_OPAD)).copy

    def hexdigest(msg: bytes) -> str:
        inner = inner_copy()
        inner.update(msg)
        outer = outer_copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    return hexdigest


# ----------------------------------------------------------------------------- models


class BudgetPeriod(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    TOTAL = "total"


class Budget(BaseModel):
    """A spend limit. The spend itself is runtime state, counted by the gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=4)
    period: BudgetPeriod = BudgetPeriod.MONTHLY
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"


class VirtualKey(BaseModel):
    """One client key's settings.

    Attributes:
        name: display name (team, application, person).
        hint: a recognisable tail of the plaintext (``sk-cm-…AbCd``), set when the key is issued.
        allowed_models: router aliases this key may call; empty allows every alias.
        budget: spend limit, or none.
        rpm_limit, tpm_limit: requests / tokens per minute.
        expires_at: the key stops authenticating at this instant (naive means UTC).
        enabled: a disabled (revoked) key does not authenticate.
        metadata: free-form JSON for the operator's own bookkeeping.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    hint: Annotated[str, StringConstraints(max_length=20)] | None = None
    allowed_models: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list
    )
    budget: Budget | None = None
    rpm_limit: int | None = Field(default=None, gt=0)
    tpm_limit: int | None = Field(default=None, gt=0)
    expires_at: datetime | None = None
    enabled: bool = True
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))

    def active(self, now: datetime | None = None) -> bool:
        """Enabled and not expired: whether the key authenticates."""
        return self.enabled and not self.expired(now)

    def allows(self, alias: str) -> bool:
        return not self.allowed_models or alias in self.allowed_models


class VirtualKeySecret(BaseModel):
    """The server secret virtual keys are hashed with (see the module documentation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hmac_key: SecretStr | None = Field(default=None, min_length=32)


class VirtualKeySecretManager(ConfigurationManager[VirtualKeySecret]):
    """Holds the virtual-key server secret (namespace ``virtual_key_secret``).

    Loaded by `VirtualKeyConfigurationManager`; it need not be named anywhere. Refuses to
    change or delete a stored secret, since that would revoke every issued key.
    """

    namespace = "virtual_key_secret"
    inherits = False  # each environment signs its keys with its own secret
    model = VirtualKeySecret
    keyed = False

    def validate_write(self, key: str, value: VirtualKeySecret | None) -> None:
        entry = self._entries.get(key)
        old = (entry.stored or {}).get("hmac_key") if entry is not None else None
        new = value.hmac_key.get_secret_value() if value and value.hmac_key else None
        if old is not None and new != old:
            raise ValidationFailed(
                self.namespace,
                key,
                [
                    FieldError(
                        "hmac_key",
                        "the virtual-key secret cannot be changed or removed "
                        "once set: every issued virtual key would stop authenticating",
                    )
                ],
                source="virtual key rule",
            )

    async def ensure(self, *, actor: str | None = None) -> bytes:
        """The secret, generating and storing one first if none exists anywhere."""
        found = self.secret()
        if found is not None:
            return found
        try:
            await self.update(
                {"hmac_key": secrets.token_urlsafe(48)},
                expected_version=self.version(),
                actor=actor,
                reason="generate the virtual-key secret",
            )
        except ConcurrencyConflict:
            await self._refresh_from_store(DEFAULT_KEY)  # another instance won: use theirs
        found = self.secret()
        if found is None:  # an override or a stored document without a key
            raise ValidationFailed(
                self.namespace,
                DEFAULT_KEY,
                [FieldError("hmac_key", "no virtual-key secret is available")],
                source="virtual key rule",
            )
        return found

    def secret(self) -> bytes | None:
        value = self.current.hmac_key
        return None if value is None else value.get_secret_value().encode()


# ----------------------------------------------------------------------------- manager


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """What ``issue`` returns. ``plaintext`` is shown here once and never again."""

    key_id: str  # the document key: HMAC-SHA256 of the plaintext, hex
    plaintext: str = field(repr=False)
    value: VirtualKey
    version: int


@dataclass(slots=True)
class CacheInfo:
    """Figures of the key cache.

    ``hits``/``negative_hits``: lookups answered from memory (a known / an unknown key);
    ``misses``: lookups that went to the database, ``loads`` of which ran a query (the
    others joined a load already running); ``invalidations``: cached keys replaced or
    dropped because they changed; ``memo_size``/``memo_maxsize``: plaintexts whose key id
    is remembered (see the module's "key-id memo").
    """

    hits: int = 0
    negative_hits: int = 0
    misses: int = 0
    loads: int = 0
    invalidations: int = 0
    size: int = 0
    negative_size: int = 0
    maxsize: int = 0
    negative_maxsize: int = 0
    pending_versions: int = 0
    memo_size: int = 0
    memo_maxsize: int = 0


class _Keying(NamedTuple):
    """Key ids under one server secret: the HMAC keyed with it, and the ids it gave lately."""

    secret: VirtualKeySecret | None  # the secret manager's value it was keyed from
    hexdigest: Callable[[bytes], str] | None  # None while there is no secret
    memo: TTLCache[str, str] | None  # plaintext -> key id; None: no memo


_NEVER = datetime.min.replace(tzinfo=UTC)
"""`_KeyEntry.active_until` of a key that does not authenticate (disabled, or invalid)."""


@dataclass(slots=True)
class _KeyEntry(_Entry[VirtualKey]):
    """A cached key, holding what `authenticate` checks on a hit.

    ``active_until`` is ``effective.active(now)`` precomputed: ``None`` when the key is
    enabled and never expires, `_NEVER` when it does not authenticate, else its expiry.
    Why: a hit then reads this entry only. Reading the model's fields instead costs about
    as much as the whole bare cachetools hit (measured: the model's attribute dict is no
    longer in the CPU caches after the HMAC). Entries are never changed in place (a
    change stores a new one), so the field cannot go stale.
    """

    active_until: datetime | None = field(init=False)

    def __post_init__(self) -> None:
        value = self.effective
        self.active_until = _NEVER if value is None or not value.enabled else value.expires_at


class VirtualKeyConfigurationManager(ConfigurationManager[VirtualKey]):
    """Virtual keys, loaded lazily through a bounded cache (see the module documentation).

    Cache size and lifetimes are class attributes (subclass to change them) or keyword
    arguments of the constructor; ``timer`` replaces `time.monotonic` for the caches.
    """

    namespace = "virtual_key"
    inherits = False  # a key issued in staging never authenticates in production
    model = VirtualKey
    keyed = True
    requires = (VirtualKeySecretManager,)

    cache_size: int = 10_000
    cache_ttl_seconds: float = 60.0
    negative_cache_size: int = 10_000
    negative_cache_ttl_seconds: float = 60.0
    key_id_memo_size: int | None = None  # None: `cache_size`; 0: hash every request

    def __init__(
        self,
        hub: ConfigHub,
        *,
        cache_size: int | None = None,
        cache_ttl_seconds: float | None = None,
        negative_cache_size: int | None = None,
        negative_cache_ttl_seconds: float | None = None,
        key_id_memo_size: int | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(hub)
        self._info = CacheInfo()
        size = cache_size or self.cache_size
        ttl = cache_ttl_seconds or self.cache_ttl_seconds
        # Keys with a stored document (valid or not) ...
        self._cache: TTLCache[str, _KeyEntry] = TTLCache(maxsize=size, ttl=ttl, timer=timer)
        # ... and keys without one (never created, or deleted): key -> tombstone version.
        self._unknown: TTLCache[str, int] = TTLCache(
            maxsize=negative_cache_size or self.negative_cache_size,
            ttl=negative_cache_ttl_seconds or self.negative_cache_ttl_seconds,
            timer=timer,
        )
        # Versions this instance emitted that the hub's catch-up may still read again:
        # key -> (version, seq). Pruned once catch-up has passed the seq; keeps emissions
        # unique per version even after the key left the cache.
        self._pending: dict[str, tuple[int, int]] = {}
        self._loading: dict[str, asyncio.Task[_Entry[VirtualKey]]] = {}
        self._secret_checked_at = -1e9
        # The hub loads `requires` first, so the secret manager exists already.
        self._secrets = hub.manager(VirtualKeySecretManager)
        memo_size = key_id_memo_size
        if memo_size is None:
            memo_size = size if self.key_id_memo_size is None else self.key_id_memo_size
        if memo_size < 0:
            raise ValueError(f"key_id_memo_size must be >= 0, not {memo_size}")
        self._new_memo: Callable[[], TTLCache[str, str] | None] = lambda: (
            TTLCache(maxsize=memo_size, ttl=ttl, timer=timer) if memo_size else None
        )
        # The secret manager's value is a frozen model, replaced whenever it changes:
        # while `_keying.secret` is the same object, the secret (and the memo) hold.
        self._keying = _Keying(None, None, self._new_memo())

    # ----------------------------------------------------------------- public API

    @property
    def secret_manager(self) -> VirtualKeySecretManager:
        return self.hub.manager(VirtualKeySecretManager)

    def key_id(self, plaintext: str) -> str | None:
        """The document key of ``plaintext``, or None while no server secret exists."""
        hexdigest = self._current_keying().hexdigest
        return None if hexdigest is None else hexdigest(plaintext.encode())

    def _current_keying(self) -> _Keying:
        """HMAC-SHA256 keyed with the current server secret (keyed once per secret)."""
        value = self._secrets.current
        keying = self._keying
        if keying.secret is not value:
            secret = value.hmac_key
            hexdigest = None if secret is None else _hmac_sha256(secret.get_secret_value().encode())
            keying = self._keying = _Keying(value, hexdigest, self._new_memo())
        return keying

    async def issue(
        self,
        value: VirtualKey | Mapping[str, Any],
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> IssuedKey:
        """Create a key with settings ``value``; return it with its plaintext (once).

        Raises:
            ValidationFailed: ``value`` is refused; nothing is written.
        """
        doc: dict[str, Any] = (
            value.model_dump(mode="json", exclude_unset=True)
            if isinstance(value, BaseModel)
            else dict(value)
        )
        self.validate_shape(doc)  # refuse bad settings before a secret is generated
        secret = await self.secret_manager.ensure(actor=actor)
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        key = _hmac_sha256(secret)(plaintext.encode())
        doc["hint"] = f"{KEY_PREFIX}…{plaintext[-4:]}"
        # 256 random bits name no stored key: skip the lookup (were it stored, the
        # INSERT would still fail with ConcurrencyConflict).
        if self._cached(key) is None:
            self._unknown[key] = 0
        change = await self.create(key, doc, actor=actor, reason=reason or "issue virtual key")
        assert change.new is not None
        return IssuedKey(key, plaintext, change.new, change.version)

    def validate_shape(self, doc: Mapping[str, Any]) -> VirtualKey:
        """Validate settings for a new key (nothing is written)."""
        return self._layering.validate(
            self._apply_change(None, doc, "<new>"), key="<new>", source="issue"
        )

    async def authenticate(
        self, plaintext: str, *, now: datetime | None = None
    ) -> VirtualKey | None:
        """The settings of the key ``plaintext`` if it is known, enabled and not expired.

        One HMAC (or a memo of it) and one cache lookup; a miss reads the database once
        (shared by every concurrent miss on the same key). Unknown keys are remembered as
        unknown.
        """
        if not plaintext or len(plaintext) > _MAX_PLAINTEXT:
            return None
        # The hit path is spelled out here: benchmark B7 holds a hit against a bare
        # cachetools hit, and each method call or cold attribute read is a visible share.
        keying = self._keying
        if keying.secret is not self._secrets.current:
            keying = self._current_keying()
        memo = keying.memo
        try:  # `[key]` is the fast way into a cachetools cache (`.get` costs 3x more)
            key = None if memo is None else memo[plaintext]
        except KeyError:
            key = None
        remember = False
        if key is None:  # not presented lately (or no memo): hash it
            if keying.hexdigest is None:
                key = await self._secret_from_store(plaintext)
                if key is None:
                    return None  # no secret anywhere: no key was ever issued
            else:
                key = keying.hexdigest(plaintext.encode())
                # Remembered once it proves to name a stored key: guesses and strays
                # neither stay in memory nor push real keys out of the memo.
                remember = memo is not None
        try:
            entry = self._cache[key]
        except KeyError:  # not cached, or known unknown: `_lookup` counts which
            value = (await self._lookup(key)).effective
            if value is not None and remember and memo is not None:
                memo[plaintext] = key
            return value if value is not None and value.active(now) else None
        if remember and memo is not None:
            memo[plaintext] = key
        self._info.hits += 1  # `_cache` holds stored keys only (unknown ones: `_unknown`)
        until = entry.active_until  # `entry.effective.active(now)`, precomputed
        if until is not None and (until is _NEVER or until <= (now or datetime.now(UTC))):
            return None
        return entry.effective

    async def fetch(self, key: str) -> VirtualKey | None:
        """The effective settings of ``key`` (cache first, then the database)."""
        return (await self._lookup(key)).effective

    async def revoke(
        self, key: str, *, actor: str | None = None, reason: str | None = None
    ) -> ConfigChange[VirtualKey]:
        """Disable ``key``; it stops authenticating on this instance at once."""
        return await self.update(
            {"enabled": False}, key=key, actor=actor, reason=reason or "revoke virtual key"
        )

    def cache_info(self) -> CacheInfo:
        memo = self._current_keying().memo
        for cache in (self._cache, self._unknown, memo):
            if cache is not None:
                cache.expire()
        return dataclasses.replace(
            self._info,
            size=len(self._cache),
            maxsize=int(self._cache.maxsize),
            negative_size=len(self._unknown),
            negative_maxsize=int(self._unknown.maxsize),
            pending_versions=len(self._pending),
            memo_size=0 if memo is None else len(memo),
            memo_maxsize=0 if memo is None else int(memo.maxsize),
        )

    def clear_cache(self) -> None:
        """Forget every cached key (the next lookup of each reads the database)."""
        self._cache.clear()
        self._unknown.clear()
        memo = self._current_keying().memo
        if memo is not None:
            memo.clear()

    # ----------------------------------------------------------------- memory reads

    def _cached(self, key: str) -> _Entry[VirtualKey] | None:
        try:
            return self._cache[key]
        except KeyError:
            pass
        version = self._unknown.get(key)
        return None if version is None else _Entry(version, None, None)

    def get(self, key: str = DEFAULT_KEY) -> VirtualKey:
        """The cached settings of ``key`` (memory only; see `fetch`).

        Raises:
            NotFound: not cached here, or no such key.
        """
        entry = self._cached(key)
        if entry is None:
            raise NotFound(
                f"{self.namespace} item {key!r} is not in this instance's cache; virtual keys "
                "load lazily: use `await manager.fetch(key)`"
            )
        if entry.effective is None:
            raise NotFound(f"{self.namespace} has no item {key!r}")
        return entry.effective

    def find(self, key: str) -> VirtualKey | None:
        entry = self._cached(key)
        return None if entry is None else entry.effective

    def keys(self) -> list[str]:
        """Cached keys only."""
        return [k for k, e in list(self._cache.items()) if e.effective is not None]

    def items(self) -> Iterator[tuple[str, VirtualKey]]:
        """Cached keys only."""
        for key, entry in list(self._cache.items()):
            if entry.effective is not None:
                yield key, entry.effective

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.find(key) is not None

    def version(self, key: str = DEFAULT_KEY, *, environment: Environment = OWN) -> int:
        if self._slot_of(self._target_name(environment)) is None:
            return super().version(key, environment=environment)  # says why not
        entry = self._cached(key)
        pending = self._pending.get(key)
        return max(entry.version if entry else 0, pending[0] if pending else 0)

    def explain(self, key: str = DEFAULT_KEY) -> list[FieldSource]:
        entry = self._cached(key)
        value = self.get(key)
        assert entry is not None
        return self._layering.explain(key, value, self._layers_of(entry))

    def validate(
        self,
        change: Change,
        *,
        key: str = DEFAULT_KEY,
        replace: bool = False,
        environment: Environment = OWN,
    ) -> VirtualKey:
        """Preview against the cached key (`fetch` it first); nothing is written."""
        if self._slot_of(self._target_name(environment)) is None:
            return super().validate(
                change,  # type: ignore[arg-type]
                key=key,
                replace=replace,
                environment=environment,
            )
        entry = self._cached(key)
        plain = self._apply_change(entry.stored if entry else None, change, key, replace=replace)
        candidate = self._candidate(key, plain, source="validate")
        assert candidate.effective is not None
        return candidate.effective

    # ----------------------------------------------------------------- loading

    async def _load(self) -> None:
        """Nothing is loaded at start-up: keys are looked up on demand."""

    def _load_document(self, doc: StoredDocument) -> None:
        self._store_entry(doc.key, self._entry_from(doc))

    def _entry_from(self, doc: StoredDocument | None) -> _KeyEntry:
        if doc is None:
            return _KeyEntry(0, None, None)
        plain = self._decode(doc.data)
        try:
            _usable, effective = self._resolve_stored(doc.key, doc.version, plain)
        except ConfigSourceError as e:  # an override makes this key invalid here
            self._problems[doc.key] = Problem(
                self.namespace, doc.key, doc.version, e.source, e.errors, datetime.now(UTC)
            )
            log.error("refusing %s/%s v%s: %s", self.namespace, doc.key, doc.version, e)
            effective = None
        return _KeyEntry(doc.version, plain, effective, doc.updated_at)

    def _store_entry(self, key: str, entry: _KeyEntry) -> None:
        if entry.stored is None:
            self._cache.pop(key, None)
            self._unknown[key] = entry.version
        else:
            self._unknown.pop(key, None)
            self._cache[key] = entry

    async def _lookup(self, key: str) -> _Entry[VirtualKey]:
        entry = self._cached(key)
        if entry is not None:
            if entry.stored is None:
                self._info.negative_hits += 1
            else:
                self._info.hits += 1
            return entry
        self._info.misses += 1
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._load_key(key), name=f"confman-virtual-key-load-{key[:8]}"
            )
            self._loading[key] = task
            task.add_done_callback(lambda t: self._loaded(key, t))
        # shield: a cancelled caller must not cancel the load the others wait for.
        return await asyncio.shield(task)

    def _loaded(self, key: str, task: asyncio.Task[_Entry[VirtualKey]]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have been cancelled

    async def _load_key(self, key: str) -> _Entry[VirtualKey]:
        while True:
            doc = await self.hub.backend.load(self.namespace, key, environment=self._scope)
            self._info.loads += 1
            # No await from here on: nothing can change the caches under us.
            loaded_version = doc.version if doc else 0
            cached = self._cached(key)
            if cached is not None and cached.version >= loaded_version:
                return cached  # a change arrived (and was cached) while we read
            pending = self._pending.get(key)
            if pending is not None and pending[0] > loaded_version:
                continue  # a newer version was applied while we read: read again
            entry = self._entry_from(doc)
            self._store_entry(key, entry)
            return entry

    async def _secret_from_store(self, plaintext: str) -> str | None:
        # Another instance may have generated the secret since we started; look at most
        # once a second, so that hammering an empty gateway costs no query per request.
        now = time.monotonic()
        if now - self._secret_checked_at < 1.0:
            return None
        self._secret_checked_at = now
        await self.secret_manager._refresh_from_store(DEFAULT_KEY)
        return self.key_id(plaintext)

    # ----------------------------------------------------------------- writes

    async def _entry_for_write(self, key: str) -> _Entry[VirtualKey] | None:
        entry = await self._lookup(key)
        return entry if entry.version else None

    def _commit(
        self,
        key: str,
        version: int,
        plain: dict[str, Any] | None,
        effective: VirtualKey | None,
        record: ChangeRecord,
        raw: Any = None,  # not carried: a server's event reads such a row back
    ) -> ConfigChange[VirtualKey] | None:
        """Emit ``version`` once and make it current where this instance holds the key.

        Caller holds the key's lock. Whether to emit depends only on what was emitted
        (`_pending`); the cache may already hold this version, read from the database.
        """
        if self._emitted(key, version):
            return None
        cached = self._cached(key)
        newer = cached is None or version > cached.version
        if newer and (cached is not None or key in self._loading):
            if cached is not None:
                self._info.invalidations += 1
            stored = plain if effective is not None else None
            self._store_entry(key, _KeyEntry(version, stored, effective, record.committed_at))
        self._pending[key] = (version, record.seq)
        self._problems.pop(key, None)
        old = cached.effective if cached is not None and newer else None
        change = self._make_change(key, old, effective, record)
        self._emit(change)
        return change

    def _emitted(self, key: str, version: int) -> bool:
        pending = self._pending.get(key)
        return pending is not None and version <= pending[0]

    # ----------------------------------------------------------------- other instances

    def _apply_logged(self, key: str, logged: LoggedChange) -> None:
        record = logged.record
        if self._emitted(key, record.version):
            return
        plain = self._decode(logged.data)
        try:
            usable, effective = self._resolve_stored(key, record.version, plain)
        except ConfigSourceError as e:  # an override makes this version invalid here
            self._problems[key] = Problem(
                self.namespace, key, record.version, e.source, e.errors, datetime.now(UTC)
            )
            log.error("refusing %s/%s v%s: %s", self.namespace, key, record.version, e)
            usable, effective = False, None
        if not usable:
            # As the base does: remember the version and the stored document (a patch
            # heals it) and keep the last valid value in service, if this instance has one.
            cached = self._cached(key)
            newer = cached is None or record.version > cached.version
            if newer and (cached is not None or key in self._loading):
                last = cached.effective if cached else None
                self._store_entry(key, _KeyEntry(record.version, plain, last, record.committed_at))
            self._pending[key] = (record.version, record.seq)
            return
        self._commit(key, record.version, plain, effective, record)

    async def _on_notice(self, notice: ChangeNotice) -> None:
        key = notice.key
        if self._cached(key) is None and key not in self._loading:
            return  # not held here: the next lookup reads the database; catch-up emits it
        if notice.environment != self._scope or notice.version <= self.version(key):
            return
        logged = self.hub._unseal(notice)
        if logged is None:
            logged = await self.hub.backend.change_at(
                self.namespace, key, notice.version, environment=self._scope
            )
        async with self._lock(key):
            known = self._cached(key) is not None or key in self._pending
            if not known and notice.seq <= self.hub.caught_up_seq:
                return  # catch-up has already handled (and emitted) this row
            self._apply_logged(key, logged)

    async def _catch_up(self, logged: list[LoggedChange]) -> None:
        # Forget what an earlier catch-up run has passed: no later run reads those rows
        # again. The rows of this run stay until the next one, so that `version(key)`
        # still answers for them right after it (the hub acknowledges with it). The hub
        # moves its cursor past a batch once the batch is applied, so here, before this
        # one, it stands where earlier runs left it.
        # Not `applied_seq`: an own write or a notice applied while a run waited for a
        # lock moves that past rows a later run still reads (and would emit again).
        done = self.hub.caught_up_seq
        for key, (_version, seq) in list(self._pending.items()):
            if seq <= done:
                del self._pending[key]
        await super()._catch_up(logged)

    def _close(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        super()._close()
