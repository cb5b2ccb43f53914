"""API bearer tokens, kept as configuration.

Tokens live in the ``api_token`` namespace, one document per token name, so creating or
revoking one is an ordinary audited, version-checked write that reaches every instance
like any other change. Only the SHA-256 of a token is stored: tokens are 256 random bits,
so a fast hash is enough (a slow password hash protects guessable secrets, and these are
not guessable), and it keeps authentication a dictionary lookup.

This module needs no web framework: the ``confman tokens`` commands use it too.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from confman import (
    ConfigHub,
    ConfigurationManager,
    FieldError,
    NotFound,
    ValidationFailed,
)
from confman.environments import check_environment_name

__all__ = [
    "BASE_NAME",
    "TOKEN_PREFIX",
    "ApiToken",
    "ApiTokenManager",
    "IssuedToken",
    "Principal",
    "Role",
]

TOKEN_PREFIX = "cmt_"
#: How a token's ``environments`` (and the API) name the base.
BASE_NAME = "base"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


class Role(enum.StrEnum):
    """What a token may do.

    ``viewer`` < ``editor`` < ``admin``: each may do everything the ones before it may.
    ``service`` is for a service reading its configuration and stands outside that chain:
    it reads what a viewer reads, but effective values come with secrets in clear
    (`reveals_secrets`), and it may write nothing. It ranks with the viewer, so every
    check of a role (`Principal.may`, which all routes go through: writes ask for
    ``editor``, rollbacks, tokens, keys and environments for ``admin``) refuses it, and it
    is no admin, so no grant is widened for it either.
    """

    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"
    SERVICE = "service"

    @property
    def rank(self) -> int:
        return 0 if self is Role.SERVICE else _CHAIN.index(self)

    @property
    def reveals_secrets(self) -> bool:
        """Whether effective values are answered with secrets in clear (else masked)."""
        return self is Role.SERVICE


_CHAIN = (Role.VIEWER, Role.EDITOR, Role.ADMIN)


class ApiToken(BaseModel):
    """One token as stored (its name is the document key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    namespaces: tuple[str, ...] | None = Field(
        default=None, description="namespaces the token may use; null: all"
    )
    environments: tuple[str, ...] | None = Field(
        default=None,
        description="environments the token may use ('base' for the base documents); "
        "null (and absent, in tokens made before environments): all",
    )
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name and grants."""

    name: str
    role: Role
    namespaces: frozenset[str] | None = None
    environments: frozenset[str] | None = None  # None: all; "base" names the base

    def may(self, role: Role) -> bool:
        return self.role.rank >= role.rank

    def sees(self, namespace: str) -> bool:
        return self.role is Role.ADMIN or self.namespaces is None or namespace in self.namespaces

    def reaches(self, environment: str | None) -> bool:
        """Whether the token may use ``environment`` (``None``: the base)."""
        if self.role is Role.ADMIN or self.environments is None:
            return True
        return (BASE_NAME if environment is None else environment) in self.environments


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What `ApiTokenManager.create_token` returns; ``plaintext`` is shown once."""

    name: str
    role: Role
    namespaces: tuple[str, ...] | None
    plaintext: str = field(repr=False)
    environments: tuple[str, ...] | None = None


def _is_environment_name(name: str) -> bool:
    try:
        check_environment_name(name)
    except ValidationFailed:
        return False
    return True


def _digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class ApiTokenManager(ConfigurationManager[ApiToken]):
    """The ``api_token`` namespace: token name -> role, grants and hash."""

    namespace = "api_token"
    inherits = False  # a token issued for one environment's server is no other's
    model = ApiToken
    keyed = True

    def __init__(self, hub: ConfigHub) -> None:
        super().__init__(hub)
        self._index: dict[str, str] | None = None  # sha256 -> name; rebuilt after changes
        self.changes.subscribe(lambda _change: self._forget_index())

    def _forget_index(self) -> None:
        self._index = None

    def authenticate(self, plaintext: str) -> Principal | None:
        """The principal of ``plaintext``, or None for an unknown or revoked token."""
        if not plaintext.startswith(TOKEN_PREFIX) or len(plaintext) > 200:
            return None
        index = self._index
        if index is None:
            index = self._index = {token.token_sha256: name for name, token in self.items()}
        digest = _digest(plaintext)
        name = index.get(digest)
        if name is None:
            return None
        token = self.find(name)
        # The lookup already matched; compare again in constant time all the same, so a
        # stale index can never admit a token whose stored hash has since changed.
        if token is None or not hmac.compare_digest(token.token_sha256, digest):
            return None
        grants = None if token.namespaces is None else frozenset(token.namespaces)
        stages = None if token.environments is None else frozenset(token.environments)
        return Principal(name, token.role, grants, stages)

    async def create_token(
        self,
        name: str,
        role: Role | str,
        *,
        namespaces: Sequence[str] | None = None,
        environments: Sequence[str] | None = None,
        actor: str | None = None,
    ) -> IssuedToken:
        """Create token ``name`` and return its plaintext (the only time it is seen).

        ``environments`` limits the token to those environments (``base`` names the
        base documents); ``None``, the default, grants all. The names are not checked
        against the registry here (the API route does): a token may name an environment
        that is created later.

        Raises:
            ValidationFailed: a bad name, role, namespace or environment list.
            ConcurrencyConflict: a token of that name exists (revoke it first).
        """
        if not _NAME.fullmatch(name):
            raise ValidationFailed(
                self.namespace,
                name[:64],
                [
                    FieldError(
                        "name",
                        "must be 1-64 letters, digits and _.@- and start with a letter or digit",
                    )
                ],
                source="token",
            )
        if str(role) == Role.ADMIN.value and namespaces is not None:
            raise ValidationFailed(
                self.namespace,
                name,
                [FieldError("namespaces", "an admin token has every namespace; name none")],
                source="token",
            )
        if str(role) == Role.ADMIN.value and environments is not None:
            raise ValidationFailed(
                self.namespace,
                name,
                [FieldError("environments", "an admin token has every environment; name none")],
                source="token",
            )
        bad = [
            FieldError(f"environments.{i}", "names no environment (nor 'base')")
            for i, stage in enumerate(environments or ())
            if stage != BASE_NAME and not _is_environment_name(stage)
        ]
        if bad:
            raise ValidationFailed(self.namespace, name, bad, source="token")
        grants = None if namespaces is None else tuple(sorted(set(namespaces)))
        stages = None if environments is None else tuple(sorted(set(environments)))
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        document = {
            "role": str(role),
            "namespaces": None if grants is None else list(grants),
            **({} if stages is None else {"environments": list(stages)}),
            "token_sha256": _digest(plaintext),
            "created_at": datetime.now(UTC).isoformat(),
        }
        change = await self.create(name, document, actor=actor, reason="create API token")
        assert change.new is not None
        return IssuedToken(
            name, change.new.role, change.new.namespaces, plaintext, change.new.environments
        )

    async def revoke(self, name: str, *, actor: str | None = None) -> None:
        """Delete token ``name``; it stops working on every instance as the change arrives.

        Raises:
            NotFound: no such token.
        """
        if name not in self:
            raise NotFound(f"no API token named {name!r}")
        await self.delete(name, actor=actor, reason="revoke API token")
