"""Initial schema: call_records, campaign_runs, campaign_leads.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CALL_STATUSES = (
    "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled", "dial-failed"
)
LEAD_STATES = ("pending", "dialling", "in-call", "done", "failed", "skipped")


def _in_list(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "call_records",
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("campaign", sa.String(100), nullable=True),
        sa.Column("lead_id", sa.String(100), nullable=True),
        sa.Column("lead", sa.JSON(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("to_number", sa.String(32), nullable=True),
        sa.Column("from_number", sa.String(32), nullable=True),
        sa.Column("status", sa.String(20), server_default="initiated", nullable=False),
        sa.Column("outcome", sa.String(50), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("end_reason", sa.String(100), nullable=True),
        sa.Column("transcript", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("collected", sa.JSON(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("metrics", sa.JSON(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("turns", sa.JSON(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("recording_path", sa.Text(), nullable=True),
        sa.Column("recording_url", sa.Text(), nullable=True),
        sa.Column("answered_by", sa.String(50), nullable=True),
        sa.Column("duration_secs", sa.Float(), nullable=True),
        sa.Column("escalated", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False),
        _ts("created_at", nullable=False),
        _ts("started_at"),
        _ts("ended_at"),
        _ts("updated_at", nullable=False),
        sa.Column("custom_field", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(_in_list("status", CALL_STATUSES), name=op.f("ck_call_records_status")),
        sa.PrimaryKeyConstraint("call_sid", name=op.f("pk_call_records")),
    )
    for column in ("campaign", "status", "outcome", "created_at"):
        op.create_index(op.f(f"ix_call_records_{column}"), "call_records", [column])

    op.create_table(
        "campaign_runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("campaign", sa.String(100), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=True),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_runs")),
    )

    op.create_table(
        "campaign_leads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("line_number", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.String(100), nullable=False),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("payload", sa.JSON(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("state", sa.String(12), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("next_attempt_at"),
        sa.Column("last_call_sid", sa.String(64), nullable=True),
        sa.Column("last_status", sa.String(20), nullable=True),
        sa.Column("last_outcome", sa.String(50), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("updated_at", nullable=False),
        sa.CheckConstraint(_in_list("state", LEAD_STATES), name=op.f("ck_campaign_leads_state")),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["campaign_runs.id"],
            name=op.f("fk_campaign_leads_run_id_campaign_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_leads")),
        sa.UniqueConstraint("run_id", "lead_id", name=op.f("uq_campaign_leads_run_id_lead_id")),
    )
    op.create_index(
        op.f("ix_campaign_leads_run_id_state_line_number"), "campaign_leads", ["run_id", "state", "line_number"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_campaign_leads_run_id_state_line_number"), table_name="campaign_leads")
    op.drop_table("campaign_leads")
    op.drop_table("campaign_runs")
    for column in ("created_at", "outcome", "status", "campaign"):
        op.drop_index(op.f(f"ix_call_records_{column}"), table_name="call_records")
    op.drop_table("call_records")
