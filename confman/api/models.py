"""The JSON shapes of the API, as pydantic models (they document the OpenAPI spec).

Why one module past 500 lines: every route's models in one place, so that shared field
descriptions are written once and the spec has one source; each model is small."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from confman import ChangeRecord, ConfigChange
from confman.changeset import MAX_MEMBERS

from .tokens import Role

__all__ = [
    "ChangeEvent",
    "ChangeSetEntry",
    "ChangeSetMember",
    "ChangeSetRecord",
    "ChangeSetRequest",
    "ChangeSetResult",
    "ChangeSetWritten",
    "ChangeSummary",
    "ClusterView",
    "ComparedField",
    "Comparison",
    "Diff",
    "Document",
    "DocumentList",
    "DocumentSummary",
    "DryRun",
    "EnvironmentDeleted",
    "EnvironmentEffect",
    "EnvironmentInfo",
    "EnvironmentRequest",
    "FieldOrigin",
    "HistoryEntry",
    "LayerSet",
    "LayerSetMember",
    "LayerWrite",
    "Layers",
    "NamespaceInfo",
    "Problem",
    "ProblemError",
    "Readiness",
    "ResetRequest",
    "RollbackRequest",
    "StoredLayer",
    "TokenCreated",
    "TokenInfo",
    "TokenRequest",
    "WhoAmI",
    "WriteResult",
    "from_change",
    "from_record",
    "record_fields",
]


MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the database

_ENVIRONMENT = "the environment it is about (null: the base)"
_BASE_VERSION = (
    "the base document's version under it (inheriting namespaces; null where the "
    "namespace keeps each environment's documents apart)"
)


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
    environments: list[str] | None = Field(
        default=None, description="null: every environment ('base': the base)"
    )


class NamespaceInfo(BaseModel):
    namespace: str
    keyed: bool = Field(description="a collection of items (else one document, 'default')")
    title: str
    description: str | None
    items: int = Field(description="stored documents")
    version: int | None = Field(description="a singleton's stored version (0: defaults)")
    writable: bool = Field(description="whether the caller may write here")
    environment: str | None = Field(default=None, description=_ENVIRONMENT)
    inherits: bool = Field(
        default=True, description="environments inherit the base's documents (overlays)"
    )


class DocumentSummary(BaseModel):
    key: str
    version: int = Field(description="the environment's own document (0: none; the ETag)")
    base_version: int | None = Field(default=None, description=_BASE_VERSION)
    updated_at: datetime | None
    updated_by: str | None


class DocumentList(BaseModel):
    namespace: str
    environment: str | None = Field(default=None, description=_ENVIRONMENT)
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
    environment: str | None = Field(default=None, description=_ENVIRONMENT)
    version: int = Field(
        description="the stored version of the environment's own document, which a write "
        "there changes (0: nothing stored; an overlay's in an environment); also the ETag"
    )
    base_version: int | None = Field(default=None, description=_BASE_VERSION)
    value: dict[str, Any] = Field(
        description="the effective value, secrets masked (in clear for a service token)"
    )
    sources: list[FieldOrigin]
    problems: list[StoredProblem]


class Snapshot(BaseModel):
    environment: str | None = Field(default=None, description=_ENVIRONMENT)
    seq: int = Field(
        description="every change up to this seq is in the documents: resume the event "
        "stream from it (Last-Event-ID)"
    )
    documents: list[Document] = Field(description="by namespace, then key")


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
    environment: str | None = Field(default=None, description=_ENVIRONMENT)
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
    change_set: str | None = Field(
        default=None, description="the change set it was committed in (null: a write of one)"
    )


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
        "change_set": record.change_set,
    }


class HistoryEntry(_ChangeFields):
    environment: str | None = Field(default=None, description=_ENVIRONMENT)
    diff: list[Diff] = Field(description="stored document against the version before")


class RollbackRequest(BaseModel):
    to_version: int = Field(ge=1, le=MAX_VERSION)


class ResetRequest(BaseModel):
    fields: list[str] | None = Field(
        default=None,
        max_length=1000,
        description="dotted paths to remove from the overlay (inherit the base again); "
        "null: drop the whole overlay (also shows an item the environment hid)",
    )


class ChangeEvent(_ChangeFields):
    """The data of one server-sent event (``id`` is ``seq``)."""

    namespace: str
    key: str
    environment: str | None = Field(default=None, description="whose document (null: the base)")
    data: dict[str, Any] | None = Field(
        default=None,
        description="the stored document this change wrote (the base's, or the environment's "
        "overlay), as GET /api/v1/layers answers it: secrets masked, in clear for a service "
        "token; null for a deletion, or when data_omitted",
    )
    data_omitted: bool = Field(
        default=False,
        description="the document is larger than the server sends in an event: read it "
        "with GET /api/v1/layers?namespace=&key=",
    )


class StoredLayer(BaseModel):
    """One stored document as a remote hub loads it: the base's, or an environment's
    overlay over it, without any instance's env files or variables."""

    namespace: str
    key: str
    environment: str | None = Field(default=None, description="whose document (null: the base)")
    version: int
    data: dict[str, Any] | None = Field(
        description="secrets masked, in clear for a service token; null: deleted"
    )
    updated_at: datetime
    updated_by: str | None


