"""A user holds at most LUMI_UPLOAD_MAX_UNUSED uploads no request used yet: one more is
refused before its file is read or stored (README: "Your own image to 3D")."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, update
from sqlmodel import col, select

from app.deps import Deps
from app.errors import LimitExceeded
from app.tables import UploadedImage, utcnow
from app.uploads import service
from tests.uploads.test_expiry import png
from tests.workers.test_pipeline import a_viewer


async def uploads_of(deps: Deps, owner_id: str) -> int:
    query = select(func.count()).where(col(UploadedImage.owner_id) == owner_id)
    async with deps.db.read() as session:
        return int((await session.execute(query)).scalar_one())


@pytest.mark.parametrize("settings", ["local"], indirect=True)
async def test_past_the_limit_of_unused_uploads_one_more_is_refused_and_nothing_kept(
    deps: Deps,
) -> None:
    limited = dataclasses.replace(
        deps, settings=deps.settings.model_copy(update={"upload_max_unused": 2})
    )
    viewer, other = await a_viewer(limited), await a_viewer(limited, "bob")
    first = await service.receive(limited, viewer, png(), "a.png")
    await service.open_presigned(limited, viewer, "image/png", None, None)
    files = {key async for key in _stored(deps)}

    with pytest.raises(LimitExceeded) as refused:
        await service.receive(limited, viewer, png(), "c.png")
    assert refused.value.extensions == {"limit": 2, "scope": "uploads"}
    with pytest.raises(LimitExceeded):
        await service.open_presigned(limited, viewer, "image/png", None, None)
    assert await uploads_of(deps, viewer.id) == 2
    assert {key async for key in _stored(deps)} == files  # no file written either

    await service.receive(limited, other, png(), "d.png")  # each user has their own
    async with deps.db.write() as session:  # an expired upload no longer counts
        await session.execute(
            update(UploadedImage)
            .where(col(UploadedImage.id) == first.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    await service.receive(limited, viewer, png(), "e.png")


async def _stored(deps: Deps) -> AsyncIterator[str]:
    for folder in ("uploads", "incoming"):
        async for stored in deps.storage.objects(folder):
            yield stored.key


@pytest.mark.parametrize("settings", ["local"], indirect=True)
async def test_uploads_sent_at_once_stop_at_the_limit_too(deps: Deps) -> None:
    limited = dataclasses.replace(
        deps, settings=deps.settings.model_copy(update={"upload_max_unused": 2})
    )
    viewer = await a_viewer(limited)
    results = await asyncio.gather(
        *(service.receive(limited, viewer, png(), f"{n}.png") for n in range(6)),
        return_exceptions=True,
    )
    kept = [r for r in results if isinstance(r, UploadedImage)]
    assert len(kept) == 2
    assert all(isinstance(r, LimitExceeded) for r in results if r not in kept)
    assert await uploads_of(deps, viewer.id) == 2
    # The refused ones' files, stored before the last check, are gone with them.
    assert {key async for key in _stored(deps)} == {u.storage_key for u in kept}
