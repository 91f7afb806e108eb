"""A real browser for end-to-end tests: the system's headless Chromium, driven by
Playwright for Python, let reach the gateway under test and nothing else.

Chromium comes from the system package manager (`apt-get install chromium`: .ci/run
installs it when missing), never from Playwright's own download, which needs the internet.
Without Chromium or Playwright a laptop skips loudly; under CI=true the test fails.
Screenshots go to var/test-artifacts/browser/.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import IN_CI, ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Page, Request, Route, WebSocket

CHROMIUM = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
ARTIFACTS = ROOT / "var" / "test-artifacts" / "browser"
# No host name resolves, so nothing can leave the machine even past the request routing
# below (which sees HTTP, not websockets); nor does Chromium phone home.
CHROMIUM_ARGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--no-sandbox",  # CI runs as root
)


def require_chromium() -> str:
    """The Chromium binary, when it and Playwright are installed."""
    problems = []
    if importlib.util.find_spec("playwright") is None:
        problems.append("Playwright for Python is not installed (requirements.lock has it)")
    executable = next(filter(None, map(shutil.which, CHROMIUM)), None)
    if executable is None:
        problems.append("no Chromium on PATH (`apt-get install chromium`)")
    if executable is not None and not problems:
        return executable
    reason = "; ".join(problems)
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires it (.ci/run installs Chromium)")
    pytest.skip(f"SKIPPED, NOT TESTED: {reason} (under CI=true this fails)")


@dataclass
class Traffic:
    """What the page did: every request to anywhere but the gateway (aborted), errors
    it reported, and the graphql-transport-ws messages it sent and received."""

    origin: str
    offsite: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def is_gateway(self, url: str) -> bool:
        parts, origin = urlsplit(url), urlsplit(self.origin)
        return (parts.hostname, parts.port) == (origin.hostname, origin.port)

    def route(self, route: Route, request: Request) -> None:
        if request.url.startswith("data:") or self.is_gateway(request.url):
            route.continue_()
        else:
            self.offsite.append(request.url)
            route.abort("blockedbyclient")

    def websocket(self, socket: WebSocket) -> None:
        if not self.is_gateway(socket.url):
            self.offsite.append(socket.url)
        socket.on("framesent", lambda payload: self.sent.append(_message(payload)))
        socket.on("framereceived", lambda payload: self.received.append(_message(payload)))

    def messages(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in [*self.sent, *self.received] if m.get("type") == kind]


def _message(payload: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(payload)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


@contextlib.contextmanager
def offline_page(origin: str) -> Iterator[tuple[Page, Traffic]]:
    """A fresh page in headless Chromium that may reach `origin` (the gateway) only."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    traffic = Traffic(origin)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1400, "height": 900}, service_workers="block"
            )
            context.route("**/*", traffic.route)
            page = context.new_page()
            page.on("websocket", traffic.websocket)
            page.on("pageerror", lambda error: traffic.errors.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: (
                    traffic.errors.append(f"console: {message.text}")
                    if message.type == "error"
                    else None
                ),
            )
            yield page, traffic
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> None:
    """var/test-artifacts/browser/<name>.png, its path printed."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