class Layers(BaseModel):
    environment: str | None = Field(default=None, description=_ENVIRONMENT)
    seq: int = Field(
        description="every change up to this seq is in the documents: resume the event "
        "stream from it (Last-Event-ID)"
    )
    documents: list[StoredLayer] = Field(description="by namespace, then key; base first")


class LayerWrite(BaseModel):
    """A stored document to write as it is (what a remote hub's managers built)."""

    data: dict[str, Any] | None = Field(description="the document or overlay; null deletes it")
    action: Literal["create", "update", "delete", "rollback"] = "update"


class LayerSetMember(LayerWrite):
    namespace: str
    key: str = Field(min_length=1, max_length=255)
    environment: str | None = Field(default=None, description="whose document (null: the base)")
    expected_version: int = Field(ge=0, le=MAX_VERSION, description="as If-Match; 0: new")


class LayerSet(BaseModel):
    """Stored documents to write together, as one change set (all of them, or none)."""

    writes: list[LayerSetMember] = Field(min_length=1, max_length=MAX_MEMBERS)


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    namespaces: list[str] | None = None
    environments: list[str] | None = Field(
        default=None,
        max_length=100,
        description="limit the token to these environments ('base': the base); null: all",
    )


class TokenInfo(BaseModel):
    name: str
    role: Role
    namespaces: list[str] | None
    environments: list[str] | None = Field(default=None, description="null: all")
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


class EnvironmentInfo(BaseModel):
    name: str
    description: str
    version: int
    updated_at: datetime
    updated_by: str | None
    documents: int = Field(description="live documents the environment holds (its overlays)")


class EnvironmentRequest(BaseModel):
    name: str = Field(
        max_length=63, description="lower-case letters, digits and dashes, from a letter"
    )
    description: str = Field(default="", max_length=1000)


class EnvironmentDeleted(BaseModel):
    name: str
    removed: int = Field(description="its documents deleted with it (each audited)")


class ComparedField(BaseModel):
    namespace: str
    key: str
    path: str = Field(description="dotted field path; '' for an item present on one side only")
    left: Any = Field(description="JSON value; a secret as 'fingerprint:<16 hex>'")
    right: Any
    left_source: str = Field(description="default, database (base v7), database (staging v3)…")
    right_source: str
    left_present: bool
    right_present: bool
    secret: bool
    same: bool


class Comparison(BaseModel):
    left: str = Field(description="an environment's name, or 'base'")
    right: str
    everything: bool = Field(description="false: only the fields that differ")
    fields: list[ComparedField]


class Readiness(BaseModel):
    status: str
    database: str
    schema_revision: str | None = None


# --------------------------------------------------------------------------- change sets

MemberOp = Literal["update", "create", "delete", "reset", "rollback"]
_NEEDS_VALUE = frozenset({"update", "create"})


