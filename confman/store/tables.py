"""The SQL schema, as SQLAlchemy Core tables. Alembic migrations create it; tests prove
the two agree, so this module is the reference, never ``metadata.create_all``."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["ENVIRONMENT_LENGTH", "config_changes", "config_documents", "config_fencing", "metadata"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# none_as_null: a tombstone's data is SQL NULL (what `data IS NULL` asks), not JSON null.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, not a BIGINT one.
Seq = BigInteger().with_variant(Integer(), "sqlite")

# The environment a row belongs to: ``''`` is the base every environment inherits (see
# `confman.environments`); a named environment's rows are its overlays (or, for a
# namespace that does not inherit, its own documents). Never NULL: it is part of the key.
ENVIRONMENT_LENGTH = 63

config_documents = Table(
    "config_documents",
    metadata,
    Column("environment", String(ENVIRONMENT_LENGTH), primary_key=True, server_default=""),
    Column("namespace", String(100), primary_key=True),
    Column("key", String(255), primary_key=True),
    # NULL marks a deleted document. The row stays as a tombstone so that its version
    # keeps counting up if the key is created again: per key, versions never repeat.
    Column("data", Json, nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(255), nullable=True),
)

config_changes = Table(
    "config_changes",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("namespace", String(100), nullable=False),
    Column("key", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("actor", String(255), nullable=True),
    Column("reason", Text, nullable=True),
    Column("before", Json, nullable=True),  # masked, for people
    Column("after", Json, nullable=True),  # masked, for people
    Column("changed", Json, nullable=False),
    # The document exactly as written (secrets encrypted), so a rollback or an instance
    # catching up can rebuild that version without a second query; never shown.
    Column("data", Json, nullable=True),
    Column("origin", String(255), nullable=False),
    Column("committed_at", DateTime(timezone=True), nullable=False),
    Column("environment", String(ENVIRONMENT_LENGTH), nullable=False, server_default=""),
    # The change set the row was committed in (NULL: a write of one document): every
    # row of a set shares it, and instances apply a set's rows together.
    Column("change_set", String(36), nullable=True),
    Index(None, "environment", "namespace", "key", "version", unique=True),
    # Replays filtered by namespace (the event stream, `changes_since`) page by seq.
    Index(None, "namespace", "seq"),
    sqlite_autoincrement=True,
)

# The highest fencing token a cluster's leader has acted with (see confman.cluster).
config_fencing = Table(
    "config_fencing",
    metadata,
    Column("cluster", String(255), primary_key=True),
    Column("token", BigInteger, nullable=False),
    Column("holder", String(255), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
