"""Uploads no request used go: `lumi maintenance orphans` deletes their rows and files
(README: "Your own image to 3D")."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from PIL import Image
from sqlalchemy import update
from sqlmodel import col, select

from app.config import Settings
from app.deps import Deps
from app.tables import UploadedImage, utcnow
from app.uploads import service
from tests.test_maintenance import lumi
from tests.workers.test_pipeline import a_viewer


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("settings", ["local"], indirect=True)
async def test_an_expired_upload_is_deleted_with_its_file_and_a_live_one_kept(
    deps: Deps, settings: Settings
) -> None:
    viewer = await a_viewer(deps)
    stale = await service.receive(deps, viewer, png(), "old.png")
    live = await service.receive(deps, viewer, png(), "new.png")
    _, pending = await service.open_presigned(deps, viewer, "image/png", None, None)
    async with deps.db.write() as session:
        await session.execute(
            update(UploadedImage)
            .where(col(UploadedImage.id) == stale.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    quarantined = pending.fields["key"]
    await deps.storage.put(quarantined, b"raw", "image/png")  # sent, never completed

    code, out, err = lumi(settings, "orphans", "--older-than", "0")
    assert code == 0, err
    assert stale.storage_key in out
    assert live.storage_key not in out
    assert quarantined not in out  # its upload has not expired: it may still be completed
    assert not await deps.storage.exists(stale.storage_key)
    assert await deps.storage.exists(live.storage_key)
    async with deps.db.read() as session:
        left = set((await session.execute(select(UploadedImage.id))).scalars())
    assert stale.id not in left
    assert live.id in left
