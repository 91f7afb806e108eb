"""The wheel runs on its own: built from the sources the image copies, installed in a
fresh virtualenv, `lumi migrate` and `lumi serve` work from a directory that is not
the checkout, so nothing of the checkout can be imported by accident."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port, stop_process, token_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SOURCES = ("pyproject.toml", "README.md", "app", "workers", "providers", "migrations")


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def build_wheel(tmp: Path) -> Path:
    """Built from a copy of the sources: setuptools leaves build/ and *.egg-info
    behind, and the checkout is shared."""
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            caches = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, ignore=caches)
        else:
            shutil.copy(ROOT / name, source / name)
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check")
    run(
        *pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", ".", "-w", tmp, cwd=source
    )
    (wheel,) = tmp.glob("lumi_gateway-*.whl")
    return wheel


def install(wheel: Path, venv: Path) -> None:
    """A fresh virtualenv holding only the wheel; the dependencies come from this test's
    own environment through a .pth line. The environment's .pth files are not run that
    way, so its editable install of the checkout stays out."""
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--python")
    run(*pip, venv / "bin" / "python", "install", "--no-deps", "--no-index", wheel, cwd=venv)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "lumi-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def environment(data_dir: Path) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("LUMI_", "PYTHON"))}
    return {**kept, "LUMI_DATA_DIR": str(data_dir), "LUMI_AUTO_MIGRATE": "false"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    install(build_wheel(tmp), tmp / "venv")
    return tmp / "venv"


def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"lumi serve did not start: {log.read_text()}")


def test_the_installed_wheel_imports_itself_not_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    python = installed / "bin" / "python"
    code = "import app, migrations, workers, providers; print(app.__file__)"
    imported = Path(run(python, "-c", code, cwd=tmp_path, env=environment(tmp_path)).strip())
    assert imported.is_relative_to(installed)


def test_the_installed_wheel_migrates_and_answers_graphql(installed: Path, tmp_path: Path) -> None:
    lumi, env = installed / "bin" / "lumi", environment(tmp_path / "data")
    run(lumi, "migrate", cwd=tmp_path, env=env)
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as output:
        serve = [lumi, "serve", "--port", str(port), "--log-level", "warning"]
        process = subprocess.Popen(serve, cwd=tmp_path, env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log)
        response = httpx.post(
            f"{url}/graphql",
            json={"query": "{ me { displayName } }"},
            headers={"Authorization": f"Bearer {token_for('wheel-user')}"},
            timeout=10,
        )
    finally:
        stop_process(process)
    assert response.json() == {"data": {"me": {"displayName": "wheel-user"}}}
