"""Every error confman raises, under one root.

```
ConfmanError
├── ValidationFailed        a value was refused by the model or a cross-manager rule
│   ├── ConfigSourceError   an override (environment variable or env file) is invalid
│   └── ChangeSetInvalid    members of a change set were refused (each one listed)
├── ConcurrencyConflict     a version-checked write lost to another writer
│   └── ChangeSetConflict   members of a change set lost to other writers (each one listed)
├── NotFound                no such document, version or manager
│   └── UnknownEnvironment  a name no environment has (never created by a typo)
├── EnvironmentNotEmpty     deleting an environment that holds documents needs force
├── PermissionDenied        the server refused the token: unknown or revoked, or not allowed
├── SchemaOutOfDate         the database is not at the Alembic head
├── StoreUnavailable        the database could not be reached
└── SecretsUnavailable      encrypted data exists but no key can decrypt it
```

No message built here ever contains a secret value: field errors carry paths and
pydantic's messages (which never echo the input), sources carry variable names, and
values are never included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ChangeSetConflict",
    "ChangeSetInvalid",
    "ConcurrencyConflict",
    "ConfigSourceError",
    "ConfmanError",
    "EnvironmentNotEmpty",
    "FieldError",
    "NotFound",
    "PermissionDenied",
    "SchemaOutOfDate",
    "SecretsUnavailable",
    "StoreUnavailable",
    "UnknownEnvironment",
    "ValidationFailed",
]


class ConfmanError(Exception):
    """Root of every confman exception."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One refused field: its dotted path and why (never the refused value).

    A rule across managers may tell of other namespaces' documents ("no model provider
    'x'"). Such an error names them in ``concerns`` and carries in ``withheld`` what to
    tell a reader who may not read them instead (see `seen_by`). Neither takes part in
    equality: they are about who is told, not what was refused.
    """

    path: str
    message: str
    concerns: frozenset[str] = field(default=frozenset(), compare=False)
    withheld: FieldError | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.path or '<document>'}: {self.message}"

    def seen_by(self, may_read: Callable[[str], bool]) -> FieldError:
        """This error as told to a reader for whom ``may_read(namespace)`` says what
        they may read: itself, or its ``withheld`` form when it concerns a namespace
        they may not."""
        if all(may_read(namespace) for namespace in self.concerns):
            return self
        return self.withheld or FieldError(self.path, "refused by a rule over other data")


class ValidationFailed(ConfmanError):
    """A document, patch or override was refused; nothing was written.

    ``source`` says where the data came from: ``"update"``, ``"database (cache/default
    v3)"``, ``"environment variable CONFMAN_CACHE__TTL"`` and so on.
    """

    def __init__(
        self,
        namespace: str,
        key: str,
        errors: Iterable[FieldError],
        *,
        source: str,
        environment: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.key = key
        self.errors: tuple[FieldError, ...] = tuple(errors)
        self.source = source
        #: The environment whose effective value the change would make invalid (a base
        #: write refused because of an overlay); None: the document itself.
        self.environment = environment
        details = "; ".join(str(e) for e in self.errors) or "invalid"
        super().__init__(f"{namespace}/{key} refused (source: {source}): {details}")

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(e.path for e in self.errors)

    def seen_by(self, may_read: Callable[[str], bool]) -> ValidationFailed:
        """This error as told to a reader who may read only the namespaces for which
        ``may_read`` is true (see `FieldError.seen_by`); itself when nothing is withheld."""
        errors = tuple(e.seen_by(may_read) for e in self.errors)
        if all(a is b for a, b in zip(errors, self.errors, strict=True)):
            return self
        return type(self)(
            self.namespace, self.key, errors, source=self.source, environment=self.environment
        )


class ConfigSourceError(ValidationFailed):
    """An override is invalid: names the variable or file and the field, never the value."""


class ChangeSetInvalid(ValidationFailed):
    """A change set was not written: these members were refused.

    ``failures`` holds each refused member's own error (namespace, key, environment,
    fields); ``errors`` lists every field of every member, each path prefixed with its
    document (``router/default: aliases.fast...``).
    """

    def __init__(self, failures: Sequence[ValidationFailed]) -> None:
        self.failures = tuple(failures)
        first = failures[0]

        def where(f: ValidationFailed) -> str:
            return f"{f.namespace}/{f.key}" + (f" in {f.environment}" if f.environment else "")

        errors = [
            FieldError(f"{where(f)}: {e.path}" if e.path else where(f), e.message,
                       concerns=e.concerns, withheld=e.withheld)
            for f in failures
            for e in f.errors
        ]  # fmt: skip
        super().__init__(
            first.namespace, first.key, errors, source="change set",
            environment=first.environment,
        )  # fmt: skip

    def seen_by(self, may_read: Callable[[str], bool]) -> ValidationFailed:
        told = [f.seen_by(may_read) for f in self.failures]
        if all(a is b for a, b in zip(told, self.failures, strict=True)):
            return self
        return ChangeSetInvalid(told)


class ConcurrencyConflict(ConfmanError):
    """Another writer changed the document first; re-read and retry.

    ``current_version`` is the version now stored (0: the document does not exist).
    """

    def __init__(self, namespace: str, key: str, *, expected: int, current: int) -> None:
        self.namespace = namespace
        self.key = key
        self.expected_version = expected
        self.current_version = current
        if expected == 0:
            message = f"{namespace}/{key} already exists (version {current})"
        else:
            message = (
                f"{namespace}/{key}: expected version {expected}, but the stored version is "
                f"{current}; another writer changed it first"
            )
        super().__init__(message)


class ChangeSetConflict(ConcurrencyConflict):
    """A change set was not written: these members found other versions stored.

    ``conflicts`` names each member that lost; the set's other members were not written
    either (a set is all or nothing). The inherited fields describe the first one.
    """

    def __init__(self, conflicts: Sequence[ConcurrencyConflict]) -> None:
        first = conflicts[0]
        super().__init__(
            first.namespace, first.key, expected=first.expected_version,
            current=first.current_version,
        )  # fmt: skip
        self.conflicts = tuple(conflicts)
        self.args = (
            f"change set not written: {len(conflicts)} member(s) lost to other writers: "
            + "; ".join(str(c) for c in conflicts),
        )


class NotFound(ConfmanError):
    """No such document, version, namespace or loaded manager."""


class UnknownEnvironment(NotFound):
    """An environment name that names none: never created by a typo."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "none yet (confman env create NAME)"
        super().__init__(f"unknown environment {name!r}; known: {listed}")


