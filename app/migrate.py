"""Upgrade a database to the newest Alembic revision: the only way tables are created."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

# The revisions sit beside `app`: the checkout's top-level migrations/, or the
# `migrations` package an installed wheel puts in site-packages (see pyproject.toml).
# Found from this file rather than imported, so neither a stale editable install nor
# another `migrations` on sys.path can stand in for the ones shipped with this code.
SCRIPTS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """Settings in code, not alembic.ini: a wheel has no alembic.ini (that file serves
    developers' `alembic revision` in the checkout)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Alembic's env runs its own event loop, so it gets a thread of its own."""
    await asyncio.to_thread(upgrade, url, revision)
