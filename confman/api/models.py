"""The JSON shapes of the API, as pydantic models (they document the OpenAPI spec)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from confman import ChangeRecord

from .tokens import Role

__all__ = [
    "ChangeEvent",
    "ChangeSummary",
    "ClusterView",
    "Diff",
    "Document",
    "DocumentList",
    "DocumentSummary",
    "DryRun",
    "FieldOrigin",
    "HistoryEntry",
    "NamespaceInfo",
    "Problem",
    "ProblemError",
    "Readiness",
    "RollbackRequest",
    "TokenCreated",
    "TokenInfo",
    "TokenRequest",
    "WhoAmI",
    "WriteResult",
    "record_fields",
]


MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the database


class ProblemError(BaseModel):
    path: str = Field(description="dotted field path ('' for the whole document)")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemError] = []
    current_version: int | None = Field(default=None, description="on 412: the stored version")


class WhoAmI(BaseModel):
    name: str
    role: Role
    namespaces: list[str] | None = Field(description="null: every namespace")


class NamespaceInfo(BaseModel):
    namespace: str
    keyed: bool = Field(description="a collection of items (else one document, 'default')")
    title: str
    description: str | None
    items: int = Field(description="stored documents")
    version: int | None = Field(description="a singleton's stored version (0: defaults)")
    writable: bool = Field(description="whether the caller may write here")


class DocumentSummary(BaseModel):
    key: str
    version: int
    updated_at: datetime | None
    updated_by: str | None


class DocumentList(BaseModel):
    namespace: str
    keyed: bool
    documents: list[DocumentSummary]
    next_after: str | None = Field(default=None, description="more remain: the next 'after'")


class FieldOrigin(BaseModel):
    path: str
    layer: str = Field(description="default, database, env_file or environment")
    detail: str | None = Field(description="the version, file or variable it came from")
    value: Any
    shadows: list[str] = Field(description="lower layers that also set it and lost")


class StoredProblem(BaseModel):
    version: int
    source: str
    errors: list[ProblemError]


class Document(BaseModel):
    namespace: str
    key: str
    version: int = Field(description="stored version (0: nothing stored); also the ETag")
    value: dict[str, Any] = Field(description="the effective value, secrets masked")
    sources: list[FieldOrigin]
    problems: list[StoredProblem]


class ChangeSummary(BaseModel):
    seq: int
    version: int
    action: str
    changed: list[str] = Field(
        description="effective fields that changed; for a created or deleted item, the stored "
        "fields it wrote, as history and the event stream list them"
    )
    pinned: list[str] = Field(description="stored fields changed but hidden by an override")
    unchanged: bool = Field(
        default=False,
        description="the write would have stored what was stored, so nothing was: no new "
        "version (version and ETag are the current ones), no history entry, no event; seq is 0",
    )


class WriteResult(Document):
    change: ChangeSummary


class Diff(BaseModel):
    path: str
    change: Literal["added", "removed", "changed"] = Field(
        description="added: absent before; removed: absent after (null is a value)"
    )
    before: Any = None
    after: Any = None


class DryRun(BaseModel):
    dry_run: bool = True
    value: dict[str, Any] | None = Field(description="the effective value it would give")
    diff: list[Diff]


class _ChangeFields(BaseModel):
    seq: int
    version: int
    action: str
    actor: str | None
    reason: str | None
    origin: str = Field(description="the instance that committed it")
    at: datetime
    changed: list[str]


def record_fields(record: ChangeRecord) -> dict[str, Any]:
    """The fields of a change-log row that stream events and history entries share."""
    return {
        "seq": record.seq,
        "version": record.version,
        "action": str(record.action),
        "actor": record.actor,
        "reason": record.reason,
        "origin": record.origin,
        "at": record.committed_at,
        "changed": list(record.changed),
    }


class HistoryEntry(_ChangeFields):
    diff: list[Diff] = Field(description="stored document against the version before")


class RollbackRequest(BaseModel):
    to_version: int = Field(ge=1, le=MAX_VERSION)


class ChangeEvent(_ChangeFields):
    """The data of one server-sent event (``id`` is ``seq``)."""

    namespace: str
    key: str


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    namespaces: list[str] | None = None


class TokenInfo(BaseModel):
    name: str
    role: Role
    namespaces: list[str] | None
    created_at: datetime


class TokenCreated(TokenInfo):
    token: str = Field(description="the bearer token; shown only here")


class ClusterView(BaseModel):
    instance_id: str
    redis: bool = Field(description="whether instances share changes through Redis")
    is_leader: bool
    applied_seq: int
    database_seq: int | None
    leader: str | None
    fencing_token: int | None
    instances: list[dict[str, Any]]
    drift: list[dict[str, Any]]


class Readiness(BaseModel):
    status: str
    database: str
    schema_revision: str | None = None
