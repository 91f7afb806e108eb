"""`lumi serve`: the event loop and HTTP parser it runs uvicorn with."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from app import cli
from tests.conftest import start_server, stop_server


def _mapped(pid: int) -> str:
    """The files a process has mapped: every extension module it imported."""
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/maps")
@pytest.mark.skipif(
    not (importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools")),
    reason="uvloop and httptools are not installed here (they are in the locks)",
)
def test_lumi_serve_runs_on_uvloop_and_httptools_when_installed(tmp_path: Path) -> None:
    server = start_server(tmp_path, log_level="info", LUMI_LOG_LEVEL="info")
    try:
        maps = _mapped(server.process.pid)
        log = server.log.read_text()
    finally:
        stop_server(server)
    assert "serving with the uvloop event loop and the httptools HTTP parser" in log
    assert "/uvloop/loop." in maps  # the loop itself, not just its name in a log line
    assert "/httptools/parser/parser." in maps


def test_lumi_serve_falls_back_to_asyncio_and_h11_without_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    find_spec = importlib.util.find_spec

    def absent(name: str, *args: object) -> object:
        return None if name in {"uvloop", "httptools"} else find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", absent)
    assert cli.server_implementation() == ("asyncio", "h11")


def test_lumi_serve_prefers_uvloop_and_httptools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: object())
    assert cli.server_implementation() == ("uvloop", "httptools")
