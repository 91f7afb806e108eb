"""`/files` over a real `lumi serve` with local storage: every answer, a file or a
refusal, tells the browser not to sniff a type (`X-Content-Type-Options: nosniff`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.deps import build_storage
from providers.storage import Storage
from tests.conftest import Server, make_settings, start_server, stop_server

pytestmark = pytest.mark.e2e

# Generated content that a sniffing browser would run as a page.
KEY = "images/sniff-me.png"
BODY = b"<html><script>alert(1)</script></html>"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("file-headers")


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[Server]:
    running = start_server(data_dir, LUMI_STORAGE_BACKEND="local")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def storage(data_dir: Path) -> Storage:
    """The server's own storage (same directory, same secret): its links are the server's."""
    built = build_storage(make_settings(data_dir, storage_backend="local"))
    asyncio.run(built.put(KEY, BODY, "image/png"))
    return built


def fetch(server: Server, storage: Storage, answer: str) -> httpx.Response:
    url = server.url + storage.url(KEY, expires_in=60)
    if answer == "file (HEAD)":
        return httpx.head(url, timeout=10)
    if answer == "unsatisfiable range":
        return httpx.get(url, headers={"Range": "bytes=9999-"}, timeout=10)
    if answer == "tampered signature":
        return httpx.get(url.replace("signature=", "signature=0"), timeout=10)
    if answer == "missing file":
        missing = storage.url("images/never-stored.png", expires_in=60)
        return httpx.get(server.url + missing, timeout=10)
    if answer == "invalid key":
        return httpx.get(f"{server.url}/files/a//b?expires=1&signature=x", timeout=10)
    return httpx.get(url, timeout=10)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ("file", 200),
        ("file (HEAD)", 200),
        ("unsatisfiable range", 416),
        ("tampered signature", 403),
        ("missing file", 404),
        ("invalid key", 404),
    ],
)
def test_every_files_answer_forbids_content_type_sniffing(
    server: Server, storage: Storage, answer: str, status: int
) -> None:
    response = fetch(server, storage, answer)
    assert response.status_code == status, response.text
    assert response.headers["x-content-type-options"] == "nosniff"
