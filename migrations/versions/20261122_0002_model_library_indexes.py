"""model library indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:39:10.085097
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.tables.base


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('model_interactions', schema=None) as batch_op:
        batch_op.create_index('ix_model_interactions_model', ['model_id'], unique=False)
        batch_op.create_index('ix_model_interactions_user_type_created', ['user_id', 'type', 'created_at'], unique=False)

    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('popularity', sa.Integer(), nullable=False, server_default='0'))
        # Create the composite index before dropping the old one: MySQL needs an index
        # on owner_id at every moment for its foreign key.
        batch_op.create_index('ix_models_owner_created', ['owner_id', 'created_at', 'id'], unique=False)
        batch_op.drop_index(batch_op.f('ix_models_owner_id'))
        batch_op.create_index('ix_models_public_downloaded', ['visibility', 'download_count', 'id'], unique=False)
        batch_op.create_index('ix_models_public_latest', ['visibility', 'published_at', 'id'], unique=False)
        batch_op.create_index('ix_models_public_liked', ['visibility', 'like_count', 'id'], unique=False)
        batch_op.create_index('ix_models_public_popular', ['visibility', 'popularity', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index('ix_models_public_popular')
        batch_op.drop_index('ix_models_public_liked')
        batch_op.drop_index('ix_models_public_latest')
        batch_op.drop_index('ix_models_public_downloaded')
        batch_op.drop_index('ix_models_owner_created')
        batch_op.create_index(batch_op.f('ix_models_owner_id'), ['owner_id'], unique=False)
        batch_op.drop_column('popularity')

    with op.batch_alter_table('model_interactions', schema=None) as batch_op:
        batch_op.drop_index('ix_model_interactions_user_type_created')
        batch_op.drop_index('ix_model_interactions_model')

