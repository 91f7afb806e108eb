"""Running the npm clients of tests/clients against a live gateway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.conftest import IN_CI, ROOT

CLIENTS = ROOT / "tests" / "clients"


def require_clients() -> str:
    """The `node` binary, once `make test` has installed the clients; a laptop without
    them skips loudly, CI=true fails."""
    node = shutil.which("node")
    installed = (CLIENTS / "node_modules" / ".package-lock.json").exists()
    if node and installed:
        return node
    reason = "node is not on PATH" if not node else "tests/clients is not installed"
    if IN_CI:
        pytest.fail(f"{reason}; `make test` installs the clients with npm ci")
    pytest.skip(f"SKIPPED, NOT TESTED: {reason} (run `make test`; under CI=true this fails)")


def run_client(script: str, timeout: float = 120, **env: str) -> Any:
    """Runs tests/clients/<script> with `env` added; the JSON document it printed last."""
    node = require_clients()
    completed = subprocess.run(
        [node, str(CLIENTS / script)],
        cwd=CLIENTS,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if completed.returncode != 0 or not lines:
        raise AssertionError(
            f"{script} exited {completed.returncode}\n"
            f"stdout:\n{completed.stdout[-4000:]}\nstderr:\n{completed.stderr[-4000:]}"
        )
    return json.loads(lines[-1])
