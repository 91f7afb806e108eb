"""phase start time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 00:00:52.154471
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.tables.base


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('generation_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phase_started_at', app.tables.base.UtcDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('generation_requests', schema=None) as batch_op:
        batch_op.drop_column('phase_started_at')