class EnvironmentNotEmpty(ConfmanError):
    """Deleting an environment that still holds overlays needs ``force``."""

    def __init__(self, name: str, documents: int) -> None:
        self.name = name
        self.documents = documents
        super().__init__(
            f"environment {name!r} still holds {documents} document(s); delete it with "
            "force to remove them too (each removal is audited)"
        )


class PermissionDenied(ConfmanError):
    """A ``confman serve`` refused the caller's token (HTTP 401 or 403).

    ``status`` tells the two apart: 401 (no, unknown or revoked token: retrying with the
    same token cannot help) or 403 (the token is valid but its role, namespaces or
    environments do not allow this). The message is the server's, which names the role
    or grant that was missing, never the token.
    """

    def __init__(self, message: str, *, status: int = 403) -> None:
        self.status = status
        super().__init__(message)


class SchemaOutOfDate(ConfmanError):
    """The database schema is not at the migrations' head."""

    def __init__(self, current: Sequence[str], head: str) -> None:
        self.current = tuple(current)
        self.head = head
        at = ", ".join(self.current) or "no confman schema"
        super().__init__(
            f"database schema is at {at}, confman needs {head}; run `confman db upgrade` "
            "(or `alembic upgrade head`) against this database first"
        )


class StoreUnavailable(ConfmanError):
    """The database could not be reached; reads keep serving the last good values."""


class SecretsUnavailable(ConfmanError):
    """Encrypted secrets are stored but no configured key decrypts them."""
