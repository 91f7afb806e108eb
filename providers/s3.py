"""S3-compatible storage through aioboto3, with SigV4 presigned URLs.

One aioboto3 client per instance, opened on first use on the loop that uses it (build
one storage per event loop). URLs are presigned with a plain botocore client: signing
is local computation, so `url()` stays synchronous like every other Storage's.

That client is configured for the public endpoint, the store's address as clients
reach it: a SigV4 signature covers the Host header, so a link presigned for the
internal name and rewritten afterwards would be refused by the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aioboto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

from providers.storage import PresignedPost, StoredObject, check_key, is_key

_MISSING = {"404", "NoSuchKey", "NotFound"}
# Response headers a page's script may read: the size (progress), type and file name.
_EXPOSED = ("Content-Length", "Content-Type", "Content-Disposition", "Content-Range", "ETag")


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        region: str,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        prefix: str = "",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        credentials = {
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "region_name": region,
        }
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "config": Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        }
        self._session = aioboto3.Session(**credentials)
        public = {**self._client_args, "endpoint_url": public_endpoint_url or endpoint_url}
        self._signer = botocore.session.get_session().create_client("s3", **credentials, **public)
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def _s3(self) -> Any:
        if self._client is None:
            self._stack = contextlib.AsyncExitStack()
            self._client = await self._stack.enter_async_context(
                self._session.client("s3", **self._client_args)
            )
        return self._client

    async def ensure_bucket(self) -> None:
        """Creates the bucket when it is missing (development and tests)."""
        s3 = await self._s3()
        try:
            await s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            await s3.create_bucket(Bucket=self.bucket)

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        s3 = await self._s3()
        await s3.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    async def get(self, key: str) -> bytes:
        s3 = await self._s3()
        response = await s3.get_object(Bucket=self.bucket, Key=self._key(key))
        async with response["Body"] as body:
            return bytes(await body.read())

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    async def exists(self, key: str) -> bool:
        s3 = await self._s3()
        try:
            await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return False
            raise
        return True

    async def objects(self, folder: str) -> AsyncIterator[StoredObject]:
        s3 = await self._s3()
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self._key(folder)}/"
        )
        async for page in pages:
            for item in page.get("Contents", []):
                key = str(item["Key"])[len(self.prefix) :]
                if is_key(key):
                    yield StoredObject(key, item["LastModified"], int(item["Size"]))

    async def allow_browsers(self, origins: Sequence[str]) -> dict[str, Any]:
        """Sets the bucket's CORS rules so that pages on `origins` may GET and HEAD its
        objects (a presigned link fetched by script, such as a 3D viewer's) and read the
        size and file name, and POST a presigned upload's form; replaces the bucket's
        CORS rules, and returns them."""
        rules = {
            "CORSRules": [
                {
                    "AllowedOrigins": list(origins),
                    "AllowedMethods": ["GET", "HEAD", "POST"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": [*_EXPOSED],
                    "MaxAgeSeconds": 3600,
                }
            ]
        }
        s3 = await self._s3()
        await s3.put_bucket_cors(Bucket=self.bucket, CORSConfiguration=rules)
        return rules

    def url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return str(
            self._signer.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
        )

    def presigned_post(
        self, key: str, *, content_type: str, max_bytes: int, expires_in: int
    ) -> PresignedPost:
        """S3's browser upload form: the exact key and type, at most `max_bytes` (the
        store itself refuses more: `content-length-range`)."""
        post = self._signer.generate_presigned_post(
            Bucket=self.bucket,
            Key=self._key(key),
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", 1, max_bytes],
            ],
            ExpiresIn=expires_in,
        )
        return PresignedPost(str(post["url"]), {k: str(v) for k, v in post["fields"].items()})

    async def ping(self) -> None:
        s3 = await self._s3()
        await s3.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack, self._client = None, None
