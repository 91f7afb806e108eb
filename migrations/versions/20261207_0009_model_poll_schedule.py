"""model poll schedule

A 3D job at a vendor is polled by a per-process poller that leases the jobs whose
`next_poll_at` has come (workers/poller.py) instead of by one delayed message per
poll. Jobs already running when this runs are due at once; the old POLL_MODEL
messages still queued only nudge them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.tables.base


revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("generation_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_poll_at", app.tables.base.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_generation_jobs_status_next_poll_at", ["status", "next_poll_at"], unique=False
        )
    op.execute(
        sa.text(
            "UPDATE generation_jobs SET next_poll_at = heartbeat_at"
            " WHERE kind = 'MODEL' AND status = 'RUNNING' AND vendor_job_id IS NOT NULL"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("generation_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_generation_jobs_status_next_poll_at")
        batch_op.drop_column("next_poll_at")
