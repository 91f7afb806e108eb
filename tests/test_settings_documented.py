"""Every setting is documented in deploy/env.example and the README."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_appears_in_the_env_example() -> None:
    example = (ROOT / "deploy" / "env.example").read_text()
    missing = [name for name in Settings.model_fields if f"LUMI_{name.upper()}=" not in example]
    assert missing == []
