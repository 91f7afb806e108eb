"""Fake AI vendors for tests, each faithful to its vendor's documented shapes.

Every fake is a Starlette app that can run in-process (`httpx.ASGITransport`) or in a
subprocess on a loopback port, which `start_fake_module` starts."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx


def start_fake_module(
    module: str, arguments: list[str], *, log: Path | None = None
) -> tuple[str, Callable[[], None]]:
    """`python -m module --port P ...arguments` on a free loopback port: its base URL and a
    `stop()`. Returns once it answers `/_fake/calls`; its output goes to `log` (or a
    temporary file), which a failure to start quotes."""
    from tests.conftest import ROOT, free_port, stop_process

    port = free_port()
    output: IO[bytes] = log.open("w+b") if log else tempfile.TemporaryFile()  # noqa: SIM115
    command = [sys.executable, "-m", module, "--port", str(port), *arguments]
    process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)

    def stop() -> None:
        stop_process(process)
        output.close()

    url = f"http://127.0.0.1:{port}"
    if not _wait_until_up(url, process):
        stop_process(process)
        output.seek(0)
        text = output.read().decode(errors="replace")
        output.close()
        raise RuntimeError(f"the fake {module} did not start: {text}")
    return url, stop


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/_fake/calls", timeout=1).status_code == 200:
                return True
        time.sleep(0.1)
    return False
