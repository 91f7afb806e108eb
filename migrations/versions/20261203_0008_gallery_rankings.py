"""gallery rankings

The counter sorts of the gallery (POPULAR, MOST_LIKED, MOST_DOWNLOADED) are read from
ranking snapshots: `gallery_rankings` holds one row per version, `gallery_ranks` each
public model's position in each sort of it. The first read of a counter sort builds
the first version; nothing needs filling here.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.tables.base


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'gallery_rankings',
        sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('created_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('version', name=op.f('pk_gallery_rankings')),
    )
    op.create_table(
        'gallery_ranks',
        sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('sort', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.PrimaryKeyConstraint('version', 'sort', 'position', name=op.f('pk_gallery_ranks')),
    )


def downgrade() -> None:
    op.drop_table('gallery_ranks')
    op.drop_table('gallery_rankings')
