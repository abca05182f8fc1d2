"""Campaigns on the job engine: a run's state and options, a lead's claim time, dial grants.

`campaign_runs.state` (running, paused, cancelled) and `options` (concurrency, calls per
minute, window, retries) are read by every job worker; `dial_grants` holds one row per dial
so the calls-per-minute limits of an Exotel account and of a run hold across all workers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign_runs") as batch:
        batch.add_column(sa.Column("state", sa.String(12), nullable=False, server_default="running"))
        batch.add_column(sa.Column("options", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("account", sa.String(100), nullable=True))
        batch.create_check_constraint(op.f("ck_campaign_runs_state"), "state IN ('running', 'paused', 'cancelled')")
    # Runs from before the job engine wait for someone to resume them: a worker starting up
    # must not dial a run its owner had abandoned.
    op.execute("UPDATE campaign_runs SET state = 'paused'")
    with op.batch_alter_table("campaign_leads") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "dial_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account", sa.String(100), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("lead_row_id", sa.Integer(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dial_grants")),
    )
    op.create_index(op.f("ix_dial_grants_account_granted_at"), "dial_grants", ["account", "granted_at"])
    op.create_index(op.f("ix_dial_grants_run_id_granted_at"), "dial_grants", ["run_id", "granted_at"])
    op.create_index(op.f("ix_campaign_leads_last_call_sid"), "campaign_leads", ["last_call_sid"])


def downgrade() -> None:
    op.drop_index(op.f("ix_campaign_leads_last_call_sid"), table_name="campaign_leads")
    op.drop_table("dial_grants")
    with op.batch_alter_table("campaign_leads") as batch:
        batch.drop_column("claimed_at")
    with op.batch_alter_table("campaign_runs") as batch:
        batch.drop_constraint("ck_campaign_runs_state", type_="check")
        batch.drop_column("account")
        batch.drop_column("options")
        batch.drop_column("state")
