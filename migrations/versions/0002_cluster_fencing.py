"""Cluster fencing: the highest leader fencing token each cluster has used.

Leader housekeeping (change-log retention) checks and raises this row in the same
transaction as its work, so a deposed leader's late action is rejected.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "config_fencing",
        sa.Column("cluster", sa.String(length=255), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cluster", name=op.f("pk_config_fencing")),
    )


def downgrade() -> None:
    op.drop_table("config_fencing")
