"""uploaded source images

A user's own image waits in `uploaded_images` between its upload and the request that
turns it into a 3D model (README: "Your own image to 3D"). Nothing to fill.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import mysql

import app.tables.base

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "uploaded_images",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("owner_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column(
            "storage_key",
            sa.String(length=255).with_variant(
                mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb"
            ),
            nullable=False,
        ),
        sa.Column("filename", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("content_type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("created_at", app.tables.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", app.tables.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_uploaded_images_owner_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploaded_images")),
    )
    op.create_index(
        "ix_uploaded_images_expires_at", "uploaded_images", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_uploaded_images_owner_id"), "uploaded_images", ["owner_id"], unique=False
    )


def downgrade() -> None:
    # The table's indexes go with it: on MariaDB the owner's index cannot be dropped
    # alone while the foreign key needs it.
    op.drop_table("uploaded_images")
