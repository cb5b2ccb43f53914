"""A committed change carried inside its own notice, sealed with the hubs' key.

A notice names a document; a receiver used to read the version it names from the change
log, one database round trip on every instance for every change. When the hubs share an
encryption key (what stored secrets need anyway), the writer also puts the committed row
into the notice, encrypted and authenticated with that key (Fernet: AES-CBC plus
HMAC-SHA256), and a receiver applies it without the read.

Why this keeps the promises of a notice being only a hint:

- Nothing travels in the clear: the transport sees ciphertext, as the database does for
  secret fields.
- A transport still cannot invent a change: a sealed change that does not open under one
  of this hub's keys, is older than `SEAL_TTL_SECONDS`, or names another document than
  its notice is ignored, and the receiver reads the change log as before.
- What is sealed is the row just committed, in the form the change log holds it, so the
  receiver applies exactly what a read would have returned.

Not sealed: members of a change set (catch-up reads a set whole), documents whose row
passes `MAX_SEALED_BYTES`, and every change of a hub without an encryption key.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .bus import ChangeNotice
from .change import Action, ChangeRecord
from .secrets import KeyRing
from .store import LoggedChange

__all__ = ["MAX_SEALED_BYTES", "SEAL_TTL_SECONDS", "seal", "unseal"]

# A bigger row goes the old way (the receiver reads it): a notice stays one small message
# on every transport, and a receiver never decodes more than this from one.
MAX_SEALED_BYTES = 16 * 1024
# Replaying an old sealed change is harmless (versions only move forward), but a window
# bounds what a captured one can do after, say, a document was deleted and created anew.
SEAL_TTL_SECONDS = 60
# base64 of the ciphertext: 4/3 of the padded plaintext, plus Fernet's fixed fields.
_MAX_TOKEN_CHARS = (MAX_SEALED_BYTES + 16) * 4 // 3 + 128


def seal(keyring: KeyRing, record: ChangeRecord, data: dict[str, Any] | None) -> str | None:
    """The committed ``record`` (writing ``data``, its stored form) as a sealed token, or
    None where it is not to be sealed."""
    if record.change_set is not None or not keyring.configured:
        return None
    body = json.dumps(
        [
            record.namespace,
            record.key,
            record.version,
            record.seq,
            record.environment or "",
            record.action.value,
            record.actor,
            record.reason,
            record.changed,
            record.origin,
            record.committed_at.isoformat(),
            data,
        ],
        separators=(",", ":"),
    ).encode()
    if len(body) > MAX_SEALED_BYTES:
        return None
    return keyring.seal(body)


def unseal(keyring: KeyRing, notice: ChangeNotice) -> LoggedChange | None:
    """The change ``notice`` carries, or None: none carried, or not one to trust (the
    caller then reads the change log)."""
    token = notice.change
    if token is None or len(token) > _MAX_TOKEN_CHARS:
        return None
    body = keyring.unseal(token, ttl=SEAL_TTL_SECONDS)
    if body is None:
        return None
    try:
        (namespace, key, version, seq, environment, action, actor, reason, changed, origin,
         at, data) = json.loads(body)  # fmt: skip
        header = (namespace, key, version, seq, environment, origin)
        if header != (notice.namespace, notice.key, notice.version, notice.seq,
                      notice.environment, notice.origin):  # fmt: skip
            return None  # a sealed change moved onto another notice
        record = ChangeRecord(
            seq=seq,
            namespace=namespace,
            key=key,
            version=version,
            action=Action(action),
            actor=actor,
            reason=reason,
            before=None,  # as catch-up reads it: the masked copies are for people
            after=None,
            changed=tuple(changed),
            origin=origin,
            committed_at=datetime.fromisoformat(at),
            environment=environment or None,
        )
    except (ValueError, TypeError):
        return None
    if data is not None and not isinstance(data, dict):
        return None
    return LoggedChange(record, data)
