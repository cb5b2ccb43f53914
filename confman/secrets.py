"""Secrets: encryption at rest, masking for display, and the key ring.

A ``pydantic.SecretStr`` field is stored as ``{"$fernet": "<token>"}`` (Fernet, i.e.
AES-128-CBC + HMAC-SHA256) and shown everywhere else as ``**********#<fingerprint>``:
eight hex digits of a SHA-256 of the value, enough for an operator to see that a secret
changed without seeing it. The fingerprint reveals 32 bits of a hash, which is harmless for
generated credentials; do not keep short human passwords in confman.

Keys come from ``CONFMAN_ENCRYPTION_KEY`` (comma-separated Fernet keys: the first encrypts,
all decrypt, which is how rotation works), or, for the embedded SQLite default, from a key
file beside the database created with mode 0600 on first use.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

from .exceptions import SecretsUnavailable

__all__ = [
    "ENCRYPTION_KEY_VARIABLE",
    "KeyRing",
    "decrypt_document",
    "encrypt_document",
    "fingerprint",
    "from_wire",
    "generate_key",
    "mask",
    "mask_document",
    "masked_paths",
    "plain_document",
    "restore_masked",
    "to_wire",
]

ENCRYPTION_KEY_VARIABLE = "CONFMAN_ENCRYPTION_KEY"
_TOKEN_FIELD = "$fernet"
_MASK = "**********"


def generate_key() -> str:
    """A new random Fernet key, as text."""
    return Fernet.generate_key().decode()


def fingerprint(plaintext: str) -> str:
    return hashlib.sha256(b"confman-secret:" + plaintext.encode()).hexdigest()[:8]


def mask(plaintext: str) -> str:
    return f"{_MASK}#{fingerprint(plaintext)}"


class KeyRing:
    """The encryption keys of one hub.

    Args:
        keys: Fernet keys, newest first. When empty, ``key_file`` is used.
        key_file: where the embedded default keeps its generated key; ``None`` means no
            key can be created, so writing a secret or reading one is an error.
    """

    def __init__(self, keys: Sequence[str] = (), *, key_file: Path | None = None) -> None:
        self._keys = [k.strip() for k in keys if k.strip()]
        self._key_file = key_file
        self._fernet: MultiFernet | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str], *, key_file: Path | None = None) -> KeyRing:
        return cls(env.get(ENCRYPTION_KEY_VARIABLE, "").split(","), key_file=key_file)

    @property
    def configured(self) -> bool:
        return bool(self._keys) or (self._key_file is not None and self._key_file.exists())

    def _multi(self, *, create: bool) -> MultiFernet:
        if self._fernet is None:
            keys = self._keys or self._file_keys(create=create)
            try:
                self._fernet = MultiFernet([Fernet(k) for k in keys])
            except ValueError:
                raise SecretsUnavailable(
                    f"{ENCRYPTION_KEY_VARIABLE} holds a malformed key; each key must be "
                    "32 url-safe base64-encoded bytes (see `confman keys generate`)"
                ) from None
        return self._fernet

    def _file_keys(self, *, create: bool) -> list[str]:
        path = self._key_file
        if path is None:
            raise SecretsUnavailable(
                f"no encryption key: set {ENCRYPTION_KEY_VARIABLE} to a Fernet key "
                "(`confman keys generate` prints one)"
            )
        if not path.exists():
            if not create:
                raise SecretsUnavailable(
                    f"encrypted secrets are stored but there is no key: neither "
                    f"{ENCRYPTION_KEY_VARIABLE} nor the key file {path} is present"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole under a temporary name, then linked into place: link() fails
            # if the file exists, so two processes racing on first use agree on one key,
            # and neither can read a half-written file.
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(generate_key() + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    def encrypt(self, plaintext: str) -> str:
        return self._multi(create=True).encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._multi(create=False).decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretsUnavailable(
                "a stored secret cannot be decrypted with any configured key; was a key "
                f"removed from {ENCRYPTION_KEY_VARIABLE} before `confman keys rotate` ran?"
            ) from None

    def seal(self, data: bytes) -> str | None:
        """``data`` encrypted and authenticated under the newest key; None without a key
        (sealing is an optimisation: `confman.sealed`)."""
        if self._fernet is None and not self.configured:
            return None
        try:
            return self._multi(create=False).encrypt(data).decode()
        except SecretsUnavailable:
            return None

    def unseal(self, token: str, *, ttl: int) -> bytes | None:
        """What `seal` sealed at most ``ttl`` seconds ago under one of these keys, else
        None (forged, foreign, stale, or no key here)."""
        if self._fernet is None and not self.configured:
            return None
        try:
            return self._multi(create=False).decrypt(token.encode(), ttl=ttl)
        except (InvalidToken, SecretsUnavailable):
            return None

    def rotate(self, token: str) -> str:
        try:
            return self._multi(create=False).rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretsUnavailable(
                "a stored secret cannot be decrypted with any configured key"
            ) from None


_PLAIN = frozenset({str, int, bool, type(None)})  # JSON as they are: no ABC checks, no copy


def _walk(value: Any, on_secret: Callable[[str], Any]) -> Any:
    # Linear in the document; the exact-type test first keeps the common leaf cheap.
    if type(value) in _PLAIN:
        return value
    if isinstance(value, SecretStr):
        return on_secret(value.get_secret_value())
    if isinstance(value, SecretBytes):
        return on_secret(value.get_secret_value().decode())
    if isinstance(value, Mapping):
        return {k: _walk(v, on_secret) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_walk(v, on_secret) for v in value]
    return to_jsonable_python(value)


_MASKED = re.compile(r"\*{10}#[0-9a-f]{8}")


def masked_paths(raw: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Paths of secrets whose value is itself a mask: someone pasted shown output back."""
    found: list[str] = []
    for name, value in raw.items():
        path = f"{prefix}{name}"
        if isinstance(value, SecretStr) and _MASKED.fullmatch(value.get_secret_value()):
            found.append(path)
        elif isinstance(value, Mapping):
            found.extend(masked_paths(value, path + "."))
    return found


