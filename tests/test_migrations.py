"""Alembic is the only way tables are made, and the migrations match the tables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, String, create_engine, inspect, select

from app.migrate import alembic_config, upgrade
from app.tables import User, metadata, utcnow
from app.tables.base import BINARY_COLLATION
from app.users.service import default_display_name
from tests.conftest import mariadb_database


def test_the_migrations_create_exactly_the_tables_of_the_code(tmp_path: Path) -> None:
    path = tmp_path / "lumi.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert differences == []
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_upgrading_twice_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'lumi.db'}"
    upgrade(url)
    upgrade(url)


def test_the_migrations_match_the_tables_on_mariadb(mariadb_url: str) -> None:
    engine = create_engine(mariadb_url.replace("+aiomysql", "+pymysql"))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def sync_url(url: str) -> str:
    return url.replace("+aiosqlite", "").replace("+aiomysql", "+pymysql")


BINARY_KEYS = {
    "users.external_id",
    "generation_requests.idempotency_key",
    "credit_ledger.key",
    "generated_images.storage_key",
    "models.file_key",
    "models.preview_key",
}


def collations(connection: Connection) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """The collation of every string column: as the tables declare it, and as the database
    has it (None: the table's default). Alembic's compare_type does not look at them."""
    declared: dict[str, str | None] = {}
    found: dict[str, str | None] = {}
    inspector = inspect(connection)
    for table in metadata.sorted_tables:
        reflected = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            impl = column.type.dialect_impl(connection.dialect)
            if isinstance(impl, String):
                name = f"{table.name}.{column.name}"
                declared[name] = impl.collation
                found[name] = getattr(reflected[column.name], "collation", None)
    return declared, found


def test_the_migrations_give_keys_the_binary_collation_of_the_tables_on_mariadb(
    mariadb_url: str,
) -> None:
    engine = create_engine(sync_url(mariadb_url))
    try:
        with engine.connect() as connection:
            declared, found = collations(connection)
    finally:
        engine.dispose()
    assert found == declared
    assert {name for name, c in declared.items() if c == BINARY_COLLATION} == BINARY_KEYS


def test_the_downgrade_from_0006_restores_the_default_collation_on_mariadb() -> None:
    with mariadb_database(f"lumi_downgrade_{os.getpid()}") as url:
        command.downgrade(alembic_config(url), "0005")
        engine = create_engine(sync_url(url))
        try:
            with engine.connect() as connection:
                _, found = collations(connection)
                assert {name: found[name] for name in BINARY_KEYS} == dict.fromkeys(BINARY_KEYS)
                connection.rollback()
                upgrade(url)
                _, found = collations(connection)
                assert {found[name] for name in BINARY_KEYS} == {BINARY_COLLATION}
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "mariadb"])
def before_0006(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at revision 0005: new users were still named after their subject."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'lumi.db'}"
        upgrade(url, "0005")
        yield url
        return
    with mariadb_database(f"lumi_0005_{os.getpid()}", "0005") as url:
        yield url


def test_users_shown_under_their_subject_get_a_neutral_name(before_0006: str) -> None:
    long_subject = "someone." * 20 + "@example.com"
    names = {  # subject: display name before 0006
        "ada@example.com": "ada@example.com",
        long_subject: long_subject[:100],
        "grace": "Grace Hopper",
        "Rene": "rene",  # only a case-insensitive comparison finds them equal
    }
    users = [User(external_id=subject, display_name=name) for subject, name in names.items()]
    table = metadata.tables["users"]
    engine = create_engine(sync_url(before_0006))
    try:
        with engine.begin() as connection:
            now = utcnow()
            rows = [{**u.model_dump(), "created_at": now, "updated_at": now} for u in users]
            connection.execute(table.insert(), rows)
        upgrade(before_0006)
        with engine.connect() as connection:
            query = select(table.c.external_id, table.c.display_name)
            after = dict(connection.execute(query).all())
    finally:
        engine.dispose()
    ids = {u.external_id: u.id for u in users}
    assert after == {
        "ada@example.com": default_display_name(ids["ada@example.com"]),
        long_subject: default_display_name(ids[long_subject]),
        "grace": "Grace Hopper",
        "Rene": "rene",
    }
