"""Call ownership: call_records.owner_id and the server_workers heartbeat table.

A record taken by a server process names it; a process shows it is alive by its heartbeat,
and a record whose owner stopped beating is closed by a sweep (end_reason worker_lost).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("call_records", sa.Column("owner_id", sa.String(100), nullable=True))
    op.create_index(op.f("ix_call_records_owner_id"), "call_records", ["owner_id"])
    op.create_table(
        "server_workers",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_workers")),
    )


def downgrade() -> None:
    op.drop_table("server_workers")
    op.drop_index(op.f("ix_call_records_owner_id"), table_name="call_records")
    with op.batch_alter_table("call_records") as batch:
        batch.drop_column("owner_id")
