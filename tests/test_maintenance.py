"""`lumi maintenance` as an operator runs it, on local storage and a real S3 endpoint:
orphaned files are found and deleted, referenced ones never; bucket CORS rules."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
import httpx
import pytest
from sqlmodel import select

from app.config import Settings
from app.deps import Deps
from app.models.service import stored_keys
from app.tables import GeneratedImage, Model
from providers.s3 import S3Storage
from providers.storage import LocalStorage
from tests.conftest import make_settings, run_lumi
from tests.workers.test_pipeline import a_viewer, deliver, submit

ORPHANS = ["images/stray.png", "models/0123abcd/model.obj", "previews/stray.png"]
FOREIGN = "backups/not-ours.txt"  # outside the gateway's folders: never judged
# Commands that read no table: once is enough.
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    overrides: dict[str, str] = {}
    if request.param == "s3":
        s3: dict[str, str] = request.getfixturevalue("moto_s3")
        overrides = {name.removeprefix("LUMI_").lower(): value for name, value in s3.items()}
        overrides["s3_prefix"] = f"t-{uuid.uuid4().hex[:8]}"  # the bucket is shared
    return make_settings(tmp_path, database_url=database_url, **overrides)


def lumi(settings: Settings, *args: str) -> tuple[int, str, str]:
    """`lumi maintenance ...` in a subprocess, on the test's database and storage."""
    env = {"LUMI_DATABASE_URL": settings.resolved_database_url}
    if settings.storage_backend == "s3":
        env |= {
            "LUMI_STORAGE_BACKEND": "s3",
            "LUMI_S3_BUCKET": settings.s3_bucket,
            "LUMI_S3_REGION": settings.s3_region,
            "LUMI_S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
            "LUMI_S3_PREFIX": settings.s3_prefix,
            "LUMI_S3_ACCESS_KEY_ID": str(settings.s3_access_key_id),
            "LUMI_S3_SECRET_ACCESS_KEY": "test",
        }
    done = run_lumi(settings.data_dir, "maintenance", *args, **env)
    return done.returncode, done.stdout, done.stderr


async def referenced(deps: Deps) -> list[str]:
    """A request run to its end: the keys of its images and of its model's files."""
    if isinstance(deps.storage, S3Storage):
        await deps.storage.ensure_bucket()
    viewer = await a_viewer(deps)
    await submit(deps, viewer, image_count=2, auto_model=True, model_format="obj")
    await deliver(deps)
    async with deps.db.read() as session:
        images = (await session.execute(select(GeneratedImage.storage_key))).scalars()
        model = (await session.execute(select(Model))).scalar_one()
    return [*(key for key in images if key), *stored_keys(model)]


async def existing(deps: Deps, keys: list[str]) -> list[str]:
    return [key for key in keys if await deps.storage.exists(key)]


# The command's flow (dry run, grace, deletion) once per storage; which keys the tables
# refer to is read on both databases by the test after it.
@ONE_DATABASE
async def test_orphans_are_listed_by_a_dry_run_and_deleted_only_past_the_grace(
    deps: Deps, settings: Settings
) -> None:
    kept = await referenced(deps)
    assert len(kept) == 6  # two images; an OBJ, its material and texture; a preview
    for key in [*ORPHANS, FOREIGN]:
        await deps.storage.put(key, b"stray bytes", "application/octet-stream")

    code, out, err = lumi(settings, "orphans", "--dry-run", "--older-than", "0")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[:-1]] == ORPHANS
    assert "3 orphaned file(s), 33 bytes, listed only (--dry-run)" in out
    assert await existing(deps, [*ORPHANS, FOREIGN, *kept]) == [*ORPHANS, FOREIGN, *kept]

    code, out, err = lumi(settings, "orphans")  # an hour's grace: they were just written
    assert code == 0, err
    assert out.strip() == "0 orphaned file(s), 0 bytes, deleted"
    assert await existing(deps, ORPHANS) == ORPHANS

    code, out, err = lumi(settings, "orphans", "--older-than", "0")
    assert code == 0, err
    assert "3 orphaned file(s), 33 bytes, deleted" in out
    assert await existing(deps, [*ORPHANS, FOREIGN, *kept]) == [FOREIGN, *kept]


