"""webhooks

Signed webhooks (app/webhooks): the endpoints users register, the per-user cursor over
the event log with the default secret for a request's own `webhookUrl`, the outbox of
deliveries, and the `webhookUrl` of requests that have one. Nothing needs filling: a user's
cursor starts at their last event when their first webhook is made.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.tables.base

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STR = sqlmodel.sql.sqltypes.AutoString
_TIME = app.tables.base.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", _STR(length=32), nullable=False),
        sa.Column("owner_id", _STR(length=32), nullable=False),
        sa.Column("url", _STR(length=2000), nullable=False),
        sa.Column("events", _STR(length=64), nullable=False),
        sa.Column("secret", _STR(length=100), nullable=False),
        sa.Column("previous_secret", _STR(length=100), nullable=True),
        sa.Column("previous_secret_expires_at", _TIME(timezone=True), nullable=True),
        sa.Column("after_user_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME(timezone=True), nullable=False),
        sa.Column("updated_at", _TIME(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_webhook_endpoints_owner_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        "ix_webhook_endpoints_owner_created",
        "webhook_endpoints",
        ["owner_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "webhook_accounts",
        sa.Column("user_id", _STR(length=32), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("secret", _STR(length=100), nullable=False),
        sa.Column("previous_secret", _STR(length=100), nullable=True),
        sa.Column("previous_secret_expires_at", _TIME(timezone=True), nullable=True),
        sa.Column("created_at", _TIME(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_webhook_accounts_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_webhook_accounts")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _STR(length=40), nullable=False),
        sa.Column("owner_id", _STR(length=32), nullable=False),
        sa.Column("endpoint_id", _STR(length=32), nullable=True),
        sa.Column("target", _STR(length=32), nullable=False),
        sa.Column("url", _STR(length=2000), nullable=False),
        sa.Column("request_id", _STR(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("user_seq", sa.Integer(), nullable=False),
        sa.Column("event_type", _STR(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", _STR(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TIME(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", _STR(length=500), nullable=True),
        sa.Column("created_at", _TIME(timezone=True), nullable=False),
        sa.Column("updated_at", _TIME(timezone=True), nullable=False),
        sa.Column("delivered_at", _TIME(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_webhook_deliveries_owner_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_status_next_attempt_at",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_deliveries_target_request_seq",
        "webhook_deliveries",
        ["target", "request_id", "seq"],
        unique=False,
    )
    op.create_index(
        "ix_webhook_deliveries_owner_created",
        "webhook_deliveries",
        ["owner_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "webhook_request_urls",
        sa.Column("request_id", _STR(length=32), nullable=False),
        sa.Column("user_id", _STR(length=32), nullable=False),
        sa.Column("url", _STR(length=2000), nullable=False),
        sa.Column("created_at", _TIME(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_webhook_request_urls_user_id_users")
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_webhook_request_urls")),
    )


def downgrade() -> None:
    op.drop_table("webhook_request_urls")
    # Dropping a table drops its indexes (MariaDB refuses to drop one a foreign key uses).
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_accounts")
    op.drop_table("webhook_endpoints")
