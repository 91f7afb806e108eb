"""deploy/: what can be checked without Docker — manifests parse, commands exist,
settings are real, the image copies files that exist, and the locks agree."""

from __future__ import annotations

import os
import re
from itertools import takewhile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

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


def dockerignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, whether it excludes) for each line of .dockerignore, in order."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            rules.append((re.compile(docker_regex(pattern)), not line.startswith("!")))
    return rules


def docker_regex(pattern: str) -> str:
    """A .dockerignore pattern as Docker reads it (moby/patternmatcher): `*` and `?`
    stay within one directory, `**` spans any number of them."""
    regex, rest = "^", pattern
    while rest:
        if rest.startswith("**"):
            rest = rest[2:].removeprefix("/")
            regex += "(.*/)?" if rest else ("(/.*)?" if regex != "^" else ".*")
            continue
        char, rest = rest[0], rest[1:]
        if char in "*?":
            regex += "[^/]*" if char == "*" else "[^/]"
        else:  # as Docker does: brackets stay a character class, as in `*.py[cod]`
            regex += "\\" + char if char in ".+()|{}$^" else char
    return regex + "$"


RULES = dockerignore_rules()


def in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent
    directories, decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for regex, excludes in RULES:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = excludes
    return not excluded


def build_context_bytes() -> int:
    """What `docker build` would send from this checkout (left-out folders not entered)."""
    total = 0
    for directory, folders, files in os.walk(ROOT):
        here = Path(directory).relative_to(ROOT)
        folders[:] = [f for f in folders if in_build_context((here / f).as_posix())]
        sent = [f for f in files if in_build_context((here / f).as_posix())]
        total += sum((Path(directory) / f).lstat().st_size for f in sent)
    return total


@pytest.mark.parametrize(
    "path",
    [
        ".venv/lib/python3.11/site-packages/strawberry/__init__.py",
        "var/lumi.db",
        "var/files/images/a.png",
        ".git/HEAD",
        ".mypy_cache/3.11/app/main.data.json",
        ".ruff_cache/0.17.0/123",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/abc",
        "app/__pycache__/main.cpython-311.pyc",
        "migrations/versions/__pycache__/x.cpython-311.pyc",
        "node_modules/react/index.js",
        "web/node_modules/react/index.js",
        "app/web/node_modules/react/umd/react.production.min.js",
        ".env",
        "deploy/lumi.env",
        "build/lib/app/main.py",
        "lumi_gateway.egg-info/PKG-INFO",
        ".coverage",
        "htmlcov/index.html",
        "tests/conftest.py",
    ],
)
def test_the_build_context_leaves_out_the_virtualenv_data_git_caches_and_secrets(
    path: str,
) -> None:
    assert not in_build_context(path)


def test_the_build_context_holds_every_file_the_image_copies() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*")
                # Left out on purpose: bytecode, and npm packages (the image installs its own).
                for path in files:
                    if path.is_file() and not {"__pycache__", "node_modules"} & set(path.parts):
                        assert in_build_context(path.relative_to(ROOT).as_posix()), path


def test_the_build_context_is_the_sources_not_the_checkouts_megabytes() -> None:
    assert build_context_bytes() < 5_000_000


def compose_api_settings() -> Settings:
    """What `lumi serve` runs with in the compose file: the image's ENV, overridden by
    lumi.env, overridden by the service's environment."""
    env = dict(re.findall(r"\b(LUMI_[A-Z0-9_]+)=(\S+)", (DEPLOY / "Dockerfile").read_text()))
    for line in (DEPLOY / "lumi.env").read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and not name.startswith("#"):
            env[name.strip()] = value.strip()
    compose = documents(DEPLOY / "compose.yaml")[0]
    env.update({k: str(v) for k, v in compose["services"]["api"]["environment"].items()})
    values = {name.removeprefix("LUMI_").lower(): value for name, value in env.items()}
    return Settings(_env_file=None, **values)


def test_the_compose_comment_says_whether_graphiql_is_served_and_how_to_turn_it_on() -> None:
    lines = (DEPLOY / "compose.yaml").read_text().splitlines()
    header = " ".join(line.lstrip("# ") for line in takewhile(lambda x: x.startswith("#"), lines))
    if compose_api_settings().graphiql_enabled:
        assert "GraphiQL is off" not in header
    else:
        assert "GraphiQL is off" in header
        assert 'LUMI_GRAPHIQL: "true"' in header


def test_compose_file_links_name_minio_where_the_host_reaches_it() -> None:
    compose = documents(DEPLOY / "compose.yaml")[0]
    env = compose["services"]["api"]["environment"]
    internal = urlsplit(env["LUMI_S3_ENDPOINT_URL"])
    public = urlsplit(env["LUMI_S3_PUBLIC_ENDPOINT_URL"])
    published = dict(port.split(":") for port in compose["services"]["minio"]["ports"])
    assert (internal.hostname, public.hostname) == ("minio", "localhost")
    assert published[str(public.port)] == str(internal.port)
