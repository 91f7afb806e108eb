"""deploy/: what can be checked without Docker — manifests parse, commands exist,
settings are real, the image copies files that exist, and the locks agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import parser
from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFESTS = [*sorted((DEPLOY / "k8s").glob("*.yaml")), DEPLOY / "compose.yaml"]
COMMANDS = set(parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
SETTINGS = {f"LUMI_{name.upper()}" for name in Settings.model_fields}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def lumi_commands(node: object) -> list[str]:
    """Every `args:` / `command:` given to the lumi image, anywhere in a manifest."""
    found: list[str] = []
    if isinstance(node, dict):
        image = str(node.get("image", ""))
        for key in ("args", "command"):
            if image.startswith("lumi-gateway") or "<<" in node or "build" in node:
                value = node.get(key)
                if isinstance(value, list) and value:
                    found.append(str(value[0]))
        for child in node.values():
            found += lumi_commands(child)
    elif isinstance(node, list):
        for child in node:
            found += lumi_commands(child)
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_parses(path: Path) -> None:
    assert documents(path)


def test_kubernetes_has_every_piece_of_the_deployment() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for p in MANIFESTS[:-1] for d in documents(p)}
    assert {
        ("Deployment", "lumi-api"),
        ("Service", "lumi-api"),
        ("HorizontalPodAutoscaler", "lumi-api"),
        ("Deployment", "lumi-worker"),
        ("Job", "lumi-migrate"),
        ("ConfigMap", "lumi-config"),
        ("Secret", "lumi-secrets"),
    } <= kinds


def test_every_command_the_images_run_exists() -> None:
    used = {cmd for p in MANIFESTS for d in documents(p) for cmd in lumi_commands(d)}
    assert used >= {"serve", "worker", "migrate"}
    assert used <= COMMANDS
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["lumi"]' in dockerfile
    assert 'CMD ["serve"]' in dockerfile


def test_every_lumi_variable_in_the_manifests_is_a_real_setting() -> None:
    text = "\n".join(p.read_text() for p in [*MANIFESTS, DEPLOY / "lumi.env"])
    assert set(re.findall(r"\b(LUMI_[A-Z0-9_]+)\b", text)) <= SETTINGS


def test_the_image_copies_only_what_exists() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_the_production_lock_pins_what_the_development_lock_pins() -> None:
    def pins(name: str) -> dict[str, str]:
        text = (ROOT / name).read_text()
        return dict(re.findall(r"^([a-z0-9._-]+)==([^ \\\n]+)", text, re.MULTILINE))

    production, development = pins("requirements.prod.lock"), pins("requirements.lock")
    assert production
    assert {k: development.get(k) for k in production} == production
