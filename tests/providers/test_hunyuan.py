"""The Hunyuan 3D adapter against a fake that signs, fails and progresses as Tencent does."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import traceback
from collections.abc import AsyncIterator

import httpx
import pytest

from providers.base import (
    JobState,
    ModelGenerator,
    ProviderAuthFailed,
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from providers.formats import model_files
from providers.hunyuan import QUERY, SUBMIT, HunyuanModelGenerator, tc3_authorization
from providers.local import render_png
from tests.fakes.hunyuan import create_fake_app, fake_hunyuan

SECRET_ID = "AKIDfakeid0123456789"
SECRET_KEY = "hunyuan-secret-key-0123456789"
BASE = "http://ai3d.test"
IMAGE = render_png("a ceramic owl", 7, 256, 256)


def client_for(**options: float) -> httpx.AsyncClient:
    app = create_fake_app(secret_id=SECRET_ID, secret_key=SECRET_KEY, **options)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(wait_seconds=0.05, run_seconds=0.2) as client:
        yield client


def adapter(
    http: httpx.AsyncClient,
    *,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    endpoint: str = BASE,
    timeout: float = 5,
) -> HunyuanModelGenerator:
    return HunyuanModelGenerator(
        secret_id=secret_id,
        secret_key=secret_key,
        http=http,
        endpoint=endpoint,
        timeout=timeout,
        typical_seconds=60,
    )


async def script(http: httpx.AsyncClient, *responses: dict[str, object]) -> None:
    (await http.post("/_fake/script", json={"responses": list(responses)})).raise_for_status()


async def calls(http: httpx.AsyncClient) -> list[dict[str, object]]:
    return list((await http.get("/_fake/calls")).json()["calls"])


async def until_finished(provider: HunyuanModelGenerator, job_id: str) -> list[JobState]:
    seen = []
    for _ in range(100):
        status = await provider.poll(job_id)
        seen.append(status.state)
        if status.state in (JobState.SUCCEEDED, JobState.FAILED):
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"the job never finished: {seen}")


def test_it_is_a_model_generator() -> None:
    assert isinstance(adapter(httpx.AsyncClient()), ModelGenerator)


async def test_a_job_walks_wait_run_done_and_delivers_glb_and_zipped_obj(
    http: httpx.AsyncClient,
) -> None:
    provider = adapter(http)
    job_id = await provider.submit(IMAGE, "image/png", prompt="a ceramic owl")

    seen = await until_finished(provider, job_id)
    status = await provider.poll(job_id)

    assert seen[0] is JobState.QUEUED
    assert JobState.RUNNING in seen
    assert seen[-1] is JobState.SUCCEEDED
    formats = {file.format: file for file in status.files}
    assert set(formats) == {"glb", "zip"}
    glb = (await http.get(str(formats["glb"].url))).content
    assert model_files("glb", glb)[0].data[:4] == b"glTF"
    archive = (await http.get(str(formats["zip"].url))).content
    names = {part.name for part in model_files("zip", archive, "hunyuan")}
    assert {"model.obj", "material.mtl", "texture.png"} <= names
    assert status.preview is not None
    preview = (await http.get(str(status.preview.url))).content
    assert preview.startswith(b"\x89PNG")


async def test_the_vendor_gives_no_percentage_while_running(http: httpx.AsyncClient) -> None:
    provider = adapter(http)
    job_id = await provider.submit(IMAGE, "image/png", prompt="owl")

    first = await provider.poll(job_id)

    assert first.state in (JobState.QUEUED, JobState.RUNNING)
    assert first.progress is None  # so the pipeline shows an estimate, flagged as one


async def test_the_submission_is_signed_and_carries_the_image_only(
    http: httpx.AsyncClient,
) -> None:
    sent: list[httpx.Request] = []
    http.event_hooks["request"] = [lambda request: _keep(sent, request)]

    await adapter(http).submit(IMAGE, "image/png", prompt="an owl")

    request = sent[0]
    body = json.loads(request.content)
    assert body == {"ImageBase64": base64.b64encode(IMAGE).decode()}  # never prompt and image
    assert request.headers["X-TC-Action"] == SUBMIT
    assert request.headers["X-TC-Version"] == "2025-05-13"
    assert request.headers["X-TC-Region"] == "ap-guangzhou"
    authorization = request.headers["Authorization"]
    assert authorization.startswith(f"TC3-HMAC-SHA256 Credential={SECRET_ID}/")
    assert "/ai3d/tc3_request, SignedHeaders=content-type;host;x-tc-action, Signature=" in (
        authorization
    )
    assert SECRET_KEY not in authorization


async def _keep(sent: list[httpx.Request], request: httpx.Request) -> None:
    sent.append(request)


async def test_a_wrong_secret_key_fails_the_signature_as_auth(http: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderAuthFailed) as caught:
        await adapter(http, secret_key="not-the-key").submit(IMAGE, "image/png", prompt="owl")

    assert "AuthFailure.SignatureFailure" in str(caught.value)
    assert [call["outcome"] for call in await calls(http)] == ["AuthFailure.SignatureFailure"]


async def test_an_unknown_secret_id_is_an_auth_failure(http: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderAuthFailed, match="SecretIdNotFound"):
        await adapter(http, secret_id="AKIDunknown").submit(IMAGE, "image/png", prompt="owl")


async def test_the_fake_rejects_a_body_changed_after_signing(http: httpx.AsyncClient) -> None:
    """The fake checks the signature covers the body, so a signing bug cannot slip by."""
    stamp = int(time.time())
    signed_body = b'{"JobId":"a"}'
    authorization = tc3_authorization(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        host="ai3d.test",
        action=QUERY,
        payload=signed_body,
        timestamp=stamp,
    )
    headers = {
        "Authorization": authorization,
        "Content-Type": "application/json; charset=utf-8",
        "X-TC-Action": QUERY,
        "X-TC-Version": "2025-05-13",
        "X-TC-Timestamp": str(stamp),
    }
    honest = await http.post("/", content=signed_body, headers=headers)
    tampered = await http.post("/", content=b'{"JobId":"b"}', headers=headers)

    assert honest.json()["Response"]["Error"]["Code"] == "InvalidParameterValue.JobNotFound"
    assert tampered.status_code == 200  # Tencent's errors come as HTTP 200
    assert tampered.json()["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


async def test_a_clock_ten_minutes_off_is_refused(http: httpx.AsyncClient) -> None:
    provider = HunyuanModelGenerator(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        http=http,
        endpoint=BASE,
        clock=lambda: time.time() - 600,
    )

    with pytest.raises(ProviderAuthFailed, match="SignatureExpire"):
        await provider.submit(IMAGE, "image/png", prompt="owl")


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        ({"error": "RequestLimitExceeded", "message": "too many requests"}, ProviderRateLimited),
        ({"error": "InternalError", "message": "inner error"}, ProviderUnavailable),
        ({"error": "ResourceUnavailable.NotExist", "message": "no service"}, ProviderUnavailable),
        ({"error": "InvalidParameterValue", "message": "bad size"}, ProviderInvalidRequest),
        ({"error": "FailedOperation.ImageBlock", "message": "unsafe image"}, ProviderRejected),
        ({"error": "AuthFailure.UnauthorizedOperation", "message": "no"}, ProviderAuthFailed),
        ({"status": 502}, ProviderUnavailable),
    ],
)
async def test_error_envelopes_map_to_typed_errors(
    http: httpx.AsyncClient, outcome: dict[str, object], error: type[ProviderError]
) -> None:
    await script(http, outcome)

    with pytest.raises(ProviderError) as caught:
        await adapter(http).submit(IMAGE, "image/png", prompt="owl")

    assert type(caught.value) is error
    assert caught.value.transient == error.transient
    if "error" in outcome:
        assert str(outcome["error"]) in str(caught.value)


async def test_the_fourth_concurrent_job_is_refused_as_rate_limited() -> None:
    async with client_for(wait_seconds=5, run_seconds=5) as http:
        provider = adapter(http)
        for _ in range(3):
            await provider.submit(IMAGE, "image/png", prompt="owl")

        with pytest.raises(ProviderRateLimited, match="JobNumExceed"):
            await provider.submit(IMAGE, "image/png", prompt="owl")

        stats = (await http.get("/_fake/stats")).json()
        assert stats["max_concurrent_seen"] == 3


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("InternalError", True),  # Tencent's fault: a new job may well succeed
        ("FailedOperation.InnerError", True),
        ("ResourceUnavailable.ServiceBusy", True),
        ("FailedOperation.ImageBlock", False),  # the input itself: final
        ("FailedOperation.GenerateFailed", False),
    ],
)
async def test_a_failed_job_reports_the_vendor_code_and_whether_to_try_again(
    http: httpx.AsyncClient, code: str, transient: bool
) -> None:
    await script(http, {"job": "FAIL", "error_code": code})
    provider = adapter(http)
    job_id = await provider.submit(IMAGE, "image/png", prompt="owl")

    await until_finished(provider, job_id)
    status = await provider.poll(job_id)

    assert status.state is JobState.FAILED
    assert status.error_code == code
    assert status.transient is transient
    assert status.files == []


async def test_a_slow_gateway_times_out_quickly(http: httpx.AsyncClient) -> None:
    await script(http, {"delay": 3})
    started = time.monotonic()

    with pytest.raises(ProviderTimeout):
        await adapter(http, timeout=0.3).submit(IMAGE, "image/png", prompt="owl")

    assert time.monotonic() - started < 2


async def test_the_secret_key_never_reaches_an_error(http: httpx.AsyncClient) -> None:
    await script(http, {"error": "InternalError", "message": f"bad key {SECRET_KEY} sent"})

    with pytest.raises(ProviderError) as caught:
        await adapter(http).submit(IMAGE, "image/png", prompt="owl")

    shown = "".join(traceback.format_exception(caught.value))
    assert SECRET_KEY not in shown
    assert "[redacted]" in str(caught.value)
    assert "Signature=" not in shown


async def test_result_urls_expire_so_outputs_must_be_copied_at_once() -> None:
    async with client_for(wait_seconds=0, run_seconds=0, url_ttl_seconds=0.2) as http:
        provider = adapter(http)
        job_id = await provider.submit(IMAGE, "image/png", prompt="owl")
        status = await provider.poll(job_id)
        url = str(status.files[0].url)
        assert (await http.get(url)).status_code == 200
        await asyncio.sleep(0.3)
        assert (await http.get(url)).status_code == 403


async def test_an_unsupported_format_is_refused_before_any_call(http: httpx.AsyncClient) -> None:
    with pytest.raises(ProviderRejected):
        await adapter(http).submit(IMAGE, "image/png", prompt="owl", format="fbx")

    assert await calls(http) == []


async def test_over_loopback_with_a_real_client() -> None:
    with fake_hunyuan(SECRET_ID, SECRET_KEY, run_seconds=0.2) as url:
        async with httpx.AsyncClient() as http:
            provider = adapter(http, endpoint=url)
            job_id = await provider.submit(IMAGE, "image/png", prompt="owl")
            seen = await until_finished(provider, job_id)
    assert seen[-1] is JobState.SUCCEEDED
