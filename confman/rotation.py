"""Encryption-key rotation: re-encrypt every stored secret under the newest key.

The procedure, with no downtime:

1. generate a key (``confman keys generate``) and put it *first* in
   ``CONFMAN_ENCRYPTION_KEY`` on every instance, keeping the old key after it (the first
   key encrypts, all keys decrypt);
2. run ``confman keys rotate`` (this module's `rotate_keys`) once, anywhere;
3. remove the old key from ``CONFMAN_ENCRYPTION_KEY``.

`rotate_keys` rewrites, in one transaction, every encrypted token in the documents table
and in the change log's ``data`` column (the document exactly as each version wrote it,
which rollbacks and catching-up instances read). Values do not change, so versions do not
move, no `ConfigChange` is emitted and other instances have nothing to reload; their
in-memory values stay valid. A token no configured key decrypts aborts the whole rotation
with `SecretsUnavailable`, leaving everything as it was.

Audit: the rotation writes one row to the change log in the same transaction, namespace
``confman``, key ``encryption_keys`` (its version counts rotations), action ``update``,
with the actor, the reason and the counts in ``after``; ``hub.store.history("confman",
"encryption_keys")`` lists past rotations. It is also logged (``confman.rotation``). No
manager owns that namespace, so instances catching up skip the row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, cast, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .change import Action
from .exceptions import ConcurrencyConflict
from .secrets import rotate_document
from .store.tables import config_changes, config_documents

if TYPE_CHECKING:
    from .hub import ConfigHub

__all__ = ["AUDIT_KEY", "AUDIT_NAMESPACE", "rotate_keys"]

log = logging.getLogger("confman.rotation")

AUDIT_NAMESPACE = "confman"
AUDIT_KEY = "encryption_keys"
_MARK = "%$fernet%"  # every encrypted token is stored as {"$fernet": "<token>"}


def _count_tokens(value: Any) -> int:
    if isinstance(value, dict):
        if len(value) == 1 and "$fernet" in value:
            return 1
        return sum(_count_tokens(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_tokens(v) for v in value)
    return 0


async def rotate_keys(
    hub: ConfigHub,
    *,
    actor: str | None = None,
    reason: str | None = None,
    on_progress: Callable[[str, int], None] | None = None,
) -> int:
    """Re-encrypt every stored secret under the first key of ``hub.keyring``.

    Args:
        actor: who rotates (recorded in the audit row).
        reason: why (recorded in the audit row).
        on_progress: called as ``(table, rows rewritten)`` after each table.

    Returns:
        How many encrypted values were re-encrypted.

    Raises:
        SecretsUnavailable: a stored token matches no configured key (nothing changed).
        ConcurrencyConflict: another rotation committed at the same moment.
        StoreUnavailable: the database cannot be reached.
    """
    docs, log_rows = config_documents.c, config_changes.c
    secrets = documents = changes = 0
    last: int | None = None
    try:
        async with hub.store._connect(write=True) as conn:
            found = await conn.execute(
                select(docs.environment, docs.namespace, docs.key, docs.version, docs.data)
                .where(cast(docs.data, Text).like(_MARK))
                .with_for_update()
            )
            for environment, namespace, key, version, data in found.all():
                n = _count_tokens(data)
                if not n:
                    continue
                await conn.execute(
                    update(config_documents)
                    .where(
                        docs.environment == environment,
                        docs.namespace == namespace,
                        docs.key == key,
                        docs.version == version,
                    )
                    .values(data=rotate_document(data, hub.keyring))
                )
                secrets, documents = secrets + n, documents + 1
            if on_progress:
                on_progress("config_documents", documents)
            logged = await conn.execute(
                select(log_rows.seq, log_rows.data)
                .where(cast(log_rows.data, Text).like(_MARK))
                .with_for_update()
            )
            for seq, data in logged.all():
                n = _count_tokens(data)
                if not n:
                    continue
                await conn.execute(
                    update(config_changes)
                    .where(log_rows.seq == seq)
                    .values(data=rotate_document(data, hub.keyring))
                )
                secrets, changes = secrets + n, changes + 1
            if on_progress:
                on_progress("config_changes", changes)
            last = await conn.scalar(
                select(func.max(log_rows.version)).where(
                    log_rows.namespace == AUDIT_NAMESPACE, log_rows.key == AUDIT_KEY
                )
            )
            counts = {"secrets": secrets, "documents": documents, "changes": changes}
            await conn.execute(
                insert(config_changes).values(
                    namespace=AUDIT_NAMESPACE,
                    key=AUDIT_KEY,
                    version=(last or 0) + 1,
                    action=Action.UPDATE.value,
                    actor=actor,
                    reason=reason or "rotate encryption keys: re-encrypt under the first key",
                    before=None,
                    after={"rotated": counts},
                    changed=["rotated"],
                    data=None,
                    origin=hub.instance_id,
                    committed_at=datetime.now(UTC),
                )
            )
    except IntegrityError:
        raise ConcurrencyConflict(
            AUDIT_NAMESPACE, AUDIT_KEY, expected=(last or 0), current=(last or 0) + 1
        ) from None
    log.info(
        "re-encrypted %d secrets under the first key (%d documents, %d change-log rows)",
        secrets,
        documents,
        changes,
        extra={"confman_action": "keys.rotate", "actor": actor, **counts},
    )
    return secrets
