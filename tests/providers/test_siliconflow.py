"""The SiliconFlow adapter against a fake that answers as SiliconFlow documents."""

from __future__ import annotations

import asyncio
import io
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime

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
from providers.siliconflow import SiliconFlowImageGenerator, retry_after_seconds
from tests.conftest import free_port
from tests.fakes.siliconflow import create_fake_app, fake_siliconflow

KEY = "sk-secret-test-key-0123456789"
BASE = "http://siliconflow.test"
Outcome = dict[str, object]
Hook = Callable[[httpx.Request], Awaitable[None]]


def client_for(
    *, url_ttl_seconds: float = 3600, on_request: Hook | None = None
) -> httpx.AsyncClient:
    app = create_fake_app(api_key=KEY, url_ttl_seconds=url_ttl_seconds)
    hooks = {"request": [on_request] if on_request else []}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, event_hooks=hooks
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for() as client:
        yield client


def adapter(
    http: httpx.AsyncClient, *, key: str = KEY, base_url: str = BASE, timeout: float = 5
) -> SiliconFlowImageGenerator:
    return SiliconFlowImageGenerator(api_key=key, http=http, base_url=base_url, timeout=timeout)


async def script(http: httpx.AsyncClient, *responses: Outcome) -> None:
    (await http.post("/_fake/script", json={"responses": list(responses)})).raise_for_status()


async def calls(http: httpx.AsyncClient) -> list[dict[str, object]]:
    return list((await http.get("/_fake/calls")).json()["calls"])


async def failure(generator: SiliconFlowImageGenerator) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        await generator.generate("a fox", seed=1, width=64, height=64)
    return raised.value


def test_the_adapter_is_an_image_generator(http: httpx.AsyncClient) -> None:
    assert isinstance(adapter(http), ImageGenerator)
    assert adapter(http).name == "siliconflow"


async def test_an_image_comes_back_as_a_url_to_a_real_png(http: httpx.AsyncClient) -> None:
    result = await adapter(http).generate("a red fox", seed=7, width=96, height=64)
    assert (result.content_type, result.width, result.height, result.data) == (
        "image/png",
        96,
        64,
        None,
    )
    assert result.url is not None
    assert result.url.startswith(f"{BASE}/files/")
    download = await http.get(result.url)
    assert download.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(download.content))
    image.load()
    assert (image.format, image.size) == ("PNG", (96, 64))


async def test_the_request_is_shaped_as_siliconflow_documents() -> None:
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with client_for(on_request=record) as http:
        await adapter(http).generate("a red fox", seed=7, width=96, height=64)
        [call] = await calls(http)
    request = sent[0]
    assert (request.method, str(request.url)) == ("POST", f"{BASE}/v1/images/generations")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert call["body"] == {
        "model": "Kwai-Kolors/Kolors",
        "prompt": "a red fox",
        "image_size": "96x64",
        "batch_size": 1,
        "seed": 7,
    }
    assert (call["prompt"], call["seed"], call["status"]) == ("a red fox", 7, 200)


@pytest.mark.parametrize(
    ("outcome", "error", "transient"),
    [
        ({"status": 429, "retry_after": 3}, ProviderRateLimited, True),
        ({"status": 503}, ProviderUnavailable, True),
        ({"status": 500}, ProviderUnavailable, True),
        ({"status": 502, "text": "<html>502 Bad Gateway</html>"}, ProviderUnavailable, True),
        ({"status": 400, "message": "prompt rejected by content policy"}, ProviderRejected, False),
        ({"status": 422, "message": "image_size is not supported"}, ProviderInvalidRequest, False),
        ({"status": 403}, ProviderAuthFailed, False),
    ],
)
async def test_each_vendor_error_maps_to_its_typed_error(
    http: httpx.AsyncClient, outcome: Outcome, error: type[ProviderError], transient: bool
) -> None:
    await script(http, outcome)
    raised = await failure(adapter(http))
    assert type(raised) is error
    assert raised.transient is transient
    assert raised.provider == "siliconflow"
    assert f"answered {outcome['status']}" in str(raised)
    if "message" in outcome:
        assert str(outcome["message"]) in str(raised)
    if "text" in outcome:
        assert "502 Bad Gateway" in str(raised)


async def test_a_rate_limit_carries_the_retry_after_hint(http: httpx.AsyncClient) -> None:
    await script(http, {"status": 429, "retry_after": 3}, {"status": 429})
    first, second = await failure(adapter(http)), await failure(adapter(http))
    assert isinstance(first, ProviderRateLimited)
    assert isinstance(second, ProviderRateLimited)
    assert (first.retry_after, second.retry_after) == (3, None)


