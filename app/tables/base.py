"""What every table shares: the metadata naming convention, ids, UTC timestamps and
strings that compare byte for byte."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import Field, SQLModel

# Stable constraint names, so Alembic revisions name them the same on every database.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata

ID_LENGTH = 32
BINARY_COLLATION = "utf8mb4_bin"


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time (48-bit ms clock + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes everywhere; microsecond precision on MySQL (DATETIME(6))."""

    impl = DateTime
    cache_ok = True

    def __init__(self, timezone: bool = True) -> None:
        super().__init__(timezone=timezone)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in {"mysql", "mariadb"}:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("naive datetime: use an aware UTC datetime")
        value = value.astimezone(UTC)
        # MySQL rejects offsets in DATETIME literals; SQLite keeps them as text.
        return value.replace(tzinfo=None) if dialect.name in {"mysql", "mariadb"} else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


def id_field(**kwargs: Any) -> Any:
    return Field(default_factory=new_id, primary_key=True, max_length=ID_LENGTH, **kwargs)


def binary_string(length: int) -> TypeEngine[str]:
    """VARCHAR(length) that compares byte for byte on every database.

    MySQL's default collations fold case and accents (`CaseUser` = `caseuser`, `Rene` =
    `René`): right for text people search, wrong for identifiers and keys that someone
    else chose exactly (a token's subject, a client's idempotency key, a storage key).
    SQLite compares bytes already."""
    binary = mysql.VARCHAR(length, collation=BINARY_COLLATION)
    return String(length).with_variant(binary, "mysql", "mariadb")


def key_field(max_length: int, **kwargs: Any) -> Any:
    """A string identifier or lookup key: equal only when its bytes are."""
    return Field(sa_type=binary_string(max_length), max_length=max_length, **kwargs)


def created_field() -> Any:
    return Field(default_factory=utcnow, sa_type=UtcDateTime, nullable=False)


def time_field(*, index: bool = False) -> Any:
    return Field(default=None, sa_type=UtcDateTime, nullable=True, index=index)