def plain_document(raw: Mapping[str, Any]) -> dict[str, Any]:
    """JSON form of a python-mode ``model_dump`` with secrets revealed (memory only)."""
    result: dict[str, Any] = _walk(raw, lambda s: s)
    return result


def encrypt_document(raw: Mapping[str, Any], keys: KeyRing) -> dict[str, Any]:
    """JSON form for storage: every secret replaced by its encrypted token."""
    result: dict[str, Any] = _walk(raw, lambda s: {_TOKEN_FIELD: keys.encrypt(s)})
    return result


def mask_document(raw: Mapping[str, Any]) -> dict[str, Any]:
    """JSON form for display and the change log: every secret masked."""
    result: dict[str, Any] = _walk(raw, mask)
    return result


def _is_token(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and _TOKEN_FIELD in value


def _map_tokens(value: Any, fn: Callable[[str], Any]) -> Any:
    if _is_token(value):
        token = value[_TOKEN_FIELD]
        if not isinstance(token, str):
            raise ValueError("a stored secret token is malformed (not a string)")
        return fn(token)
    if isinstance(value, dict):
        return {k: _map_tokens(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_tokens(v, fn) for v in value]
    return value


def decrypt_document(stored: Mapping[str, Any], keys: KeyRing) -> dict[str, Any]:
    """Stored JSON back to plain JSON (secrets revealed) for validation."""
    result: dict[str, Any] = _map_tokens(dict(stored), keys.decrypt)
    return result


WIRE_FIELD = "$secret"


def to_wire(stored: Mapping[str, Any], keys: KeyRing, *, reveal: bool) -> dict[str, Any]:
    """Stored JSON as a server sends it to a remote hub: each secret ``{"$secret": v}``,
    ``v`` in clear when ``reveal``, else masked as `mask` shows it (with a fingerprint, so
    that a changed secret still shows). The keys never leave the server."""
    decrypt = keys.decrypt
    if reveal:
        result: dict[str, Any] = _map_tokens(dict(stored), lambda t: {WIRE_FIELD: decrypt(t)})
    else:
        result = _map_tokens(dict(stored), lambda t: {WIRE_FIELD: mask(decrypt(t))})
    return result


def _map_wire(value: Any, fn: Callable[[str], Any]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(WIRE_FIELD), str):
            return fn(value[WIRE_FIELD])
        return {k: _map_wire(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_wire(v, fn) for v in value]
    return value


def from_wire(data: Mapping[str, Any], keys: KeyRing) -> dict[str, Any]:
    """`to_wire`'s form back to stored JSON, each secret encrypted with ``keys`` (a
    remote hub's own: what it keeps in memory and in its snapshot file)."""
    result: dict[str, Any] = _map_wire(dict(data), lambda v: {_TOKEN_FIELD: keys.encrypt(v)})
    return result


def restore_masked(data: Any, stored: Any, keys: KeyRing) -> Any:
    """``data`` (plain JSON) with each masked secret that is the mask of the secret
    stored at the same place (``stored``, stored form) replaced by that secret: what a
    reader without the right to secrets sends back unchanged. Any other mask is left,
    for validation to refuse."""
    if isinstance(data, str):
        if _MASKED.fullmatch(data) and _is_token(stored):
            token = stored[_TOKEN_FIELD]
            if isinstance(token, str):
                clear = keys.decrypt(token)
                if mask(clear) == data:
                    return clear
        return data
    if isinstance(data, dict):
        under = stored if isinstance(stored, dict) else {}
        return {k: restore_masked(v, under.get(k), keys) for k, v in data.items()}
    if isinstance(data, list):
        items = stored if isinstance(stored, list) else []
        return [
            restore_masked(v, items[i] if i < len(items) else None, keys)
            for i, v in enumerate(data)
        ]
    return data


def rotate_document(stored: Mapping[str, Any], keys: KeyRing) -> dict[str, Any]:
    """Stored JSON with every token re-encrypted under the newest key."""
    result: dict[str, Any] = _map_tokens(dict(stored), lambda t: {_TOKEN_FIELD: keys.rotate(t)})
    return result
