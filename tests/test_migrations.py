"""Alembic is the only way tables are made, and the migrations match the tables."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import upgrade
from app.tables import metadata


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
