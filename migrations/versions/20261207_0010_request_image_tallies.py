"""request image tallies

A request counts its finished images on its own row (`images_completed`,
`images_failed`), updated with the image under the request's lock, so the stage that
finishes an image knows whether it was the last without counting the request's
images. Existing requests are filled in from their images.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("generation_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("images_completed", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("images_failed", sa.Integer(), nullable=False, server_default="0")
        )
    for column, status in (("images_completed", "COMPLETED"), ("images_failed", "FAILED")):
        op.execute(
            f"UPDATE generation_requests SET {column} = (SELECT COUNT(*) FROM generated_images"
            " WHERE generated_images.request_id = generation_requests.id"
            f" AND generated_images.status = '{status}')"
        )


def downgrade() -> None:
    with op.batch_alter_table("generation_requests", schema=None) as batch_op:
        batch_op.drop_column("images_failed")
        batch_op.drop_column("images_completed")
