"""File links on S3 name the store as clients reach it (LUMI_S3_PUBLIC_ENDPOINT_URL),
while the gateway itself talks to the store by its internal address: in compose, the
API reaches `minio:9000` and a browser on the host `localhost:9000`."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from app.deps import build_storage
from tests.conftest import Server, make_settings, start_server, stop_server
from tests.e2e.client import REQUEST_UPDATES, collect, create_request, data_of, ws_session

pytestmark = pytest.mark.e2e

IMAGES = "query I($id: ID!) { request(id: $id) { images { url } } }"


def public(moto_s3: dict[str, str]) -> str:
    """The same moto_server under another host name, as a browser would name it."""
    return moto_s3["LUMI_S3_ENDPOINT_URL"].replace("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto_s3: dict[str, str]) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("s3-public")
    running = start_server(data_dir, **moto_s3, LUMI_S3_PUBLIC_ENDPOINT_URL=public(moto_s3))
    yield running
    stop_server(running)


def signed_for_its_own_host(url: str, secret: str) -> bool:
    """Recomputes a presigned GET's SigV4 signature for the host the URL names: moto_server
    checks no signature, but MinIO and AWS do, and a SigV4 signature covers the Host."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    signature = query.pop("X-Amz-Signature")
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query.items())
    canonical_query = "&".join(f"{k}={v}" for k, v in encoded)
    signed = query["X-Amz-SignedHeaders"]
    canonical = f"GET\n{parts.path}\n{canonical_query}\nhost:{parts.netloc}\n\n{signed}\n"
    canonical += "UNSIGNED-PAYLOAD"
    scope = query["X-Amz-Credential"].split("/", 1)[1]
    digest = sha256(canonical.encode()).hexdigest()
    to_sign = "\n".join(("AWS4-HMAC-SHA256", query["X-Amz-Date"], scope, digest))
    key = f"AWS4{secret}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), sha256).hexdigest(), signature)


async def test_an_image_link_names_the_public_endpoint_and_opens_there(
    server: Server, moto_s3: dict[str, str], tmp_path: Path
) -> None:
    user = f"s3-{uuid.uuid4().hex[:6]}"
    created = await create_request(server, user, imageCount=1)
    async with ws_session(server, user) as session:
        follow = {"id": created["id"], "afterSeq": 0}
        await collect(
            session, REQUEST_UPDATES, follow, until=lambda e: e["status"] == "IMAGE_COMPLETED"
        )
    found = await data_of(server, IMAGES, {"id": created["id"]}, user=user)
    url = found["request"]["images"][0]["url"]

    assert url.startswith(public(moto_s3) + "/")
    assert signed_for_its_own_host(url, moto_s3["LUMI_S3_SECRET_ACCESS_KEY"])
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200
    # The same object, read through the internal endpoint the gateway writes to.
    overrides = {k.removeprefix("LUMI_").lower(): v for k, v in moto_s3.items()}
    storage = build_storage(make_settings(tmp_path, **overrides))
    key = urlsplit(url).path.removeprefix(f"/{moto_s3['LUMI_S3_BUCKET']}/")
    try:
        assert response.content == await storage.get(key)
    finally:
        await storage.close()