async def test_a_wrong_key_is_an_auth_failure(http: httpx.AsyncClient) -> None:
    raised = await failure(adapter(http, key="sk-wrong-key-do-not-log"))
    assert isinstance(raised, ProviderAuthFailed)
    assert not raised.transient
    assert "Invalid token" in str(raised)
    assert [c["status"] for c in await calls(http)] == [401]


async def test_a_slow_answer_beyond_the_timeout_is_a_provider_timeout(
    http: httpx.AsyncClient,
) -> None:
    await script(http, {"status": 200, "delay": 5})
    started = asyncio.get_running_loop().time()
    raised = await failure(adapter(http, timeout=0.3))
    assert isinstance(raised, ProviderTimeout)
    assert raised.transient
    assert asyncio.get_running_loop().time() - started < 2


@pytest.mark.parametrize(
    "outcome",
    [
        {"status": 200, "body": {"images": [], "timings": {"inference": 1.0}, "seed": 1}},
        {"status": 200, "body": {"timings": {"inference": 1.0}}},
        {"status": 200, "body": {"images": [{"url": None}]}},
        {"status": 200, "text": "OK"},
    ],
)
async def test_a_200_without_an_image_is_unavailable(
    http: httpx.AsyncClient, outcome: Outcome
) -> None:
    await script(http, outcome)
    raised = await failure(adapter(http))
    assert type(raised) is ProviderUnavailable
    assert "without an image" in str(raised)


async def test_an_image_url_expires() -> None:
    async with client_for(url_ttl_seconds=0.2) as http:
        result = await adapter(http).generate("a red fox", seed=7, width=64, height=64)
        assert (await http.get(str(result.url))).status_code == 200
        await asyncio.sleep(0.3)
        assert (await http.get(str(result.url))).status_code == 404


async def test_an_unreachable_vendor_is_unavailable() -> None:
    async with httpx.AsyncClient() as http:
        base_url = f"http://127.0.0.1:{free_port()}"
        raised = await failure(adapter(http, base_url=base_url))
    assert type(raised) is ProviderUnavailable
    assert "could not be reached" in str(raised)


@pytest.mark.parametrize(
    "outcome",
    [
        {"status": 401, "message": f"Invalid token: {KEY}"},
        {"status": 400, "text": f"bad request, headers: Authorization: Bearer {KEY}"},
        {"status": 429, "body": {"error": {"message": f"key {KEY} is over its limit"}}},
        {"status": 503, "text": f"{'x' * 285}{KEY}"},  # the cut must not keep a prefix
        {"status": 200, "delay": 5},
    ],
)
async def test_the_key_never_appears_in_an_error(http: httpx.AsyncClient, outcome: Outcome) -> None:
    await script(http, outcome)
    raised = await failure(adapter(http, timeout=0.3))
    shown = "".join(traceback.format_exception(raised)) + repr(raised.args)
    assert KEY not in shown
    assert KEY[:12] not in shown
    assert f"Bearer {KEY[:3]}" not in shown


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    in_a_minute = format_datetime(datetime(2026, 1, 1, 12, 1, 0, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds("12") == 12
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds("-5") == 0
    assert retry_after_seconds(in_a_minute, now=now.timestamp()) == 60
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    for unusable in (None, "", "soon", "nan", "inf"):
        assert retry_after_seconds(unusable) is None


async def test_the_fake_answers_a_missing_prompt_with_a_siliconflow_error(
    http: httpx.AsyncClient,
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    response = await http.post(
        "/v1/images/generations", json={"model": "Kwai-Kolors/Kolors"}, headers=headers
    )
    assert response.status_code == 400
    assert response.json() == {"code": 20015, "message": "prompt is required", "data": None}


async def test_the_fake_plays_its_script_in_order_and_repeats_the_last(
    http: httpx.AsyncClient,
) -> None:
    await script(http, {"status": 503}, {"status": 400, "repeat": True})
    for _ in range(3):
        await failure(adapter(http))
    assert [c["status"] for c in await calls(http)] == [503, 400, 400]
    await http.post("/_fake/reset")
    await adapter(http).generate("a fox", seed=1, width=64, height=64)
    assert [c["status"] for c in await calls(http)] == [200]


async def test_over_a_real_socket_another_process_scripts_the_vendor() -> None:
    with fake_siliconflow(KEY) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            generator = adapter(http, base_url=base_url, timeout=0.5)
            await script(http, {"status": 200, "delay": 3}, {"status": 429, "retry_after": 2})
            assert isinstance(await failure(generator), ProviderTimeout)
            limited = await failure(generator)
            assert isinstance(limited, ProviderRateLimited)
            assert limited.retry_after == 2
            result = await generator.generate("a fox", seed=3, width=80, height=48)
            download = await http.get(str(result.url))
            assert Image.open(io.BytesIO(download.content)).size == (80, 48)
            assert [c["status"] for c in await calls(http)] == [200, 429, 200]
