"""`lumi maintenance`: stored files nothing refers to, and the bucket's CORS rules.

A file becomes an orphan when it outlives its row: a stage stored its output and then
found its request cancelled or deleted, a process died between writing a file and
committing its row, a delete committed but storage was down when its files were to
go, or a request was deleted before revision 0007, when deleting only hid it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from app.db import Database
from app.models import repository as models
from app.requests import repository as requests
from app.tables import utcnow
from app.uploads import repository as uploads
from providers.storage import Storage, StoredObject

# The folders the gateway stores under (workers/image.py and workers/model.py: images/, models/ and
# previews/; requests/ for files stored before 2026-12-01; app/uploads: uploads/ for
# checked images, incoming/ for presigned uploads in quarantine). Nothing else in the store
# is ours to judge: a bucket may be shared.
FOLDERS = ("images", "models", "previews", "requests", "uploads", "incoming")
# A scheme and a host (and port), as a browser sends it in `Origin`; S3 allows one `*`.
_ORIGIN = re.compile(r"^https?://[^/?#\s]+$")


async def referenced_keys(db: Database, now: datetime | None = None) -> set[str]:
    """Every storage key a row refers to: images, models' files and previews, and the
    uploads not expired yet (an expired one's file is an orphan: nobody may use it)."""
    async with db.read() as session:
        keys = {key async for key in requests.stored_image_keys(session)}
        keys.update([key async for key in models.stored_keys(session)])
        keys.update([key async for key in uploads.live_keys(session, now or utcnow())])
    return keys


async def delete_expired_uploads(db: Database, now: datetime | None = None) -> int:
    """Deletes the rows of uploads no request used in time (LUMI_UPLOAD_TTL_SECONDS);
    their files are orphans from then on. How many went."""
    async with db.write() as session:
        return await uploads.delete_expired(session, now or utcnow())


async def find_orphans(
    storage: Storage, db: Database, *, grace: timedelta, now: datetime | None = None
) -> list[StoredObject]:
    """Stored files no row refers to, last written more than `grace` ago.

    The grace spares a file a stage has just stored and whose row it has not committed
    yet: it must be longer than any stage (`LUMI_STAGE_TIME_LIMIT_SECONDS`). The rows
    are read before the files are listed, so a file older than the grace is either
    referenced in what was read or never will be.
    """
    cutoff = (now or utcnow()) - grace
    referenced = await referenced_keys(db, now)
    orphans = []
    for folder in FOLDERS:
        async for stored in storage.objects(folder):
            if stored.modified < cutoff and stored.key not in referenced:
                orphans.append(stored)
    return sorted(orphans, key=lambda stored: stored.key)


async def delete_orphans(storage: Storage, orphans: Sequence[StoredObject]) -> None:
    for orphan in orphans:
        await storage.delete(orphan.key)


class NotOnS3(Exception):
    """Bucket settings asked of a storage that is not an S3 bucket."""


def check_origins(origins: Sequence[str]) -> list[str]:
    """The origins as given, or ValueError naming the first that no browser would send."""
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise ValueError(
                f"{origin!r} is not an origin: give a scheme and a host (and port), with "
                "no path or trailing slash, such as https://studio.example.com"
            )
    if not origins:
        raise ValueError("name at least one --origin")
    return list(origins)


async def allow_browsers(storage: Storage, origins: Sequence[str]) -> dict[str, Any]:
    """Lets pages on `origins` download stored files and post presigned uploads by
    script; returns the rules set."""
    from providers.s3 import S3Storage  # only on S3 (app/deps.py build_storage)

    if not isinstance(storage, S3Storage):
        raise NotOnS3()
    return await storage.allow_browsers(check_origins(origins))
