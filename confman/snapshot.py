"""The last-known-good snapshot: one JSON file per instance with the documents it serves.

Written atomically (a temporary file in the same directory, flushed and fsynced, then
renamed over the old one) whenever the applied state changes, so a crash never leaves a
torn file. Documents are kept in their *stored* form: secrets stay encrypted with the
hub's keys, exactly as in the database. A hub that starts while the database is
unreachable loads its managers from this file, reports itself degraded
(``hub.degraded``), and recovers on its own once the database answers.

The file names its format, the instance that wrote it, and ``applied_seq``: every change
up to that id is in it, so catch-up resumes from there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .store import StoredDocument

__all__ = ["FORMAT", "Snapshot", "read_snapshot", "write_snapshot"]

FORMAT = "confman-snapshot/1"
log = logging.getLogger("confman.snapshot")


@dataclass(frozen=True, slots=True)
class Snapshot:
    applied_seq: int
    written_at: datetime
    instance_id: str
    documents: tuple[StoredDocument, ...]

    def namespace(self, namespace: str) -> list[StoredDocument]:
        return [d for d in self.documents if d.namespace == namespace]


def _document(d: StoredDocument) -> dict[str, Any]:
    return {
        "namespace": d.namespace,
        "key": d.key,
        "version": d.version,
        "data": d.data,
        "updated_at": d.updated_at.isoformat(),
        "updated_by": d.updated_by,
        "environment": d.environment,
    }


def write_snapshot(path: str | os.PathLike[str], snapshot: Snapshot) -> None:
    """Replace ``path`` with ``snapshot`` atomically (blocking: call it off the loop)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "format": FORMAT,
        "instance_id": snapshot.instance_id,
        "written_at": snapshot.written_at.isoformat(),
        "applied_seq": snapshot.applied_seq,
        "documents": [_document(d) for d in snapshot.documents],
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        with_suppressed_unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def with_suppressed_unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot | None:
    """The snapshot at ``path``; ``None`` if there is none or it cannot be used."""
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.error("ignoring unreadable snapshot %s: %s", path, e)
        return None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        log.error("ignoring snapshot %s: unknown format", path)
        return None
    try:
        documents = tuple(
            StoredDocument(
                namespace=d["namespace"],
                key=d["key"],
                data=d["data"],
                version=int(d["version"]),
                updated_at=datetime.fromisoformat(d["updated_at"]),
                updated_by=d.get("updated_by"),
                environment=str(d.get("environment") or ""),
            )
            for d in body["documents"]
        )
        return Snapshot(
            applied_seq=int(body["applied_seq"]),
            written_at=datetime.fromisoformat(body["written_at"]),
            instance_id=str(body["instance_id"]),
            documents=documents,
        )
    except (KeyError, TypeError, ValueError) as e:
        log.error("ignoring corrupt snapshot %s: %s", path, e)
        return None


def now() -> datetime:
    return datetime.now(UTC)
