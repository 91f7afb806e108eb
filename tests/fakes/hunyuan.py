"""A fake Tencent Cloud Hunyuan 3D (AI3D) API, faithful to its documented shapes.

Every call is `POST /` with `X-TC-Action`, `X-TC-Version`, `X-TC-Region`,
`X-TC-Timestamp` and a TC3-HMAC-SHA256 `Authorization` header. The fake verifies the
signature itself (its own implementation of the algorithm, not the adapter's) and
answers a wrong one, a stale timestamp or an unknown SecretId the way Tencent does:
HTTP 200 with `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`.

`SubmitHunyuanTo3DProJob` takes `Prompt` or `ImageBase64`/`ImageUrl`, never both, and
answers `{"Response": {"JobId", "RequestId"}}`; at most `max_concurrent` jobs (3, as for
Pro jobs) may be waiting or running per account, beyond which it answers
`RequestLimitExceeded.JobNumExceed`. `QueryHunyuanTo3DProJob {JobId}` walks WAIT → RUN
→ DONE by elapsed time; DONE lists a GLB and a zipped OBJ (with MTL and texture), each
with a preview, served until they expire. No percentage is ever given.

With `max_rate` set, each action takes at most that many requests in any second (the
documented quota is 20/s per API); one more is answered `RequestLimitExceeded`, as
Tencent's common error code says. `/_fake/stats` reports the busiest second seen.

Tests script the outcomes of the next submissions over HTTP (`/_fake/script`, one
outcome per accepted submission, `repeat` keeps the last): `error` (a Tencent error
code answered at once, with `message`), `status` (an HTTP status from the gateway in
front), `delay`, `job: "FAIL"` (the job fails with `error`/`message`), `run_seconds`.
`GET /_fake/calls` logs every call (a submission with the SHA-256 of its image);
`GET /_fake/stats` reports `max_concurrent_seen`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import io
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from providers.local import build_relief_glb, build_relief_obj_zip
from tests.fakes import start_fake_module

VERSION = "2025-05-13"
SUBMIT = "SubmitHunyuanTo3DProJob"
QUERY = "QueryHunyuanTo3DProJob"
_AUTHORIZATION = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/]+)"
    r"/tc3_request, SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)


class TencentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def envelope(payload: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"Response": {**payload, "RequestId": str(uuid.uuid4())}})


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def expected_signature(
    secret_key: str, request_headers: dict[str, str], signed: list[str], body: bytes, stamp: int
) -> str:
    """The signature Tencent computes for a POST to `/` (documented TC3 algorithm)."""

    def value(name: str) -> str:
        text = request_headers.get(name, "").strip()
        return text.lower() if name == "x-tc-action" else text

    canonical_headers = "".join(f"{name}:{value(name)}\n" for name in signed)
    canonical = "\n".join(
        ["POST", "/", "", canonical_headers, ";".join(signed), hashlib.sha256(body).hexdigest()]
    )
    date = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
    to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(stamp),
            f"{date}/ai3d/tc3_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _sign(_sign(_sign(("TC3" + secret_key).encode(), date), "ai3d"), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass
class Job:
    image: bytes
    submitted: float
    wait_seconds: float
    run_seconds: float
    fail: tuple[str, str] | None = None
    files: dict[str, str] = field(default_factory=dict)

    def status(self, now: float) -> str:
        elapsed = now - self.submitted
        if elapsed < self.wait_seconds:
            return "WAIT"
        if elapsed < self.wait_seconds + self.run_seconds:
            return "RUN"
        return "FAIL" if self.fail else "DONE"


@dataclass
class FakeHunyuan:
    secret_id: str
    secret_key: str
    wait_seconds: float = 0.2
    run_seconds: float = 1.0
    url_ttl_seconds: float = 86400.0
    max_concurrent: int = 3
    script: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)
    files: dict[str, tuple[float, str, bytes]] = field(default_factory=dict)
    max_concurrent_seen: int = 0
    max_rate: float | None = None  # requests per second per action
    recent: dict[str, deque[float]] = field(default_factory=dict)
    busiest_second: dict[str, int] = field(default_factory=dict)
    rate_limited: dict[str, int] = field(default_factory=dict)
    built: dict[bytes, dict[str, tuple[str, bytes]]] = field(default_factory=dict)

    def count_rate(self, action: str, now: float) -> None:
        """Counts a call against its action's quota; refuses it beyond `max_rate`."""
        window = self.recent.setdefault(action, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if self.max_rate is not None and len(window) >= self.max_rate:
            self.rate_limited[action] = self.rate_limited.get(action, 0) + 1
            raise TencentError(
                "RequestLimitExceeded",
                "Your current request rate exceeds the limit, please try again later.",
            )
        window.append(now)
        self.busiest_second[action] = max(self.busiest_second.get(action, 0), len(window))

    def next_outcome(self) -> dict[str, Any]:
        if not self.script:
            return {}
        if len(self.script) == 1 and self.script[0].get("repeat"):
            return self.script[0]
        return self.script.pop(0)

    async def api(self, request: Request) -> Response:
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        action = headers.get("x-tc-action", "")
        call: dict[str, Any] = {"action": action, "at": time.time(), "outcome": "ok"}
        self.calls.append(call)
        try:
            self.verify(headers, body)
            self.count_rate(action, time.monotonic())
            payload = self.parse(body)
            if action == SUBMIT:
                call["image_sha256"] = _digest_of(payload.get("ImageBase64"))
                outcome = self.next_outcome()
                if outcome.get("delay"):
                    await asyncio.sleep(float(outcome["delay"]))
                if outcome.get("status"):
                    call["outcome"] = f"http {outcome['status']}"
                    return PlainTextResponse("Bad Gateway", status_code=int(outcome["status"]))
                reply = self.submit(request, payload, outcome)
            elif action == QUERY:
                reply = self.query(request, payload)
            else:
                raise TencentError("InvalidAction", f"The action `{action}` is not valid.")
        except TencentError as exc:
            call["outcome"] = exc.code
            return envelope({"Error": {"Code": exc.code, "Message": exc.message}})
        return envelope(reply)

    def verify(self, headers: dict[str, str], body: bytes) -> None:
        match = _AUTHORIZATION.match(headers.get("authorization", ""))
        if match is None:
            raise TencentError(
                "AuthFailure.InvalidAuthorization",
                "The value of the Authorization header is not a TC3-HMAC-SHA256 signature.",
            )
        if match["id"] != self.secret_id:
            raise TencentError("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
        if headers.get("x-tc-version") != VERSION:
            raise TencentError("NoSuchVersion", "The API version is not valid.")
        try:
            stamp = int(headers.get("x-tc-timestamp", ""))
        except ValueError:
            raise TencentError("MissingParameter", "X-TC-Timestamp is missing.") from None
        if abs(time.time() - stamp) > 300:
            raise TencentError(
                "AuthFailure.SignatureExpire",
                "Signature expired. Timestamp and server time cannot differ by more than 5 min.",
            )
        signed = match["headers"].split(";")
        if not {"content-type", "host"} <= set(signed):
            raise TencentError(
                "AuthFailure.InvalidAuthorization", "content-type and host must be signed."
            )
        date = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
        wanted = expected_signature(self.secret_key, headers, signed, body, stamp)
        if (
            match["date"] != date
            or match["service"] != "ai3d"
            or not hmac.compare_digest(wanted, match["signature"])
        ):
            raise TencentError(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. "
                "Please check your signature is correct.",
            )

    @staticmethod
    def parse(body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            raise TencentError("InvalidParameter", "The request body is not JSON.") from None
        if not isinstance(payload, dict):
            raise TencentError("InvalidParameter", "The request body must be an object.")
        return payload

    def in_flight(self, now: float) -> int:
        return sum(job.status(now) in ("WAIT", "RUN") for job in self.jobs.values())

    def submit(
        self, request: Request, payload: dict[str, Any], outcome: dict[str, Any]
    ) -> dict[str, Any]:
        prompt, data, url = (
            payload.get("Prompt"),
            payload.get("ImageBase64"),
            payload.get("ImageUrl"),
        )
        given = [
            name
            for name, value in (("Prompt", prompt), ("ImageBase64", data), ("ImageUrl", url))
            if value
        ]
        if not given:
            raise TencentError("MissingParameter", "Prompt, ImageBase64 or ImageUrl is required.")
        if len(given) > 1:
            raise TencentError(
                "InvalidParameterValue.ParameterConflict",
                f"{' and '.join(given)} cannot be used together.",
            )
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 1024):
            raise TencentError(
                "InvalidParameterValue.PromptTooLong", "The prompt is limited to 1024 characters."
            )
        image = b""
        if data is not None:
            try:
                image = base64.b64decode(str(data), validate=True)
                Image.open(io.BytesIO(image)).verify()
            except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
                raise TencentError(
                    "InvalidParameterValue.ImageDecodeFailed", "The image could not be decoded."
                ) from None
        if "error" in outcome:
            message = str(outcome.get("message") or "The request failed.")
            raise TencentError(str(outcome["error"]), message)
        now = time.time()
        running = self.in_flight(now)
        if running >= self.max_concurrent:
            raise TencentError(
                "RequestLimitExceeded.JobNumExceed",
                "The number of concurrent jobs exceeds the limit.",
            )
        self.max_concurrent_seen = max(self.max_concurrent_seen, running + 1)
        job_id = uuid.uuid4().hex[:20]
        fail = None
        if outcome.get("job") == "FAIL":
            fail = (
                str(outcome.get("error_code", "FailedOperation.InnerError")),
                str(outcome.get("message", "The 3D generation failed.")),
            )
        self.jobs[job_id] = Job(
            image=image or _prompt_image(str(prompt)),
            submitted=now,
            wait_seconds=float(outcome.get("wait_seconds", self.wait_seconds)),
            run_seconds=float(outcome.get("run_seconds", self.run_seconds)),
            fail=fail,
        )
        return {"JobId": job_id}

    def query(self, request: Request, payload: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs.get(str(payload.get("JobId", "")))
        if job is None:
            raise TencentError("InvalidParameterValue.JobNotFound", "The job does not exist.")
        status = job.status(time.time())
        reply: dict[str, Any] = {
            "Status": status,
            "ErrorCode": "",
            "ErrorMessage": "",
            "ResultFile3Ds": [],
        }
        if status == "FAIL" and job.fail:
            reply["ErrorCode"], reply["ErrorMessage"] = job.fail
        if status == "DONE":
            base = str(request.base_url).rstrip("/")
            if not job.files:
                job.files = self.build(job)
            reply["ResultFile3Ds"] = [
                {
                    "Type": "GLB",
                    "Url": f"{base}/files/{job.files['glb']}",
                    "PreviewImageUrl": f"{base}/files/{job.files['png']}",
                },
                {
                    "Type": "OBJ",
                    "Url": f"{base}/files/{job.files['zip']}",
                    "PreviewImageUrl": f"{base}/files/{job.files['png']}",
                },
            ]
        return reply

    def build(self, job: Job) -> dict[str, str]:
        expires = time.monotonic() + self.url_ttl_seconds
        made = self.made(job.image)
        names = {}
        for extension, (media_type, data) in made.items():
            name = f"{uuid.uuid4().hex}.{extension}"
            self.files[name] = (expires, media_type, data)
            names[extension] = name
        return names

    def made(self, image: bytes) -> dict[str, tuple[str, bytes]]:
        """A job's files, built once per distinct input image: a real vendor builds them
        on its own machines, and a benchmark's fake must not spend the machine's CPU
        building the same mesh a thousand times."""
        key = hashlib.sha256(image).digest()
        if key not in self.built:
            preview = io.BytesIO()
            Image.open(io.BytesIO(image)).convert("RGB").resize((128, 128)).save(preview, "PNG")
            if len(self.built) >= 64:
                self.built.clear()
            self.built[key] = {
                "glb": ("model/gltf-binary", build_relief_glb(image, grid=16)),
                "zip": ("application/zip", build_relief_obj_zip(image, grid=16)),
                "png": ("image/png", preview.getvalue()),
            }
        return self.built[key]

    async def file(self, request: Request) -> Response:
        expires, media_type, data = self.files.get(request.path_params["name"], (0.0, "", b""))
        if time.monotonic() >= expires:
            return PlainTextResponse("Request has expired", status_code=403)  # as COS answers
        return Response(data, media_type=media_type)

    async def set_script(self, request: Request) -> Response:
        try:
            responses = (await request.json())["responses"]
        except (ValueError, KeyError, TypeError):
            return PlainTextResponse('expected {"responses": [...]}', status_code=400)
        self.script[:] = list(responses)
        return JSONResponse({"queued": len(self.script)})

    async def get_calls(self, request: Request) -> Response:
        return JSONResponse({"calls": self.calls})

    async def stats(self, request: Request) -> Response:
        now = time.time()
        return JSONResponse(
            {
                "max_concurrent_seen": self.max_concurrent_seen,
                "in_flight": self.in_flight(now),
                "jobs": len(self.jobs),
                "busiest_second": self.busiest_second,
                "rate_limited": self.rate_limited,
            }
        )

    async def reset(self, request: Request) -> Response:
        self.script.clear()
        self.calls.clear()
        self.jobs.clear()
        self.files.clear()
        self.max_concurrent_seen = 0
        self.recent.clear()
        self.busiest_second.clear()
        self.rate_limited.clear()
        return JSONResponse({})


def _digest_of(encoded: Any) -> str | None:
    """SHA-256 of a submitted image, for tests to tell which image was sent."""
    try:
        return hashlib.sha256(base64.b64decode(str(encoded), validate=True)).hexdigest()
    except (binascii.Error, ValueError):
        return None


def _prompt_image(prompt: str) -> bytes:
    from providers.local import render_png

    return render_png(prompt, 1, 256, 256)


def create_fake_app(*, secret_id: str, secret_key: str, **options: Any) -> Starlette:
    """The fake as an ASGI app; `app.state.fake` is its `FakeHunyuan`."""
    fake = FakeHunyuan(secret_id=secret_id, secret_key=secret_key, **options)
    app = Starlette(
        routes=[
            Route("/", fake.api, methods=["POST"]),
            Route("/files/{name}", fake.file),
            Route("/_fake/script", fake.set_script, methods=["POST"]),
            Route("/_fake/calls", fake.get_calls),
            Route("/_fake/stats", fake.stats),
            Route("/_fake/reset", fake.reset, methods=["POST"]),
        ]
    )
    app.state.fake = fake
    return app


def start_fake_hunyuan(
    secret_id: str,
    secret_key: str,
    *,
    run_seconds: float = 1.0,
    log: Path | None = None,
) -> tuple[str, Callable[[], None]]:
    """The fake in a subprocess on a free loopback port: its URL and a `stop()`."""
    arguments = ["--secret-id", secret_id, "--secret-key", secret_key]
    arguments += ["--run-seconds", str(run_seconds)]
    return start_fake_module("tests.fakes.hunyuan", arguments, log=log)


@contextlib.contextmanager
def fake_hunyuan(secret_id: str, secret_key: str, **options: Any) -> Iterator[str]:
    url, stop = start_fake_hunyuan(secret_id, secret_key, **options)
    try:
        yield url
    finally:
        stop()


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A fake Tencent Cloud Hunyuan 3D API")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-id", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--run-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    app = create_fake_app(
        secret_id=args.secret_id, secret_key=args.secret_key, run_seconds=args.run_seconds
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
