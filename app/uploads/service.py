"""A user's own image: received, validated, stored, until a request takes it.

Two ways in (README: "Your own image to 3D"):
- over GraphQL (`uploadImage`, the multipart request specification): the bytes are
  validated before anything is stored, and only the clean image is;
- presigned (`createImageUpload`): the client POSTs the file straight to the store (S3,
  or the gateway's own `/uploads` for local storage), where it waits in quarantine
  (`incoming/`) unread; `completeImageUpload`, or the request that uses it, validates it,
  stores the clean image under `uploads/` and deletes the raw one.

A file that fails validation leaves nothing behind: no clean file, no raw file, no row.
Validation decodes the whole image (seconds for a large one), so it runs on a thread and
outside any transaction: no row is locked meanwhile, and the state is checked again
when the result is written.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Viewer
from app.config import Settings
from app.errors import BadUserInput, LimitExceeded, NotFound
from app.tables import UploadedImage, utcnow
from app.uploads import repository
from app.uploads.images import FORMATS, CleanImage, normalise
from app.users import repository as users
from providers.storage import AcceptsUploads, PresignedPost, Storage, new_key

if TYPE_CHECKING:
    from app.deps import Deps

SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
CONTENT_TYPES = tuple(FORMATS.values())


class UploadNotFound(NotFound):
    """Absent, someone else's, expired, or already used by a request: all alike."""

    default_message = "upload not found"


class UploadNotReceived(BadUserInput):
    def __init__(self) -> None:
        super().__init__(
            "no file has been uploaded to this upload's form yet: POST it first", field="id"
        )


def safe_filename(name: str | None) -> str | None:
    """The file's own name without any folder, for naming the model; at most 100 chars."""
    if not name:
        return None
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return cleaned[:100] or None


async def validated(data: bytes, settings: Settings) -> CleanImage:
    """The clean image of `data` (on a thread: decoding takes a while), or BadUserInput."""
    return await asyncio.to_thread(
        normalise,
        data,
        max_bytes=settings.upload_max_bytes,
        max_pixels=settings.upload_max_pixels,
    )


async def room_for_one(deps: Deps, viewer: Viewer) -> None:
    """LIMIT_EXCEEDED when the viewer holds `upload_max_unused` uploads already: asked
    before a file is decoded or stored, so a loop of uploads costs neither CPU nor space.
    Uploads sent at once may all pass this; `hold_room` decides, as each is written."""
    async with deps.db.read() as session:
        await _check_room(session, viewer, deps.settings.upload_max_unused)


async def hold_room(session: AsyncSession, viewer: Viewer, limit: int) -> None:
    """The same check in the transaction that adds the upload, under its owner's row lock
    (taken before rows that refer to the owner go in, as everywhere): concurrent uploads
    of one user take turns, so the limit is exact."""
    await users.get(session, viewer.id, for_update=True)
    await _check_room(session, viewer, limit)


async def _check_room(session: AsyncSession, viewer: Viewer, limit: int) -> None:
    unused = await repository.count_unused(session, viewer.id, utcnow())
    if unused >= limit:
        raise LimitExceeded(
            f"you have {unused} uploads no request used yet, the most you may hold: use "
            "them in createRequest, or wait until they expire",
            limit=limit,
            scope="uploads",
        )


async def receive(deps: Deps, viewer: Viewer, data: bytes, filename: str | None) -> UploadedImage:
    """A file sent in the GraphQL request itself: validated, then stored clean."""
    await room_for_one(deps, viewer)
    clean = await validated(data, deps.settings)
    key = new_key("uploads", SUFFIXES[clean.content_type])
    await deps.storage.put(key, clean.data, clean.content_type)
    upload = UploadedImage(
        owner_id=viewer.id,
        status="READY",
        storage_key=key,
        filename=safe_filename(filename),
        content_type=clean.content_type,
        width=clean.width,
        height=clean.height,
        size=len(clean.data),
        expires_at=utcnow() + timedelta(seconds=deps.settings.upload_ttl_seconds),
    )
    try:
        async with deps.unit() as unit:
            await hold_room(unit.session, viewer, deps.settings.upload_max_unused)
            unit.session.add(upload)
    except BaseException:
        await deps.storage.delete(key)
        raise
    return upload


