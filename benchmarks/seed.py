"""Bulk seeding: many committed changes at once, in exactly the form confman writes them.

Writing 10,000 or 200,000 documents through ``update()`` would take minutes and measure
nothing we want here, so figures that need a full change log (catch-up, start-up,
virtual keys) write the rows in a few transactions: the stored document (validated by the
model, secrets encrypted), and its change-log row (masked before/after, changed paths,
the stored form for catch-up) -- the columns `ConfigStore.write` fills.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import bindparam, func, insert, select, update

BATCH = 2_000


@dataclass(frozen=True, slots=True)
class Doc:
    key: str
    version: int
    plain: dict[str, Any] | None  # None: a deletion
    previous: dict[str, Any] | None = None


async def seed(
    url: str,
    namespace: str,
    model: type[BaseModel],
    docs: Sequence[Doc],
    *,
    encryption_key: str,
    origin: str = "bench-seed",
    log: bool = True,
    environment: str = "",
    partial: bool = False,
) -> int:
    """Commit ``docs`` (in order) as changes of ``namespace``; return the highest seq.

    ``log=False`` writes the documents only (no change-log rows): for figures that only
    look documents up, where 200,000 log rows would cost time and measure nothing.
    ``environment``: whose rows they are ('' the base; a name: that environment's, as
    overlays where the namespace inherits). ``partial``: the documents are overlays
    (only some fields, no secrets), stored as given.
    """
    from confman.patch import changed_paths
    from confman.secrets import KeyRing, encrypt_document, mask_document
    from confman.store import create_engine
    from confman.store.tables import config_changes, config_documents

    keyring = KeyRing([encryption_key])

    def forms(plain: dict[str, Any] | None) -> tuple[Any, Any]:
        if plain is None:
            return None, None
        if partial:
            return dict(plain), dict(plain) if log else None
        raw = model.model_validate(plain).model_dump(mode="python", exclude_unset=True)
        return encrypt_document(raw, keyring), mask_document(raw) if log else None

    now = datetime.now(UTC)
    created: list[dict[str, Any]] = []
    updated: dict[str, dict[str, Any]] = {}
    changes: list[dict[str, Any]] = []
    for doc in docs:
        stored, masked = forms(doc.plain)
        _, before = forms(doc.previous) if log else (None, None)
        changed = list(changed_paths(before, masked)) if log else []
        row = {
            "environment": environment,
            "namespace": namespace,
            "key": doc.key,
            "data": stored,
            "version": doc.version,
            "updated_at": now,
            "updated_by": "bench",
        }
        if doc.version == 1:
            created.append(row)
        else:
            updated[doc.key] = row
        changes.append(
            {
                "environment": environment,
                "namespace": namespace,
                "key": doc.key,
                "version": doc.version,
                "action": "create" if doc.version == 1 else "update",
                "actor": "bench",
                "reason": "seed",
                "before": before,
                "after": masked,
                "changed": changed,
                "data": stored,
                "origin": origin,
                "committed_at": now,
            }
        )
    docs_c = config_documents.c
    renew = (
        update(config_documents)
        .where(
            docs_c.environment == environment,
            docs_c.namespace == bindparam("b_ns"),
            docs_c.key == bindparam("b_key"),
        )
        .values(data=bindparam("data"), version=bindparam("version"))
    )
    engine = create_engine(url)
    try:
        for chunk in _chunks(created):
            async with engine.begin() as conn:
                await conn.execute(insert(config_documents), chunk)
        for chunk in _chunks(changes if log else []):
            async with engine.begin() as conn:
                await conn.execute(insert(config_changes), chunk)
        params = [
            {"b_ns": r["namespace"], "b_key": r["key"], "data": r["data"], "version": r["version"]}
            for r in updated.values()
        ]
        for chunk in _chunks(params):
            async with engine.begin() as conn:
                await conn.execute(renew, chunk)
        async with engine.connect() as conn:
            high = await conn.scalar(select(func.max(config_changes.c.seq)))
    finally:
        await engine.dispose()
    return int(high or 0)


def _chunks(rows: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(rows), BATCH):
        yield rows[i : i + BATCH]
