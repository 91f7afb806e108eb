"""queue position

A waiting job's place in line is its request's priority queue (`queue_rank`: 0 high,
1 default, 2 low) and then when it joined that queue (`queued_at`; for a retry or a
wait for a vendor slot, when it is due). "How many wait ahead of me" is a range count
over one index. Existing jobs join in the order they were created (a waiting retry:
when it is due).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.tables.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_generation_jobs_status_queue_rank_queued_at_id_kind"


def upgrade() -> None:
    # Added NOT NULL with a placeholder default, then filled in: making a column NOT NULL
    # afterwards would rebuild the table on SQLite, which its foreign keys refuse.
    with op.batch_alter_table("generation_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("queue_rank", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column(
                "queued_at",
                app.tables.base.UtcDateTime(timezone=True),
                nullable=False,
                server_default="1970-01-01 00:00:00",
            )
        )
    op.execute(
        sa.text(
            "UPDATE generation_jobs SET queue_rank = COALESCE((SELECT CASE"
            " generation_requests.priority WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END"
            " FROM generation_requests"
            " WHERE generation_requests.id = generation_jobs.request_id), 1)"
        )
    )
    op.execute(
        sa.text(
            "UPDATE generation_jobs SET queued_at = CASE WHEN status IN ('PENDING', 'RETRYING')"
            " AND next_attempt_at IS NOT NULL THEN next_attempt_at ELSE created_at END"
        )
    )
    if op.get_bind().dialect.name != "sqlite":  # the code always sets it
        op.execute(sa.text("ALTER TABLE generation_jobs ALTER COLUMN queued_at DROP DEFAULT"))
    with op.batch_alter_table("generation_jobs", schema=None) as batch_op:
        batch_op.create_index(
            _INDEX, ["status", "queue_rank", "queued_at", "id", "kind"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("generation_jobs", schema=None) as batch_op:
        batch_op.drop_index(_INDEX)
        batch_op.drop_column("queued_at")
        batch_op.drop_column("queue_rank")