class ChangeSetMember(BaseModel):
    """One write of a change set, as the document routes would make it."""

    model_config = {"extra": "forbid"}

    op: MemberOp
    namespace: str = Field(max_length=255)
    key: str | None = Field(default=None, description="null: 'default' (a singleton)")
    environment: str | None = Field(
        default=None,
        max_length=63,
        description="'base': the base; null: this server's own environment",
    )
    if_match: int | None = Field(
        default=None,
        ge=0,
        le=MAX_VERSION,
        description="the version the member is based on (as If-Match; needed by delete)",
    )
    value: dict[str, Any] | None = Field(
        default=None,
        description="update: a JSON merge patch (or, with replace, the document); "
        "create: the document",
    )
    replace: bool = Field(default=False, description="update: the value replaces the document")
    fields: list[str] | None = Field(
        default=None, max_length=1000, description="reset: paths to remove (null: all)"
    )
    to_version: int | None = Field(default=None, ge=1, le=MAX_VERSION, description="rollback")

    @model_validator(mode="after")
    def _fits_op(self) -> ChangeSetMember:
        if self.op in _NEEDS_VALUE and self.value is None:
            raise ValueError(f"{self.op} needs a value (a JSON object)")
        if self.op not in _NEEDS_VALUE and self.value is not None:
            raise ValueError(f"{self.op} takes no value")
        if self.op == "rollback" and self.to_version is None:
            raise ValueError("rollback needs to_version")
        if self.op != "rollback" and self.to_version is not None:
            raise ValueError(f"{self.op} takes no to_version")
        if self.op != "reset" and self.fields is not None:
            raise ValueError(f"{self.op} takes no fields (only reset does)")
        if self.op != "update" and self.replace:
            raise ValueError(f"{self.op} takes no replace (only update does)")
        if self.op == "delete" and self.if_match is None:
            raise ValueError("delete needs if_match (the version you read), as DELETE does")
        if self.op == "create" and self.if_match not in (None, 0):
            raise ValueError("create takes no if_match but 0 (the item must not exist)")
        return self


class ChangeSetRequest(BaseModel):
    model_config = {"extra": "forbid"}

    actor: str | None = Field(
        default=None,
        max_length=128,
        description="on whose behalf (recorded after the token's name: 'token (actor)')",
    )
    reason: str | None = Field(default=None, max_length=255, description="for the audit trail")
    members: list[ChangeSetMember] = Field(min_length=1, max_length=MAX_MEMBERS)


class ChangeSetWritten(BaseModel):
    """One member's resulting change."""

    member: int = Field(description="its index in the request (or in the set's log order)")
    namespace: str
    key: str
    environment: str | None = Field(default=None, description=_ENVIRONMENT)
    version: int = Field(description="the version it wrote (the current one when unchanged)")
    seq: int = Field(description="its change-log position (0: not written)")
    change_set: str | None
    action: str
    changed: list[str]
    pinned: list[str] = Field(default=[], description="fields an override of this server pins")
    unchanged: bool = Field(default=False, description="it would store what is stored")
    diff: list[Diff] = Field(default=[], description="effective value before against after")
    per_environment: list[EnvironmentEffect] = Field(
        default=[],
        description="dry run of a base write: each environment (of those the token may read) "
        "whose effective value it moves, under that environment's overlay",
    )


class EnvironmentEffect(BaseModel):
    """A base write as one environment would see it."""

    environment: str
    changed: list[str]
    diff: list[Diff]


class ChangeSetResult(BaseModel):
    change_set: str | None = Field(description="the set's id (null: nothing to write)")
    dry_run: bool = False
    members: list[ChangeSetWritten]


class ChangeSetEntry(BaseModel):
    """A committed set as history shows it: one entry with its members."""

    change_set: str
    actor: str | None
    reason: str | None
    at: datetime
    members: list[ChangeSetRecord]


class ChangeSetRecord(HistoryEntry):
    namespace: str
    key: str


ChangeSetEntry.model_rebuild()


def from_change(change: ConfigChange[Any]) -> ChangeEvent:
    return ChangeEvent(
        seq=change.seq,
        namespace=change.namespace,
        key=change.key,
        version=change.version,
        action=str(change.action),
        actor=change.actor,
        reason=change.reason,
        origin=change.origin,
        at=change.at,
        changed=list(change.stored_changed),  # as the change log has it, for resumes
        environment=change.environment or None,
        change_set=change.change_set,
    )


def from_record(record: ChangeRecord) -> ChangeEvent:
    return ChangeEvent(
        **record_fields(record),
        namespace=record.namespace,
        key=record.key,
        environment=record.environment or None,
    )
