"""model views and formats

MOST_VIEWED, a gallery sort: an index on (visibility, view_count, id) like the other
counter sorts' (its pages are read from ranking snapshots, whose rows need no change).
`view_count` exists since 0001. Files converted for a download in STL or PLY are
recorded in `models.files`, so the formats need no column.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 14:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(
            "ix_models_public_viewed", ["visibility", "view_count", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index("ix_models_public_viewed")
