"""create tables

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 22:50:21.365625
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.tables.base


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=191), nullable=False),
    sa.Column('display_name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('credits', sa.Integer(), nullable=False),
    sa.Column('event_seq', sa.Integer(), nullable=False),
    sa.Column('created_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('external_id', name=op.f('uq_users_external_id'))
    )
    op.create_table('generation_requests',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('optimized_prompts', sa.JSON(), nullable=True),
    sa.Column('image_count', sa.Integer(), nullable=False),
    sa.Column('image_width', sa.Integer(), nullable=False),
    sa.Column('image_height', sa.Integer(), nullable=False),
    sa.Column('optimize_prompt', sa.Boolean(), nullable=False),
    sa.Column('auto_model', sa.Boolean(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('step', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('progress_estimated', sa.Boolean(), nullable=False),
    sa.Column('selected_image_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('error_code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('error_message', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('created_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', app.tables.base.UtcDateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', app.tables.base.UtcDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_generation_requests_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_generation_requests')),
    sa.UniqueConstraint('user_id', 'idempotency_key', name=op.f('uq_generation_requests_user_id_idempotency_key'))
    )
    with op.batch_alter_table('generation_requests', schema=None) as batch_op:
        batch_op.create_index('ix_generation_requests_user_created', ['user_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_generation_requests_user_status', ['user_id', 'status'], unique=False)

    op.create_table('generated_images',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('storage_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('content_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('created_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['generation_requests.id'], name=op.f('fk_generated_images_request_id_generation_requests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_generated_images')),
    sa.UniqueConstraint('request_id', 'index', name=op.f('uq_generated_images_request_id_index'))
    )
    op.create_table('generation_jobs',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('image_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('vendor_job_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('poll_count', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', app.tables.base.UtcDateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', app.tables.base.UtcDateTime(timezone=True), nullable=True),
    sa.Column('started_at', app.tables.base.UtcDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', app.tables.base.UtcDateTime(timezone=True), nullable=True),
    sa.Column('error_code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('error_message', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('created_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['generation_requests.id'], name=op.f('fk_generation_jobs_request_id_generation_requests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_generation_jobs'))
    )
    with op.batch_alter_table('generation_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_generation_jobs_request_id'), ['request_id'], unique=False)
        batch_op.create_index('ix_generation_jobs_status_heartbeat', ['status', 'heartbeat_at'], unique=False)

    op.create_table('models',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('owner_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('source_image_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('format', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('file_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('content_type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('preview_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('file_size', sa.Integer(), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('visibility', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('published_at', app.tables.base.UtcDateTime(timezone=True), nullable=True),
    sa.Column('like_count', sa.Integer(), nullable=False),
    sa.Column('favorite_count', sa.Integer(), nullable=False),
    sa.Column('download_count', sa.Integer(), nullable=False),
    sa.Column('view_count', sa.Integer(), nullable=False),
    sa.Column('created_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_models_owner_id_users')),
    sa.ForeignKeyConstraint(['request_id'], ['generation_requests.id'], name=op.f('fk_models_request_id_generation_requests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('request_id', name=op.f('uq_models_request_id'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_owner_id'), ['owner_id'], unique=False)

    op.create_table('request_events',
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('user_seq', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('phase', sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
    sa.Column('step', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('progress_estimated', sa.Boolean(), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('error_code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('image_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('created_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['generation_requests.id'], name=op.f('fk_request_events_request_id_generation_requests')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_request_events_user_id_users')),
    sa.PrimaryKeyConstraint('request_id', 'seq', name=op.f('pk_request_events')),
    sa.UniqueConstraint('user_id', 'user_seq', name=op.f('uq_request_events_user_id_user_seq'))
    )
    op.create_table('model_interactions',
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', app.tables.base.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_interactions_model_id_models')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_model_interactions_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'model_id', 'type', name=op.f('pk_model_interactions'))
    )


def downgrade() -> None:
    op.drop_table('model_interactions')
    op.drop_table('request_events')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_owner_id'))

    op.drop_table('models')
    with op.batch_alter_table('generation_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_generation_jobs_status_heartbeat')
        batch_op.drop_index(batch_op.f('ix_generation_jobs_request_id'))

    op.drop_table('generation_jobs')
    op.drop_table('generated_images')
    with op.batch_alter_table('generation_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_generation_requests_user_status')
        batch_op.drop_index('ix_generation_requests_user_created')

    op.drop_table('generation_requests')
    op.drop_table('users')
