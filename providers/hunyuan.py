"""Tencent Cloud Hunyuan 3D (AI3D): a signed API with asynchronous jobs.

Every call is `POST {endpoint}/` with `X-TC-Action`, `X-TC-Version: 2025-05-13`,
`X-TC-Region`, `X-TC-Timestamp` and a TC3-HMAC-SHA256 `Authorization` header over the
content type, the host and the action. `SubmitHunyuanTo3DProJob {ImageBase64}` answers
`{"Response": {"JobId", "RequestId"}}`; `QueryHunyuanTo3DProJob {JobId}` reports
`Status` WAIT, RUN, DONE (with `ResultFile3Ds: [{"Type", "Url", "PreviewImageUrl"}]`,
the OBJ zipped with its material and texture) or FAIL (with `ErrorCode`/`ErrorMessage`).

Errors come as HTTP 200 with `{"Response": {"Error": {"Code", "Message"}}}`; they map
onto the typed provider errors. The vendor gives no percentage, so the pipeline
estimates one from `typical_seconds`. Neither the secret key nor a signature ever
appears in an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from providers.base import (
    JobState,
    ModelFile,
    ModelJobStatus,
    ProviderAuthFailed,
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.openai_compat import bounded, http_error

SERVICE = "ai3d"
VERSION = "2025-05-13"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
SUBMIT = "SubmitHunyuanTo3DProJob"
QUERY = "QueryHunyuanTo3DProJob"
MAX_IMAGE_BASE64 = 8 * 1024 * 1024  # the vendor refuses larger ImageBase64 values
_STATES = {"WAIT": JobState.QUEUED, "RUN": JobState.RUNNING}
_FILES = {
    "GLB": ("glb", "model/gltf-binary"),
    "OBJ": ("obj", "model/obj"),
}


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def tc3_authorization(
    *,
    secret_id: str,
    secret_key: str,
    host: str,
    action: str,
    payload: bytes,
    timestamp: int,
    service: str = SERVICE,
    content_type: str = CONTENT_TYPE,
) -> str:
    """The `Authorization` header value of one TC3-HMAC-SHA256 signed POST to `/`."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    canonical_headers = f"content-type:{content_type}\nhost:{host}\nx-tc-action:{action.lower()}\n"
    signed_headers = "content-type;host;x-tc-action"
    canonical_request = "\n".join(
        [
            "POST",
            "/",
            "",
            canonical_headers,
            signed_headers,
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


# A failed job with one of these codes failed for Tencent's reasons, not the input's: a
# new job may well succeed (any other failure of a job is final).
_VENDORS_FAULT = (
    "InternalError",
    "ResourceUnavailable",
    "ServiceUnavailable",
    "ResourceInsufficient",
)


def error_type(code: str) -> type[ProviderError]:
    """Which typed error a Tencent Cloud error code means."""
    if code.startswith(("AuthFailure", "UnauthorizedOperation")):
        return ProviderAuthFailed
    if code.startswith(("RequestLimitExceeded", "LimitExceeded", "ResourceInsufficient")):
        return ProviderRateLimited
    if code.startswith(("InternalError", "ResourceUnavailable", "ServiceUnavailable")):
        return ProviderUnavailable
    if "Block" in code or "Illegal" in code or "Sensitive" in code:  # FailedOperation.ImageBlock
        return ProviderRejected
    if code.startswith(
        ("InvalidParameter", "MissingParameter", "UnknownParameter", "UnsupportedOperation")
    ):
        return ProviderInvalidRequest  # our parameters, not the user's content
    if code.startswith("OperationDenied") or "Image" in code:  # the input image itself
        return ProviderRejected
    return ProviderUnavailable  # FailedOperation and codes we have not met: try again


class HunyuanModelGenerator:
    """Hunyuan 3D Pro jobs through the shared HTTP client.

    `typical_seconds` is how long a job usually takes; the vendor reports no progress.
    """

    name = "hunyuan"

    def __init__(
        self,
        *,
        secret_id: str,
        secret_key: str,
        http: httpx.AsyncClient,
        endpoint: str = "https://ai3d.tencentcloudapi.com",
        region: str = "ap-guangzhou",
        timeout: float = 30.0,
        typical_seconds: float = 90.0,
        enable_pbr: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret_id or not secret_key:
            raise ValueError("hunyuan needs a SecretId and a SecretKey")
        self.typical_seconds = typical_seconds
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._http = http
        self._url = httpx.URL(endpoint.rstrip("/") + "/")
        port = self._url.port  # None for the scheme's default port, as httpx's Host header
        self._host = f"{self._url.host}:{port}" if port else self._url.host
        self._region = region
        self._timeout = timeout
        self._enable_pbr = enable_pbr
        self._clock = clock  # the signature's timestamp: Tencent refuses one 5 min off

    async def submit(
        self, image: bytes, content_type: str, *, prompt: str, format: str = "glb"
    ) -> str:
        """Starts a Pro job from the image (the vendor takes a prompt *or* an image, never
        both). A Pro job delivers GLB and zipped OBJ; the pipeline keeps `format`."""
        if format not in ("glb", "obj"):
            raise ProviderRejected(f"format {format!r} is not offered", provider=self.name)
        encoded = base64.b64encode(image).decode()
        if len(encoded) > MAX_IMAGE_BASE64:
            raise ProviderRejected("the image is larger than hunyuan accepts", provider=self.name)
        body: dict[str, Any] = {"ImageBase64": encoded}
        if self._enable_pbr:
            body["EnablePBR"] = True
        reply = await self._call(SUBMIT, body)
        job_id = reply.get("JobId")
        if not isinstance(job_id, str) or not job_id:
            raise ProviderUnavailable("hunyuan answered without a JobId", provider=self.name)
        return job_id

    async def poll(self, vendor_job_id: str) -> ModelJobStatus:
        reply = await self._call(QUERY, {"JobId": vendor_job_id})
        status = reply.get("Status")
        if status in _STATES:
            return ModelJobStatus(_STATES[status])
        if status == "FAIL":
            code = str(reply.get("ErrorCode") or "HUNYUAN_JOB_FAILED")
            return ModelJobStatus(
                JobState.FAILED,
                error_code=code,
                error_message=str(reply.get("ErrorMessage") or "the 3D job failed"),
                transient=code.startswith(_VENDORS_FAULT) or "InnerError" in code,
            )
        if status != "DONE":
            message = f"hunyuan reported an unknown job status {status!r}"
            raise ProviderUnavailable(message, provider=self.name)
        files, preview = self._files(reply.get("ResultFile3Ds"))
        if not files:
            raise ProviderUnavailable("hunyuan finished without a model file", provider=self.name)
        return ModelJobStatus(JobState.SUCCEEDED, progress=100.0, files=files, preview=preview)

    def _files(self, results: Any) -> tuple[list[ModelFile], ModelFile | None]:
        files: list[ModelFile] = []
        preview = None
        for result in results if isinstance(results, list) else []:
            if not isinstance(result, dict) or not isinstance(result.get("Url"), str):
                continue
            url: str = result["Url"]
            kind = _FILES.get(str(result.get("Type", "")).upper())
            if kind is None:
                continue  # STL, USDZ, FBX, MP4: not formats we serve
            file_format, media_type = kind
            if file_format == "obj" and httpx.URL(url).path.lower().endswith(".zip"):
                file_format, media_type = "zip", "application/zip"
            files.append(ModelFile(file_format, media_type, url=url))
            if preview is None and isinstance(result.get("PreviewImageUrl"), str):
                preview = ModelFile("png", "image/png", url=result["PreviewImageUrl"])
        return files, preview

    async def _call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """The `Response` of one signed call, or the typed error it carries."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        timestamp = int(self._clock())
        headers = {
            "Authorization": tc3_authorization(
                secret_id=self._secret_id,
                secret_key=self._secret_key,
                host=self._host,
                action=action,
                payload=payload,
                timestamp=timestamp,
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-TC-Action": action,
            "X-TC-Version": VERSION,
            "X-TC-Region": self._region,
            "X-TC-Timestamp": str(timestamp),
        }
        async with bounded(self.name, self._timeout):
            response = await self._http.post(
                self._url, content=payload, headers=headers, timeout=self._timeout
            )
        if not response.is_success:  # a gateway in front of the API, not the API itself
            raise http_error(response, name=self.name, secret=self._secret_key)
        try:
            reply: Any = response.json()
        except ValueError:
            reply = None
        answer = reply.get("Response") if isinstance(reply, dict) else None
        if not isinstance(answer, dict):
            message = f"hunyuan answered {action} without a Response object"
            raise ProviderUnavailable(message, provider=self.name)
        error = answer.get("Error")
        if isinstance(error, dict):
            raise self._error(action, error, answer.get("RequestId"))
        return answer

    def _error(self, action: str, error: dict[str, Any], request_id: Any) -> ProviderError:
        code = str(error.get("Code") or "UnknownError")
        detail = " ".join(str(error.get("Message") or "").split())
        detail = detail.replace(self._secret_key, "[redacted]")[:300]
        message = f"hunyuan refused {action}: {detail} (code {code})"
        if request_id:
            message += f" [request {request_id}]"
        kind = error_type(code)
        if kind is ProviderRateLimited:
            return ProviderRateLimited(message, provider=self.name, retry_after=None)
        return kind(message, provider=self.name)
