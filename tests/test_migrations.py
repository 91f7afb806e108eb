"""Alembic is the only way tables are made, and the migrations match the tables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    select,
    text,
)

from app.migrate import alembic_config, upgrade
from app.tables import (
    CreditEntry,
    DeadLetter,
    GeneratedImage,
    GenerationJob,
    GenerationRequest,
    Model,
    RequestEvent,
    User,
    metadata,
    utcnow,
)
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
    "uploaded_images.storage_key",
}


def collations(connection: Connection) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """The collation of every string column: as the tables declare it, and as the database
    has it (None: the table's default). Alembic's compare_type does not look at them."""
    declared: dict[str, str | None] = {}
    found: dict[str, str | None] = {}
    inspector = inspect(connection)
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name):  # made by a revision after this one
            continue
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
                # Only the columns of 0006's time: a later table does not exist at 0005.
                at_0005 = BINARY_KEYS & found.keys()
                assert at_0005 == BINARY_KEYS - {"uploaded_images.storage_key"}
                assert {name: found[name] for name in at_0005} == dict.fromkeys(at_0005)
                connection.rollback()
                upgrade(url)
                _, found = collations(connection)
                assert {found[name] for name in BINARY_KEYS} == {BINARY_COLLATION}
        finally:
            engine.dispose()


def database_at(revision: str, kind: str, tmp_path: Path) -> Iterator[str]:
    """A database of `kind` (sqlite or mariadb) migrated up to `revision` only."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'lumi.db'}"
        upgrade(url, revision)
        yield url
        return
    with mariadb_database(f"lumi_{revision}_{os.getpid()}", revision) as url:
        yield url


@pytest.fixture(params=["sqlite", "mariadb"])
def before_0006(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at revision 0005: new users were still named after their subject."""
    yield from database_at("0005", request.param, tmp_path)


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


@pytest.fixture(params=["sqlite", "mariadb"])
def before_0007(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at revision 0006: deleting a request only hid it (`deleted_at`)."""
    yield from database_at("0006", request.param, tmp_path)


def a_request_with_everything(owner: User, user_seq: int) -> list[Any]:
    """A finished request, its image, job, event, dead letter, model and ledger entry."""
    request = GenerationRequest(
        user_id=owner.id,
        prompt="a teapot",
        image_count=1,
        image_width=64,
        image_height=64,
        status="COMPLETED",
        phase="COMPLETED",
    )
    image = GeneratedImage(
        request_id=request.id,
        index=0,
        prompt="a teapot",
        seed=1,
        storage_key=f"images/{request.id}.png",
    )
    job = GenerationJob(request_id=request.id, kind="IMAGE", image_id=image.id, status="FAILED")
    return [
        request,
        image,
        job,
        RequestEvent(
            request_id=request.id,
            seq=1,
            user_id=owner.id,
            user_seq=user_seq,
            status="COMPLETED",
            phase="COMPLETED",
        ),
        DeadLetter(
            job_id=job.id,
            request_id=request.id,
            stage="generate_image",
            queue="default",
            attempts=4,
            error_code="X",
        ),
        Model(
            owner_id=owner.id,
            request_id=request.id,
            source_image_id=image.id,
            name="teapot",
            file_key=f"models/{request.id}.glb",
        ),
        CreditEntry(
            user_id=owner.id,
            request_id=request.id,
            kind="DEBIT",
            reason="IMAGES",
            amount=-1,
            balance_after=9,
            key=f"debit:{request.id}",
        ),
    ]


ROWS_NAMING_A_REQUEST = (
    "generated_images",
    "generation_jobs",
    "request_events",
    "dead_letters",
    "credit_ledger",
)


def insert(connection: Connection, rows: list[Any]) -> None:
    """Inserts table rows into a database at an older revision: only the columns it has
    (a column added later takes its default when that revision adds it)."""
    now = utcnow()
    for row in rows:
        table = row.__table__
        present = {column["name"] for column in inspect(connection).get_columns(table.name)}
        values = {"created_at": now, **row.model_dump(exclude_none=True)}
        if "updated_at" in table.columns:
            values["updated_at"] = now
        older = Table(
            table.name,
            MetaData(),
            *(Column(c.name, c.type) for c in table.columns if c.name in present),
        )
        connection.execute(
            older.insert(), {name: value for name, value in values.items() if name in present}
        )


def test_requests_hidden_before_0007_are_removed_and_their_models_stay(before_0007: str) -> None:
    owner = User(external_id="ada", display_name="Ada", credits=9)
    hidden, kept = a_request_with_everything(owner, 1), a_request_with_everything(owner, 2)
    engine = create_engine(sync_url(before_0007))
    try:
        with engine.begin() as connection:
            insert(connection, [owner, *hidden, *kept])
            connection.execute(
                text("UPDATE generation_requests SET deleted_at = :now WHERE id = :id"),
                {"now": utcnow().replace(tzinfo=None), "id": hidden[0].id},
            )
        upgrade(before_0007)
        with engine.connect() as connection:
            left = {
                name: set(connection.execute(select(metadata.tables[name].c.request_id)).scalars())
                for name in ROWS_NAMING_A_REQUEST
            }
            requests = set(
                connection.execute(select(metadata.tables["generation_requests"].c.id)).scalars()
            )
            models = metadata.tables["models"]
            found = select(models.c.id, models.c.request_id, models.c.source_image_id)
            kept_models = connection.execute(found).all()
    finally:
        engine.dispose()
    gone, stays = hidden[0].id, kept[0].id
    assert requests == {stays}
    assert left == {
        "generated_images": {stays},
        "generation_jobs": {stays},
        "request_events": {stays},
        "dead_letters": {stays},
        "credit_ledger": {gone, stays},  # the user's accounts
    }
    assert sorted(kept_models) == sorted(
        [(hidden[5].id, None, None), (kept[5].id, stays, kept[1].id)]
    )