def backdate(storage: LocalStorage, key: str, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(storage.path_for(key), (then, then))


@pytest.mark.parametrize("settings", ["local"], indirect=True)
async def test_orphans_spare_a_file_younger_than_the_grace_and_every_referenced_file(
    deps: Deps, settings: Settings
) -> None:
    storage = deps.storage
    assert isinstance(storage, LocalStorage)
    kept = await referenced(deps)
    stale, fresh = "images/stale.png", "images/fresh.png"
    for key in (stale, fresh):
        await storage.put(key, b"png", "image/png")
    for key in (stale, *kept):  # referenced files are old too: age alone never condemns
        backdate(storage, key, hours=2)
    backdate(storage, fresh, hours=0.5)

    code, out, err = lumi(settings, "orphans", "--older-than", "3600")
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"{stale}  3 bytes  written ")
    assert await existing(deps, [stale, fresh, *kept]) == [fresh, *kept]
    assert not storage.path_for(stale).with_name("stale.png.type").exists()


@ONE_DATABASE
@pytest.mark.parametrize("settings", ["local"], indirect=True)
async def test_a_negative_grace_is_refused(settings: Settings) -> None:
    code, _, err = lumi(settings, "orphans", "--older-than", "-1")
    assert code == 2
    assert "--older-than must not be negative" in err


@pytest.fixture
async def s3_client(moto_s3: dict[str, str]) -> AsyncIterator[object]:
    session = aioboto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=moto_s3["LUMI_S3_ENDPOINT_URL"]) as client:
        yield client


@ONE_DATABASE
@pytest.mark.parametrize("settings", ["s3"], indirect=True)
async def test_s3_cors_lets_the_named_origins_read_the_bucket_and_post_uploads(
    deps: Deps, settings: Settings, s3_client: object
) -> None:
    assert isinstance(deps.storage, S3Storage)
    await deps.storage.ensure_bucket()
    origins = ("https://studio.example.com", "http://localhost:5173")
    code, out, err = lumi(settings, "s3-cors", "--origin", origins[0], "--origin", origins[1])
    assert code == 0, err
    assert f"CORS rules of bucket {settings.s3_bucket}:" in out
    assert all(origin in out for origin in origins)
    found = await s3_client.get_bucket_cors(Bucket=settings.s3_bucket)  # type: ignore[attr-defined]
    [rule] = found["CORSRules"]
    assert rule["AllowedOrigins"] == list(origins)
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD", "POST"]
    assert "Content-Disposition" in rule["ExposeHeaders"]
    # What a browser asks before a page on that origin posts a presigned upload's form.
    async with httpx.AsyncClient() as client:
        answer = await client.options(
            f"{settings.s3_endpoint_url}/{settings.s3_bucket}",
            headers={"Origin": origins[1], "Access-Control-Request-Method": "POST"},
        )
    assert answer.headers["access-control-allow-origin"] == origins[1]
    assert "POST" in answer.headers["access-control-allow-methods"]


@ONE_DATABASE
@pytest.mark.parametrize("settings", ["s3"], indirect=True)
async def test_s3_cors_refuses_what_is_not_an_origin(settings: Settings) -> None:
    code, _, err = lumi(settings, "s3-cors", "--origin", "https://studio.example.com/")
    assert code == 2
    assert "'https://studio.example.com/' is not an origin" in err


@ONE_DATABASE
@pytest.mark.parametrize("settings", ["local"], indirect=True)
async def test_s3_cors_refuses_on_local_storage(settings: Settings) -> None:
    code, out, err = lumi(settings, "s3-cors", "--origin", "https://studio.example.com")
    assert code == 2
    assert "LUMI_STORAGE_BACKEND is local" in err
    assert out == ""
