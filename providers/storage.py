"""Artifact storage: every image and model we serve lives here, never at a vendor URL.

`LocalStorage` keeps files in a directory and signs expiring URLs that the gateway's
`/files/...` route verifies; the S3 implementation presigns with SigV4.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote, urlencode

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
# What a local presigned POST signs, in order (none of them may hold a newline).
_FORM_FIELDS = ("key", "Content-Type", "x-lumi-max-bytes", "x-lumi-expires")


class InvalidKey(ValueError):
    pass


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/") or "//" in key:
        raise InvalidKey(f"invalid storage key: {key!r}")
    return key


def is_key(key: str) -> bool:
    try:
        check_key(key)
    except InvalidKey:
        return False
    return True


def new_key(folder: str, suffix: str = "") -> str:
    """A fresh key under `folder` that names nothing but a random token: signed URLs show
    keys to whoever holds them, and a public model's URLs must not tell its request,
    images or jobs apart from anyone else's."""
    return check_key(f"{folder}/{secrets.token_hex(16)}{suffix}")


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    modified: datetime  # UTC: when it was last written
    size: int


@dataclass(frozen=True, slots=True)
class PresignedPost:
    """An HTML form's worth of upload: POST `fields`, then the file as `file` (last), as
    multipart/form-data to `url`. S3's presigned POST, and local storage's own."""

    url: str  # relative to the gateway for local storage
    fields: dict[str, str]


@runtime_checkable
class AcceptsUploads(Protocol):
    def presigned_post(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> PresignedPost:
        """A form that stores one file of at most `max_bytes` at exactly `key`, until
        `expires_in` seconds from now."""
        ...


class Storage(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None:
        """Removes the object; deleting a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...

    def objects(self, folder: str) -> AsyncIterator[StoredObject]:
        """Every stored object whose key is under `folder`, in no particular order; names
        that are not storage keys are left out."""
        ...

    def url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A URL that serves the object until `expires_in` seconds from now.

        It may be relative to the gateway (local storage) or absolute (S3).
        """
        ...

    async def ping(self) -> None:
        """Raises when the storage cannot be reached."""
        ...

    async def close(self) -> None: ...


class LocalStorage:
    """Files under `root`; URLs are `/files/<key>?expires=..&signature=..` (HMAC-SHA256)."""

    def __init__(
        self,
        root: Path,
        *,
        secret: bytes,
        url_prefix: str = "/files",
        upload_url: str = "/uploads",
    ) -> None:
        self.root = root.resolve()
        self._secret = secret
        self._prefix = url_prefix.rstrip("/")
        self._upload_url = upload_url

    def path_for(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self.path_for(key), data, content_type)

    @staticmethod
    def _write(path: Path, data: bytes, content_type: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a file.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        path.with_name(path.name + ".type").write_text(content_type)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self.path_for(key).read_bytes)

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        for target in (path, path.with_name(path.name + ".type")):
            await asyncio.to_thread(target.unlink, True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def objects(self, folder: str) -> AsyncIterator[StoredObject]:
        folders = [self.path_for(folder)]
        while folders:  # one directory at a time, so a large tree is never held whole
            found, deeper = await asyncio.to_thread(self._scan, folders.pop())
            folders.extend(deeper)
            for item in found:
                yield item

    def _scan(self, folder: Path) -> tuple[list[StoredObject], list[Path]]:
        """The files of `folder` (not their `.type` companions) and its subfolders."""
        found: list[StoredObject] = []
        deeper: list[Path] = []
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:  # nothing stored yet, or removed meanwhile
            return found, deeper
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    deeper.append(Path(entry.path))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                key = Path(entry.path).relative_to(self.root).as_posix()
                if entry.name.endswith(".type") or not is_key(key):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted while we looked
                continue
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            found.append(StoredObject(key, modified, stat.st_size))
        return found, deeper

    def content_type(self, key: str) -> str:
        path = self.path_for(key)
        try:
            return path.with_name(path.name + ".type").read_text().strip()
        except FileNotFoundError:
            return "application/octet-stream"

    def url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        expires = int(time.time()) + expires_in
        query = {"expires": str(expires), "signature": self._sign(key, expires)}
        if filename:
            query["filename"] = filename
        return f"{self._prefix}/{quote(check_key(key))}?{urlencode(query)}"

    async def ping(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    def verify(self, key: str, expires: str, signature: str) -> bool:
        """True while the URL is unexpired and its signature matches the key."""
        try:
            deadline = int(expires)
        except ValueError:
            return False
        if deadline < time.time():
            return False
        return hmac.compare_digest(self._sign(key, deadline), signature)

    def presigned_post(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> PresignedPost:
        """The gateway's own presigned POST (`POST /uploads`, app/routes.py): the same
        form as S3's, signed with HMAC-SHA256 over everything it allows."""
        expires = str(int(time.time()) + expires_in)
        fields = {
            "key": check_key(key),
            "Content-Type": content_type,
            "x-lumi-max-bytes": str(max_bytes),
            "x-lumi-expires": expires,
        }
        fields["x-lumi-signature"] = self._sign_form(fields)
        return PresignedPost(self._upload_url, fields)

    def verify_post(self, fields: dict[str, str]) -> tuple[str, str, int] | None:
        """(key, content type, max bytes) of an unexpired form this storage signed."""
        try:
            signed = {name: fields[name] for name in _FORM_FIELDS}
            deadline, max_bytes = int(signed["x-lumi-expires"]), int(signed["x-lumi-max-bytes"])
            signature = fields["x-lumi-signature"]
        except (KeyError, ValueError):
            return None
        if any("\n" in value for value in signed.values()):
            return None
        if deadline < time.time() or not is_key(signed["key"]):
            return None
        if not hmac.compare_digest(self._sign_form(signed), signature):
            return None
        return signed["key"], signed["Content-Type"], max_bytes

    def _sign_form(self, fields: dict[str, str]) -> str:
        message = "upload\n" + "\n".join(fields[name] for name in _FORM_FIELDS)
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    def _sign(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()