async def open_presigned(
    deps: Deps, viewer: Viewer, content_type: str, size: int | None, filename: str | None
) -> tuple[UploadedImage, PresignedPost]:
    """A PENDING upload and the form that puts its file in quarantine."""
    settings = deps.settings
    if content_type not in CONTENT_TYPES:
        raise BadUserInput(
            f"contentType must be one of {', '.join(CONTENT_TYPES)}", field="contentType"
        )
    if size is not None and not 1 <= size <= settings.upload_max_bytes:
        raise BadUserInput(
            f"size must be between 1 and {settings.upload_max_bytes} bytes", field="size"
        )
    storage = deps.storage
    if not isinstance(storage, AcceptsUploads):
        raise BadUserInput("this gateway's storage takes no presigned uploads")
    await room_for_one(deps, viewer)
    upload = UploadedImage(
        owner_id=viewer.id,
        status="PENDING",
        storage_key=new_key("incoming"),
        filename=safe_filename(filename),
        content_type=content_type,
        expires_at=utcnow() + timedelta(seconds=settings.upload_ttl_seconds),
    )
    form = storage.presigned_post(
        upload.storage_key,
        content_type=content_type,
        max_bytes=settings.upload_max_bytes,
        expires_in=settings.upload_url_ttl_seconds,
    )
    async with deps.unit() as unit:
        await hold_room(unit.session, viewer, settings.upload_max_unused)
        unit.session.add(upload)
    return upload, form


async def owned(deps: Deps, viewer: Viewer, upload_id: str) -> UploadedImage:
    """The viewer's unexpired upload; UploadNotFound for anything else."""
    async with deps.db.read() as session:
        upload = await repository.get_owned(session, upload_id, viewer.id)
    if upload is None or upload.expires_at < utcnow():
        raise UploadNotFound()
    return upload


async def ready(deps: Deps, viewer: Viewer, upload_id: str) -> UploadedImage:
    """The upload, READY: a PENDING one's raw file is validated and replaced by the clean
    image first. A bad file is deleted with its row (BAD_USER_INPUT, nothing kept)."""
    upload = await owned(deps, viewer, upload_id)
    if upload.status == "READY":
        return upload
    raw_key = upload.storage_key
    data = await _raw(deps.storage, raw_key)
    try:
        clean = await validated(data, deps.settings)
    except BadUserInput:
        await _discard(deps, upload.id, raw_key)
        raise
    key = new_key("uploads", SUFFIXES[clean.content_type])
    await deps.storage.put(key, clean.data, clean.content_type)
    async with deps.unit() as unit:
        done = await repository.mark_ready(
            unit.session,
            upload.id,
            key=key,
            content_type=clean.content_type,
            width=clean.width,
            height=clean.height,
            size=len(clean.data),
        )
        unit.discarded.append(raw_key if done else key)
    if not done:  # completed (or used) meanwhile by another call: theirs stands
        return await owned(deps, viewer, upload_id)
    upload.status, upload.storage_key, upload.content_type = "READY", key, clean.content_type
    upload.width, upload.height, upload.size = clean.width, clean.height, len(clean.data)
    return upload


async def _raw(storage: Storage, key: str) -> bytes:
    if not await storage.exists(key):
        raise UploadNotReceived()
    return await storage.get(key)


async def _discard(deps: Deps, upload_id: str, raw_key: str) -> None:
    """A refused upload goes whole: its row, then its raw file."""
    async with deps.unit() as unit:
        await repository.remove(unit.session, upload_id)
        unit.discarded.append(raw_key)
