"""Environments: every document and change-log row belongs to one.

Existing rows become base rows (environment ``''``), so a populated database keeps
every document, version and history row, and a hub without an environment reads exactly
what it read before. The documents' primary key becomes (environment, namespace, key);
versions count per (environment, namespace, key). Replays filtered by namespace get the
``(namespace, seq)`` index they lacked, and change-log rows get a ``change_set`` id
(NULL for a write of one document).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENVIRONMENT = 63


def upgrade() -> None:
    # SQLite cannot alter a primary key in place: batch mode copies the table.
    with op.batch_alter_table("config_documents", recreate="auto") as batch:
        batch.add_column(
            sa.Column(
                "environment",
                sa.String(length=_ENVIRONMENT),
                nullable=False,
                server_default="",
            )
        )
        batch.drop_constraint("pk_config_documents", type_="primary")
        batch.create_primary_key("pk_config_documents", ["environment", "namespace", "key"])
    with op.batch_alter_table("config_changes") as batch:
        batch.add_column(
            sa.Column(
                "environment",
                sa.String(length=_ENVIRONMENT),
                nullable=False,
                server_default="",
            )
        )
        # Room for change sets: the id shared by the rows one transaction commits.
        batch.add_column(sa.Column("change_set", sa.String(length=36), nullable=True))
        batch.drop_index("ix_config_changes_namespace_key_version")
        batch.create_index(
            "ix_config_changes_environment_namespace_key_version",
            ["environment", "namespace", "key", "version"],
            unique=True,
        )
        batch.create_index("ix_config_changes_namespace_seq", ["namespace", "seq"])


def downgrade() -> None:
    # Going back to one environment: only the base survives (overlays have no place in
    # the old schema, and two rows of one (namespace, key) could not share its key).
    op.execute("DELETE FROM config_documents WHERE environment <> ''")
    op.execute("DELETE FROM config_changes WHERE environment <> ''")
    with op.batch_alter_table("config_changes") as batch:
        batch.drop_index("ix_config_changes_namespace_seq")
        batch.drop_index("ix_config_changes_environment_namespace_key_version")
        batch.create_index(
            "ix_config_changes_namespace_key_version", ["namespace", "key", "version"], unique=True
        )
        batch.drop_column("change_set")
        batch.drop_column("environment")
    with op.batch_alter_table("config_documents", recreate="auto") as batch:
        batch.drop_constraint("pk_config_documents", type_="primary")
        batch.create_primary_key("pk_config_documents", ["namespace", "key"])
        batch.drop_column("environment")
