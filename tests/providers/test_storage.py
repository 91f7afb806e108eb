"""Local storage: atomic files, and URLs that stop working when expired or tampered with."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from providers.storage import InvalidKey, LocalStorage


def params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_stored_bytes_come_back_and_deleting_twice_is_fine(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, secret=b"k")
    await storage.put("a/b.png", b"png-bytes", "image/png")
    assert await storage.get("a/b.png") == b"png-bytes"
    assert storage.content_type("a/b.png") == "image/png"
    await storage.delete("a/b.png")
    await storage.delete("a/b.png")
    assert not await storage.exists("a/b.png")


def test_a_signed_url_verifies_until_it_expires_and_not_for_another_key(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, secret=b"k")
    url = storage.url("a/b.png", expires_in=60)
    assert urlsplit(url).path == "/files/a/b.png"
    query = params(url)
    assert storage.verify("a/b.png", query["expires"], query["signature"])
    assert not storage.verify("a/c.png", query["expires"], query["signature"])
    assert not storage.verify("a/b.png", str(int(query["expires"]) + 1), query["signature"])
    assert not LocalStorage(tmp_path, secret=b"other").verify(
        "a/b.png", query["expires"], query["signature"]
    )
    stale = str(int(time.time()) - 1)
    assert not storage.verify("a/b.png", stale, storage._sign("a/b.png", int(stale)))


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "a//b", ""])
def test_keys_cannot_leave_the_storage_directory(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        LocalStorage(tmp_path, secret=b"k").path_for(key)
