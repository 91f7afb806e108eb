"""binary keys and neutral names

Identifiers compare byte for byte on MySQL and MariaDB too: a token's subject, a
client's idempotency key, the ledger's keys and storage keys get the `utf8mb4_bin`
collation, so `CaseUser` and `caseuser` (or `Rene` and `René`) stop being one user.
SQLite compares bytes already: nothing changes there.

A user whose token carried no name was shown to everyone under the token's subject,
maybe an e-mail address. Such users get the neutral name new users get now.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:30:00.000000
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import mysql

import app.tables.base


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BINARY = 'utf8mb4_bin'
KEYS = (  # table, column, length, nullable
    ('users', 'external_id', 191, False),
    ('generation_requests', 'idempotency_key', 128, True),
    ('credit_ledger', 'key', 191, False),
    ('generated_images', 'storage_key', 255, True),
    ('models', 'file_key', 255, False),
    ('models', 'preview_key', 255, True),
)


def _collate(collation: str | None) -> None:
    """Gives the key columns `collation`; None is the table's default (as created)."""
    if op.get_context().dialect.name not in {'mysql', 'mariadb'}:
        return
    for table, column, length, nullable in KEYS:
        op.alter_column(
            table,
            column,
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=length),
            type_=mysql.VARCHAR(length, collation=collation),
            existing_nullable=nullable,
        )


def _neutral_name(user_id: str) -> str:
    """As `app.users.service.default_display_name` named new users when this was written."""
    return 'Creator ' + hashlib.sha256(user_id.encode()).hexdigest()[:6]


def _rename_users_shown_by_subject() -> None:
    """The old default was the subject cut to 100 characters; compared in Python, so the
    test is byte for byte whatever the collation."""
    users = sa.table(
        'users',
        sa.column('id', sa.String),
        sa.column('external_id', sa.String),
        sa.column('display_name', sa.String),
    )
    connection = op.get_bind()
    candidates = sa.select(users.c.id, users.c.external_id, users.c.display_name).where(
        users.c.display_name == sa.func.substr(users.c.external_id, 1, 100)
    )
    for user_id, subject, name in connection.execute(candidates).all():
        if name == subject[:100]:
            connection.execute(
                users.update().where(users.c.id == user_id).values(display_name=_neutral_name(user_id))
            )


def upgrade() -> None:
    _collate(BINARY)
    _rename_users_shown_by_subject()


def downgrade() -> None:
    # Fails on MySQL if two users (or two keys) now differ only in case or accents: the
    # old collation cannot tell them apart. The neutral names stay: the subjects they
    # replaced were the leak.
    _collate(None)
