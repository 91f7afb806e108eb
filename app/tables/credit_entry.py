from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.tables.base import ID_LENGTH, created_field, id_field, key_field


class CreditEntry(SQLModel, table=True):
    """One change of a user's credit balance: the ledger `me { ledger }` shows.

    `key` is unique: a debit or refund written twice for the same reason (a redelivered
    message, a retried transaction) fails on it instead of moving the balance twice.
    """

    __tablename__ = "credit_ledger"
    __table_args__ = (Index("ix_credit_ledger_user_created", "user_id", "created_at", "id"),)

    id: str = id_field()
    user_id: str = Field(foreign_key="users.id", max_length=ID_LENGTH)
    request_id: str | None = Field(default=None, max_length=ID_LENGTH, index=True)
    kind: str = Field(max_length=16)  # GRANT, DEBIT, REFUND
    reason: str = Field(max_length=32)  # INITIAL, IMAGES, MODEL, ADJUSTMENT ...
    amount: int  # signed: debits are negative
    quantity: int = 1  # how many images or models the amount pays for
    balance_after: int
    key: str = key_field(191, unique=True)
    created_at: datetime = created_field()
