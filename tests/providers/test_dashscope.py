"""The DashScope (Wanx) adapter against a fake that creates, queues, runs and fails tasks as
DashScope does."""

from __future__ import annotations

import asyncio
import io
import traceback
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from providers.base import (
    ImageGenerator,
    ProviderAuthFailed,
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from providers.dashscope import DashScopeImageGenerator
from tests.conftest import free_port
from tests.fakes.dashscope import create_fake_app, start_fake_dashscope

KEY = "sk-dashscope-0123456789abcdef"
BASE = "http://dashscope.test"


def client_for(**options: float) -> httpx.AsyncClient:
    app = create_fake_app(api_key=KEY, pending_seconds=0.05, **{"run_seconds": 0.15, **options})
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for() as client:
        yield client


def wanx(
    http: httpx.AsyncClient, *, key: str = KEY, base_url: str = BASE, timeout: float = 5
) -> DashScopeImageGenerator:
    return DashScopeImageGenerator(
        api_key=key, http=http, base_url=base_url, poll_interval=0.02, timeout=timeout
    )


async def script(http: httpx.AsyncClient, *responses: dict[str, Any]) -> None:
    (await http.post("/_fake/script", json={"responses": list(responses)})).raise_for_status()


async def log(http: httpx.AsyncClient) -> dict[str, list[dict[str, Any]]]:
    return dict((await http.get("/_fake/calls")).json())


async def failure(generator: DashScopeImageGenerator) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        await generator.generate("a red fox", seed=7, width=768, height=512)
    return raised.value


def shown(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def test_the_adapter_is_an_image_generator_and_needs_a_key(http: httpx.AsyncClient) -> None:
    assert isinstance(wanx(http), ImageGenerator)
    with pytest.raises(ValueError, match="needs an API key"):
        wanx(http, key="")


async def test_a_task_is_created_polled_and_its_picture_downloaded(
    http: httpx.AsyncClient,
) -> None:
    result = await wanx(http).generate("a red fox", seed=7, width=768, height=512)
    assert (result.content_type, result.width, result.height) == ("image/png", 768, 512)
    assert result.url is not None
    download = await http.get(result.url)
    assert download.status_code == 200
    image = Image.open(io.BytesIO(download.content))
    assert (image.format, image.size) == ("PNG", (768, 512))

    seen = await log(http)
    (create,) = seen["calls"]
    assert create["method"] == "POST"
    assert create["body"] == {
        "model": "wanx2.1-t2i-turbo",
        "input": {"prompt": "a red fox"},
        "parameters": {"size": "768*512", "n": 1, "seed": 7},
    }
    polls = seen["polls"]
    assert {poll["task_id"] for poll in polls} == {create["task_id"]}
    assert len(polls) >= 2  # it waited through PENDING/RUNNING rather than giving up


async def test_the_async_header_is_what_makes_the_vendor_accept_the_task(
    http: httpx.AsyncClient,
) -> None:
    """The fake refuses a synchronous call, as DashScope does; the adapter never makes one."""
    body = {"model": "wanx2.1-t2i-turbo", "input": {"prompt": "x"}}
    sync = await http.post(
        "/api/v1/services/aigc/text2image/image-synthesis",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert sync.status_code == 403
    assert sync.json()["code"] == "AccessDenied"
    await wanx(http).generate("a red fox", seed=7, width=512, height=512)
    assert [call["status"] for call in (await log(http))["calls"]] == [403, 200]


@pytest.mark.parametrize(
    ("outcome", "expected", "words"),
    [
        ({"status": 401}, ProviderAuthFailed, "InvalidApiKey"),
        ({"status": 400, "code": "InvalidParameter"}, ProviderInvalidRequest, "InvalidParameter"),
        ({"status": 400, "code": "DataInspectionFailed"}, ProviderRejected, "DataInspection"),
        ({"status": 400, "code": "Arrearage", "message": "unpaid"}, ProviderAuthFailed, "unpaid"),
        ({"status": 429}, ProviderRateLimited, "Throttling"),
        ({"status": 500}, ProviderUnavailable, "InternalError"),
        ({"status": 503, "text": "<html>bad gateway</html>"}, ProviderUnavailable, "bad gateway"),
        ({"task_status": "FAILED"}, ProviderUnavailable, "InternalError.Algo"),
        (
            {"task_status": "FAILED", "task_code": "DataInspectionFailed"},
            ProviderRejected,
            "DataInspectionFailed",
        ),
        ({"result_failed": True}, ProviderRejected, "inappropriate"),
        ({"task_status": "UNKNOWN"}, ProviderUnavailable, "unknown or has expired"),
        ({"body": {"request_id": "r1"}}, ProviderUnavailable, "without an output"),
    ],
    ids=[
        "401",
        "400-invalid",
        "400-inspection",
        "400-arrearage",
        "429",
        "500",
        "503-html",
        "task-failed",
        "task-refused",
        "result-refused",
        "task-unknown",
        "no-output",
    ],
)
async def test_each_vendor_error_maps_to_its_typed_error(
    http: httpx.AsyncClient, outcome: dict[str, Any], expected: type[ProviderError], words: str
) -> None:
    await script(http, outcome)
    raised = await failure(wanx(http))
    assert type(raised) is expected
    assert raised.provider == "dashscope"
    assert words in str(raised)
    assert raised.transient == (expected in (ProviderUnavailable, ProviderRateLimited))


async def test_a_rate_limit_carries_the_retry_after_hint(http: httpx.AsyncClient) -> None:
    await script(http, {"status": 429, "retry_after": 7})
    raised = await failure(wanx(http))
    assert isinstance(raised, ProviderRateLimited)
    assert raised.retry_after == 7


async def test_transient_poll_errors_wait_for_the_same_task_and_never_resubmit(
    http: httpx.AsyncClient,
) -> None:
    """A task is paid for once created: a 503 or 429 while polling is retried on the same
    task id, honouring Retry-After, and a second task is never created."""
    await script(http, {"poll_errors": [500, 429, 500]})
    result = await wanx(http).generate("a red fox", seed=7, width=512, height=512)
    assert result.url is not None
    seen = await log(http)
    assert len(seen["calls"]) == 1
    assert [poll["status"] for poll in seen["polls"][:3]] == [500, 429, 500]
    assert seen["polls"][-1]["status"] == 200


async def test_polling_gives_up_after_repeated_poll_failures(http: httpx.AsyncClient) -> None:
    await script(http, {"poll_errors": [500] * 10})
    raised = await failure(wanx(http))
    assert type(raised) is ProviderUnavailable
    assert len((await log(http))["calls"]) == 1


async def test_a_task_that_runs_too_long_is_a_provider_timeout(http: httpx.AsyncClient) -> None:
    await script(http, {"run_seconds": 30})
    started = asyncio.get_running_loop().time()
    raised = await failure(wanx(http, timeout=0.4))
    assert type(raised) is ProviderTimeout
    assert "within 0.4 s" in str(raised)
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_slow_create_answer_is_a_provider_timeout(http: httpx.AsyncClient) -> None:
    await script(http, {"delay": 5})
    raised = await failure(wanx(http, timeout=0.3))
    assert type(raised) is ProviderTimeout
    assert "During handling" not in shown(raised)  # the httpx chain holds our key


async def test_an_unreachable_vendor_is_unavailable() -> None:
    async with httpx.AsyncClient() as http:
        raised = await failure(wanx(http, base_url=f"http://127.0.0.1:{free_port()}"))
    assert type(raised) is ProviderUnavailable
    assert "could not be reached" in str(raised)


@pytest.mark.parametrize(
    "outcome",
    [
        {"status": 401, "message": f"Invalid API-key provided: {KEY}"},
        {"status": 400, "code": KEY},
        {"status": 500, "text": f"upstream said Authorization: Bearer {KEY}"},
        {"task_status": "FAILED", "task_message": f"key {KEY} has no access to the model"},
        {"delay": 5},
    ],
    ids=["401-message", "400-code", "500-text", "task-message", "timeout"],
)
async def test_the_key_never_appears_in_an_error(
    http: httpx.AsyncClient, outcome: dict[str, Any]
) -> None:
    await script(http, outcome)
    text = shown(await failure(wanx(http, timeout=0.5)))
    assert KEY not in text
    assert KEY[:12] not in text


async def test_a_result_url_expires() -> None:
    async with client_for(url_ttl_seconds=0.2) as http:
        result = await wanx(http).generate("a red fox", seed=7, width=512, height=512)
        assert (await http.get(str(result.url))).status_code == 200
        await asyncio.sleep(0.3)
        assert (await http.get(str(result.url))).status_code == 404


async def test_over_a_real_socket_the_fake_runs_tasks() -> None:
    url, stop = start_fake_dashscope(KEY, run_seconds=0.2)
    try:
        async with httpx.AsyncClient() as http:
            generator = wanx(http, base_url=url)
            result = await generator.generate("a red fox", seed=3, width=512, height=768)
            download = await http.get(str(result.url))
        image = Image.open(io.BytesIO(download.content))
        assert image.size == (512, 768)
    finally:
        stop()
