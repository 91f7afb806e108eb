"""Production refuses the embedded defaults, each with the setting to change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.config import Settings
from tests.conftest import ROOT

SAFE = {
    "env": "production",
    "jwt_secret": "x" * 48,
    "database_url": "mysql+aiomysql://lumi:pw@db/lumi",
    "broker": "redis",
    "bus": "redis",
}


def problems(**overrides: object) -> list[str]:
    values = {**SAFE, **overrides}
    return Settings(_env_file=None, **values).production_problems()  # type: ignore[arg-type]


def test_development_accepts_every_default() -> None:
    assert Settings(_env_file=None).production_problems() == []  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ({"jwt_secret": "lumi-development-secret-change-me"}, "LUMI_JWT_SECRET"),
        ({"jwt_secret": "short"}, "LUMI_JWT_SECRET"),
        ({"database_url": None}, "LUMI_DATABASE_URL"),
        ({"broker": "embedded"}, "LUMI_BROKER"),
        ({"bus": "embedded"}, "LUMI_BUS"),
    ],
)
def test_each_unsafe_default_is_named(override: dict[str, object], setting: str) -> None:
    found = [p for p in problems(**override) if not p.startswith("LUMI_STORAGE_BACKEND")]
    assert len(found) == 1
    assert found[0].startswith(setting)


def test_an_explicit_allowance_accepts_what_it_names() -> None:
    assert problems(broker="embedded", production_allow="embedded-broker,local-storage") == []


def test_lumi_serve_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT,
        env={"LUMI_ENV": "production", "LUMI_DATA_DIR": str(tmp_path), "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    for setting in ("LUMI_JWT_SECRET", "LUMI_DATABASE_URL", "LUMI_BROKER", "LUMI_BUS"):
        assert setting in result.stderr
