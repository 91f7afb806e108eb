"""S3 storage against a real S3 endpoint over HTTP (moto_server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from providers.s3 import S3Storage


@pytest.fixture
async def storage(moto_s3: dict[str, str]) -> AsyncIterator[S3Storage]:
    built = S3Storage(
        bucket=moto_s3["LUMI_S3_BUCKET"],
        region=moto_s3["LUMI_S3_REGION"],
        endpoint_url=moto_s3["LUMI_S3_ENDPOINT_URL"],
        prefix="tenant-a",
        access_key_id="test",
        secret_access_key="test",
    )
    await built.ensure_bucket()
    yield built
    await built.close()


async def test_objects_round_trip_and_deleting_twice_is_fine(storage: S3Storage) -> None:
    await storage.put("requests/r1/images/a.png", b"png-bytes", "image/png")
    assert await storage.exists("requests/r1/images/a.png")
    assert await storage.get("requests/r1/images/a.png") == b"png-bytes"
    await storage.delete("requests/r1/images/a.png")
    await storage.delete("requests/r1/images/a.png")
    assert not await storage.exists("requests/r1/images/a.png")


async def test_a_presigned_url_is_sigv4_and_serves_the_object_with_its_type(
    storage: S3Storage,
) -> None:
    await storage.put("m/model.glb", b"glTF-data", "model/gltf-binary")
    url = storage.url("m/model.glb", expires_in=120, filename="owl.glb")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["120"]
    assert urlsplit(url).path.endswith("/tenant-a/m/model.glb")
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"glTF-data"
    assert response.headers["content-type"] == "model/gltf-binary"
    assert 'filename="owl.glb"' in response.headers["content-disposition"]
