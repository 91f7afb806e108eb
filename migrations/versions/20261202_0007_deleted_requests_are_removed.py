"""deleted requests are removed

`deleteRequest` used to hide a request (`deleted_at`); it now deletes its rows. The
requests hidden before are removed the same way: their images, jobs, events and dead
letters go, a model made from one stays in its owner's library without its source
request and image, and the credit ledger keeps their entries. Their image files are
left in storage with nothing referring to them: `lumi maintenance orphans` deletes them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.tables.base


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Children first: each refers to the request (or, for dead letters, to a job of it).
CHILDREN = ('generation_jobs', 'request_events', 'generated_images')


def _remove_hidden_requests() -> None:
    requests = sa.table('generation_requests', sa.column('id'), sa.column('deleted_at'))
    hidden = sa.select(requests.c.id).where(requests.c.deleted_at.is_not(None))
    models = sa.table('models', sa.column('request_id'), sa.column('source_image_id'))
    op.execute(
        models.update()
        .where(models.c.request_id.in_(hidden))
        .values(request_id=None, source_image_id=None)
    )
    letters = sa.table('dead_letters', sa.column('request_id'))
    op.execute(letters.delete().where(letters.c.request_id.in_(hidden)))
    for name in CHILDREN:
        child = sa.table(name, sa.column('request_id'))
        op.execute(child.delete().where(child.c.request_id.in_(hidden)))
    op.execute(requests.delete().where(requests.c.deleted_at.is_not(None)))


def upgrade() -> None:
    _remove_hidden_requests()
    # SQLite drops the column in place: copying the table (batch mode's default) would
    # drop the old one, which its images and jobs refer to, with foreign keys on.
    with op.batch_alter_table('generation_requests', recreate='never') as batch_op:
        batch_op.drop_column('deleted_at')


def downgrade() -> None:
    with op.batch_alter_table('generation_requests', recreate='never') as batch_op:
        batch_op.add_column(
            sa.Column('deleted_at', app.tables.base.UtcDateTime(timezone=True), nullable=True)
        )
