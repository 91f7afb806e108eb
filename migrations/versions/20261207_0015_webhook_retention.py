"""webhook retention

Delivered and failed webhook deliveries are deleted after LUMI_WEBHOOK_RETENTION_DAYS:
an index finds them, oldest first, without reading the outbox's pending rows.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 17:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_webhook_deliveries_status_updated_at"


def upgrade() -> None:
    op.create_index(_INDEX, "webhook_deliveries", ["status", "updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="webhook_deliveries")
