"""The OpenAI-style adapters against a fake that answers as Ark, OpenAI and Qwen document.

Proven here, for images both as Volcengine Ark Seedream (`/api/v3/images/generations`,
with our seed and `watermark: false`) and as a plain OpenAI-compatible endpoint: a URL
answer downloads a real image of the type the result claims, a b64_json answer (gpt-image)
comes back as the bytes of a real PNG, each vendor error becomes its typed error with a
one-line message, a slow vendor times out in time, the key never shows in an error, and
the vendor's URLs expire. For chat (Qwen through DashScope's compatible mode, and
SiliconFlow chat): exactly N distinct variants of the user's prompt, whatever format the
engine answers in, and the typed errors a refusal, a rate limit, a bad key or an empty
answer become. One test runs both over a real socket against the fake in a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import io
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from PIL import Image

from providers.base import (
    ImageGenerator,
    ImageResult,
    PromptOptimizer,
    ProviderAuthFailed,
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from providers.local import render_png
from providers.openai_compat import OpenAIChatOptimizer, OpenAIImageGenerator
from tests.conftest import free_port
from tests.fakes.openai_compat import create_fake_app, start_fake_openai_compat

KEY = "sk-secret-test-key-0123456789abcdef"
BASE = "http://vendor.test"
COMPATIBLE_CHAT = "/compatible-mode/v1/chat/completions"
Outcome = dict[str, object]
Hook = Callable[[httpx.Request], Awaitable[None]]
PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


@dataclass(frozen=True)
class ImageVendor:
    """How app/deps.py configures one OpenAI-style image vendor (Ark: with a seed)."""

    name: str
    path: str
    model: str
    send_seed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    side_range: tuple[int, int] | None = None


ARK = ImageVendor(
    name="ark",
    path="/api/v3/images/generations",
    model="doubao-seedream-3-0-t2i-250415",
    send_seed=True,
    extra={"watermark": False},
    side_range=(512, 2048),
)
OPENAI = ImageVendor(name="openai", path="/v1/images/generations", model="dall-e-3")
# What each engine is asked for when we want a size: Ark takes any side in 512-2048,
# DALL·E 3 only 1024x1024, 1792x1024 and 1024x1792 (the fake refuses any other).
SENT = {
    "ark": {(768, 512): (768, 512), (512, 768): (512, 768), (128, 128): (512, 512)},
    "openai": {(768, 512): (1792, 1024), (512, 768): (1024, 1792), (128, 128): (1024, 1024)},
}


@dataclass(frozen=True)
class ChatVendor:
    """Qwen: base URL `.../compatible-mode` and the default path, as app/deps.py sets it."""

    name: str
    base_url: str
    served_path: str
    model: str


QWEN = ChatVendor("qwen", f"{BASE}/compatible-mode", COMPATIBLE_CHAT, "qwen-plus")
SILICONFLOW = ChatVendor("siliconflow", BASE, "/v1/chat/completions", "Qwen/Qwen2.5-7B-Instruct")


def client_for(
    *,
    images_path: str = "/v1/images/generations",
    chat_path: str = COMPATIBLE_CHAT,
    url_ttl_seconds: float = 3600,
    on_request: Hook | None = None,
) -> httpx.AsyncClient:
    app = create_fake_app(
        api_key=KEY,
        url_ttl_seconds=url_ttl_seconds,
        images_path=images_path,
        chat_path=chat_path,
    )
    hooks = {"request": [on_request] if on_request else []}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, event_hooks=hooks
    )


@pytest.fixture(params=[ARK, OPENAI], ids=lambda vendor: vendor.name)
def vendor(request: pytest.FixtureRequest) -> ImageVendor:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def http(vendor: ImageVendor) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(images_path=vendor.path) as client:
        yield client


@pytest.fixture
async def chat_http() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(chat_path=COMPATIBLE_CHAT) as client:
        yield client


def images(
    http: httpx.AsyncClient,
    vendor: ImageVendor,
    *,
    key: str = KEY,
    base_url: str = BASE,
    model: str | None = None,
    path: str | None = None,
    response_format: str | None = "url",
    timeout: float = 5,
) -> OpenAIImageGenerator:
    return OpenAIImageGenerator(
        api_key=key,
        http=http,
        base_url=base_url,
        model=model or vendor.model,
        name=vendor.name,
        path=path or vendor.path,
        response_format=response_format,
        extra=vendor.extra,
        send_seed=vendor.send_seed,
        side_range=vendor.side_range,
        timeout=timeout,
    )


def qwen(
    http: httpx.AsyncClient,
    *,
    key: str = KEY,
    chat: ChatVendor = QWEN,
    base_url: str | None = None,
    timeout: float = 5,
) -> OpenAIChatOptimizer:
    return OpenAIChatOptimizer(
        api_key=key,
        http=http,
        base_url=base_url or chat.base_url,
        model=chat.model,
        name=chat.name,
        timeout=timeout,
    )


async def script(http: httpx.AsyncClient, *responses: Outcome) -> None:
    (await http.post("/_fake/script", json={"responses": list(responses)})).raise_for_status()


async def calls(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await http.get("/_fake/calls")).json()["calls"])


async def failure(generator: OpenAIImageGenerator) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        await generator.generate("a fox", seed=1, width=512, height=512)
    return raised.value


async def chat_failure(optimizer: OpenAIChatOptimizer, prompt: str = "a fox") -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        await optimizer.optimize(prompt, 4)
    return raised.value


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def shown(error: BaseException) -> str:
    """Everything a log line or a traceback of `error` would print."""
    return "".join(traceback.format_exception(error)) + str(error) + repr(error.args)


# -- images ----------------------------------------------------------------------------


def test_the_adapters_are_the_protocols_and_need_a_key(
    http: httpx.AsyncClient, vendor: ImageVendor
) -> None:
    assert isinstance(images(http, vendor), ImageGenerator)
    assert images(http, vendor).name == vendor.name
    assert isinstance(qwen(http), PromptOptimizer)
    with pytest.raises(ValueError, match="needs an API key"):
        images(http, vendor, key="")
    with pytest.raises(ValueError, match="needs an API key"):
        qwen(http, key="")


@pytest.mark.parametrize(
    ("image_format", "content_type"),
    [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")],
)
async def test_a_url_answer_downloads_a_real_image_of_the_type_claimed(
    http: httpx.AsyncClient, vendor: ImageVendor, image_format: str, content_type: str
) -> None:
    await script(http, {"image_format": image_format})
    result = await images(http, vendor).generate("a red fox", seed=7, width=768, height=512)
    sent = SENT[vendor.name][768, 512]
    assert (result.content_type, (result.width, result.height), result.data) == (
        content_type,
        sent,
        None,
    )
    assert result.url is not None
    assert result.url.startswith(f"{BASE}/files/")
    download = await http.get(result.url)
    assert download.status_code == 200
    assert download.headers["content-type"] == content_type
    image = opened(download.content)
    assert (image.format, image.size) == (PIL_FORMATS[content_type], sent)


async def test_the_request_carries_what_the_vendor_documents(vendor: ImageVendor) -> None:
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with client_for(images_path=vendor.path, on_request=record) as http:
        # Ark takes seeds in [0, 2**31): a larger one of ours must still be accepted
        await images(http, vendor).generate("a red fox", seed=2**31 + 7, width=768, height=512)
        [call] = await calls(http)
    request = sent[0]
    assert (request.method, str(request.url)) == ("POST", f"{BASE}{vendor.path}")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    expected: dict[str, Any] = {
        "model": vendor.model,
        "prompt": "a red fox",
        "size": "{}x{}".format(*SENT[vendor.name][768, 512]),
        "n": 1,
        "response_format": "url",
    }
    if vendor.name == "ark":
        expected |= {"seed": 7, "watermark": False}
    assert call["body"] == expected
    assert (call["path"], call["status"]) == (vendor.path, 200)


async def test_a_gpt_image_engine_answers_png_bytes_and_gets_no_response_format() -> None:
    async with client_for() as http:
        generator = images(http, OPENAI, model="gpt-image-1")
        result = await generator.generate("a red fox", seed=7, width=1024, height=1024)
        [call] = await calls(http)
    assert isinstance(result, ImageResult)
    assert (result.content_type, result.url) == ("image/png", None)
    assert result.data is not None
    image = opened(result.data)
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert call["status"] == 200
    assert "response_format" not in call["body"]
    assert "seed" not in call["body"]


async def test_a_size_the_engine_does_not_take_is_fitted_not_refused(
    http: httpx.AsyncClient, vendor: ImageVendor
) -> None:
    """Our default size (small, square) is outside what both engines take; asking for it
    as is would be a 400 on every image."""
    refused = await http.post(
        vendor.path,
        json={"model": vendor.model, "prompt": "a fox", "size": "128x128"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert refused.status_code == 400
    result = await images(http, vendor).generate("a red fox", seed=7, width=128, height=128)
    sent = SENT[vendor.name][128, 128]
    assert (result.width, result.height) == sent
    [_, call] = await calls(http)
    assert (call["status"], call["body"]["size"]) == (200, "{}x{}".format(*sent))


# Seedream 4.x, configured as app/deps.py configures Ark (its side range is Seedream
# 3.x's): sizes go by the model family's rule, an area of 1280x720 to 4096x4096 pixels.
SEEDREAM_4 = replace(ARK, model="doubao-seedream-4-0-250828")


@pytest.mark.parametrize(
    ("wanted", "sent"),
    [((512, 512), (960, 960)), ((768, 512), (1176, 784)), ((2048, 2048), (2048, 2048))],
)
async def test_seedream_4_is_asked_for_a_size_by_its_familys_rule(
    wanted: tuple[int, int], sent: tuple[int, int]
) -> None:
    async with client_for(images_path=ARK.path) as http:
        refused = await http.post(
            ARK.path,
            json={"model": SEEDREAM_4.model, "prompt": "a fox", "size": "512x512"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        result = await images(http, SEEDREAM_4).generate(
            "a fox", seed=7, width=wanted[0], height=wanted[1]
        )
        [_, call] = await calls(http)
    assert refused.status_code == 400  # what Ark answers Seedream 4.x for 512x512
    assert (call["status"], call["body"]["size"]) == (200, "{}x{}".format(*sent))
    assert (result.width, result.height) == sent
    assert sent[0] * sent[1] >= 1280 * 720


@pytest.mark.parametrize(
    ("image_format", "content_type"), [("png", "image/png"), ("jpeg", "image/jpeg")]
)
async def test_a_b64_json_answer_comes_back_as_the_image_bytes(
    http: httpx.AsyncClient, vendor: ImageVendor, image_format: str, content_type: str
) -> None:
    await script(http, {"image_format": image_format})
    generator = images(http, vendor, response_format="b64_json")
    result = await generator.generate("a red fox", seed=7, width=512, height=768)
    assert (result.content_type, result.url) == (content_type, None)
    assert result.data is not None
    image = opened(result.data)
    sent = SENT[vendor.name][512, 768]
    assert (image.format, image.size, (result.width, result.height)) == (
        PIL_FORMATS[content_type],
        sent,
        sent,
    )
    [call] = await calls(http)
    assert call["body"]["response_format"] == "b64_json"


@pytest.mark.parametrize(
    ("outcome", "error", "transient"),
    [
        ({"status": 401}, ProviderAuthFailed, False),
        ({"status": 403}, ProviderAuthFailed, False),
        ({"status": 400}, ProviderInvalidRequest, False),  # our parameters, not the prompt
        (
            {"status": 400, "code": "OutputImageSensitiveContentDetected"},
            ProviderRejected,
            False,
        ),
        ({"status": 400, "code": "content_policy_violation"}, ProviderRejected, False),
        # OpenAI answers an exhausted quota with 429: an operator must act, no retry helps
        ({"status": 429, "code": "insufficient_quota"}, ProviderAuthFailed, False),
        ({"status": 403, "code": "AccountOverdueError"}, ProviderAuthFailed, False),
        ({"status": 429, "retry_after": 3}, ProviderRateLimited, True),
        ({"status": 500}, ProviderUnavailable, True),
        ({"status": 503}, ProviderUnavailable, True),
        ({"status": 502, "text": "Bad Gateway"}, ProviderUnavailable, True),
    ],
    ids=lambda value: (
        str(value.get("code") or value.get("status")) if isinstance(value, dict) else None
    ),
)
async def test_each_vendor_error_maps_to_its_typed_error(
    http: httpx.AsyncClient,
    vendor: ImageVendor,
    outcome: Outcome,
    error: type[ProviderError],
    transient: bool,
) -> None:
    await script(http, outcome)
    raised = await failure(images(http, vendor))
    assert type(raised) is error
    assert raised.transient is transient
    assert raised.provider == vendor.name
    assert str(raised).startswith(f"{vendor.name} answered {outcome['status']}: ")
    if "code" in outcome:
        assert f"(code {outcome['code']})" in str(raised)


async def test_a_rate_limit_carries_the_retry_after_hint(
    http: httpx.AsyncClient, vendor: ImageVendor
) -> None:
    await script(http, {"status": 429, "retry_after": 3}, {"status": 429})
    generator = images(http, vendor)
    first, second = await failure(generator), await failure(generator)
    assert isinstance(first, ProviderRateLimited)
    assert isinstance(second, ProviderRateLimited)
    assert (first.retry_after, second.retry_after) == (3, None)
    assert "Rate limit reached" in str(first)


async def test_a_wrong_key_is_an_auth_failure(http: httpx.AsyncClient, vendor: ImageVendor) -> None:
    raised = await failure(images(http, vendor, key="sk-wrong-key-do-not-log"))
    assert isinstance(raised, ProviderAuthFailed)
    assert "Incorrect API key provided" in str(raised)
    assert [c["status"] for c in await calls(http)] == [401]


async def test_a_wrong_path_is_a_configuration_error_not_a_retry() -> None:
    # the OpenAI path against Ark's endpoint: 404, which no retry can fix
    async with client_for(images_path=ARK.path) as http:
        raised = await failure(images(http, ARK, path="/v1/images/generations"))
    assert type(raised) is ProviderError
    assert not raised.transient
    assert "answered 404" in str(raised)


@pytest.mark.parametrize(
    "outcome",
    [
        {"status": 200, "body": {"data": []}},
        {"status": 200, "body": {"created": 1}},
        {"status": 200, "body": {"data": [{"url": None}]}},
        {"status": 200, "body": {"data": [{"url": "ftp://vendor.test/x.png"}]}},
        {"status": 200, "body": {"data": ["https://vendor.test/x.png"]}},
        {"status": 200, "body": {"data": [{"b64_json": "not base64!"}]}},
        {"status": 200, "body": {"data": [{"b64_json": base64.b64encode(b"hello").decode()}]}},
        {"status": 200, "body": [{"url": "https://vendor.test/x.png"}]},
        {"status": 200, "text": "OK"},
    ],
    ids=[
        "empty-data",
        "no-data",
        "null-url",
        "ftp-url",
        "bare-string",
        "bad-base64",
        "not-an-image",
        "json-array",
        "plain-text",
    ],
)
async def test_a_malformed_200_is_unavailable(
    http: httpx.AsyncClient, vendor: ImageVendor, outcome: Outcome
) -> None:
    await script(http, outcome)
    raised = await failure(images(http, vendor))
    assert type(raised) is ProviderUnavailable
    assert raised.transient
    assert raised.provider == vendor.name


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("OutputImageSensitiveContentDetected", ProviderRejected),
        ("InternalServiceError", ProviderUnavailable),
    ],
)
async def test_ark_refusing_one_picture_in_a_200_is_typed(
    code: str, error: type[ProviderError]
) -> None:
    refused = {"data": [{"error": {"code": code, "message": f"refused, key {KEY}"}}]}
    async with client_for(images_path=ARK.path) as http:
        await script(http, {"status": 200, "body": refused})
        raised = await failure(images(http, ARK))
    assert type(raised) is error
    assert f"(code {code})" in str(raised)
    assert KEY not in shown(raised)


@pytest.mark.parametrize(
    "text",
    [
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n",
        "upstream connect error\n\tor disconnect/reset before headers.\n\treset reason: overflow",
        "<html><body>" + "<p>Service Unavailable</p>\n" * 400 + "</body></html>",
    ],
    ids=["nginx-html", "envoy-text", "long-html"],
)
async def test_an_html_or_text_error_page_becomes_one_short_line(
    http: httpx.AsyncClient, vendor: ImageVendor, text: str
) -> None:
    await script(http, {"status": 503, "text": text})
    raised = await failure(images(http, vendor))
    assert type(raised) is ProviderUnavailable
    message = str(raised)
    assert "\n" not in message
    assert "\r" not in message
    assert "\t" not in message
    assert len(message) < 400
    first_words = " ".join(text.split())[:20]
    assert first_words in message


async def test_a_slow_answer_beyond_the_timeout_is_a_provider_timeout(
    http: httpx.AsyncClient, vendor: ImageVendor
) -> None:
    await script(http, {"status": 200, "delay": 5})
    started = asyncio.get_running_loop().time()
    raised = await failure(images(http, vendor, timeout=0.3))
    elapsed = asyncio.get_running_loop().time() - started
    assert type(raised) is ProviderTimeout
    assert raised.transient
    assert "within 0.3 s" in str(raised)
    assert "During handling" not in shown(raised)  # one clean error, no httpx chain
    assert elapsed < 2


async def test_an_unreachable_vendor_is_unavailable(vendor: ImageVendor) -> None:
    async with httpx.AsyncClient() as http:
        base_url = f"http://127.0.0.1:{free_port()}"
        raised = await failure(images(http, vendor, base_url=base_url))
    assert type(raised) is ProviderUnavailable
    assert "could not be reached" in str(raised)
    assert "During handling" not in shown(raised)  # the httpx error holds the request


@pytest.mark.parametrize(
    "outcome",
    [
        {"status": 401, "message": f"Incorrect API key provided: {KEY}"},
        {"status": 400, "code": KEY, "message": "unknown key"},
        {"status": 400, "text": f"bad request, headers:\nAuthorization: Bearer {KEY}"},
        {"status": 429, "body": {"error": {"message": f"key {KEY} is over its limit"}}},
        {"status": 403, "body": {"error": f"key {KEY} is disabled"}},
        {"status": 500, "body": {"code": "InternalError", "message": f"bad key {KEY}"}},
        {"status": 503, "text": f"{'x' * 285}{KEY}"},  # the cut must not keep a prefix
        {"status": 200, "delay": 5},
    ],
    ids=[
        "401-message",
        "400-code",
        "400-text",
        "429-body",
        "403-string-error",
        "500-flat-body",
        "503-cut",
        "timeout",
    ],
)
async def test_the_key_never_appears_in_an_error(
    http: httpx.AsyncClient, vendor: ImageVendor, outcome: Outcome
) -> None:
    await script(http, outcome)
    raised = await failure(images(http, vendor, timeout=0.3))
    text = shown(raised)
    assert KEY not in text
    assert KEY[:12] not in text
    assert f"Bearer {KEY[:3]}" not in text


async def test_an_image_url_expires(vendor: ImageVendor) -> None:
    async with client_for(images_path=vendor.path, url_ttl_seconds=0.2) as http:
        result = await images(http, vendor).generate("a red fox", seed=7, width=512, height=512)
        assert (await http.get(str(result.url))).status_code == 200
        await asyncio.sleep(0.3)
        assert (await http.get(str(result.url))).status_code == 404


# -- chat --------------------------------------------------------------------------------


@pytest.mark.parametrize("chat", [QWEN, SILICONFLOW], ids=lambda chat: chat.name)
@pytest.mark.parametrize("count", [1, 4, 8])
async def test_optimize_returns_exactly_n_distinct_variants_of_the_prompt(
    chat: ChatVendor, count: int
) -> None:
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with client_for(chat_path=chat.served_path, on_request=record) as http:
        variants = await qwen(http, chat=chat).optimize("  a red\n fox  on a rock ", count)
        [call] = await calls(http)
    # each one the engine's own (derived from the prompt, numbered): none padded by us
    assert len(variants) == count
    assert len({v.lower() for v in variants}) == count
    for number, variant in enumerate(variants, start=1):
        assert variant.startswith("a red fox on a rock, ")
        assert variant.endswith(f"take {number}")
    assert str(sent[0].url) == f"{BASE}{chat.served_path}"
    assert sent[0].headers["authorization"] == f"Bearer {KEY}"
    body = call["body"]
    assert body["model"] == chat.model
    system, user = body["messages"]
    assert system["role"] == "system"
    assert f"exactly {count} distinct prompts" in system["content"]
    assert f"JSON array of {count} strings" in system["content"]
    assert user == {"role": "user", "content": "a red fox on a rock"}


@pytest.mark.parametrize(
    ("chat", "thinking_off"),
    [
        (ChatVendor("qwen", f"{BASE}/compatible-mode", COMPATIBLE_CHAT, "qwen3-32b"), True),
        (ChatVendor("siliconflow", BASE, "/v1/chat/completions", "Qwen/Qwen3-8B"), True),
        (QWEN, False),  # qwen-plus: no such switch sent
    ],
    ids=["dashscope-qwen3", "siliconflow-qwen3", "dashscope-qwen-plus"],
)
async def test_a_qwen3_model_is_asked_without_thinking(
    chat: ChatVendor, thinking_off: bool
) -> None:
    """DashScope answers a non-streaming call to a Qwen3 model that may think with a 400:
    the rewrite is asked with thinking off (and works)."""
    async with client_for(chat_path=chat.served_path) as http:
        variants = await qwen(http, chat=chat).optimize("a red fox", 2)
        [call] = await calls(http)
    assert len(variants) == 2
    assert ("enable_thinking" in call["body"]) is thinking_off
    if thinking_off:
        assert call["body"]["enable_thinking"] is False


PROMPTS = ["a fox in clay", "a fox in bronze", "a fox carved in oak", "a low-poly fox"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '```json\n[\n  "a fox in clay",\n  "a fox in bronze",\n  "a fox carved in oak",\n'
            '  "a low-poly fox"\n]\n```',
            PROMPTS,
        ),
        (  # brackets in the prose around the fence: only the fenced block is JSON
            "Sure! Here are [4] prompts:\n```\n"
            + str(PROMPTS).replace("'", '"')
            + "\n```\nTweak the [style] as you like.",
            PROMPTS,
        ),
        (
            '<think>\nThe user wants 4 prompts. Draft: ["a cat"]\n1. consider the pose\n'
            '</think>\n\n["a fox in clay", "a fox in bronze", "a fox carved in oak",'
            ' "a low-poly fox"]',
            PROMPTS,
        ),
        (
            "Here are four prompts:\n1. a fox in clay\n2) a fox in bronze\n"
            "3、a fox carved in oak\n- a low-poly fox\nHope this helps!",
            PROMPTS,
        ),
        (
            '{"prompts": ["a fox in clay", "a fox in bronze", "a fox carved in oak",'
            ' "a low-poly fox"], "kept": ["the subject"]}',
            PROMPTS,
        ),
        (
            '{"count": 4, "variants": [{"prompt": "a fox in clay"}, {"prompt": "a fox in'
            ' bronze"}, {"prompt": "a fox carved in oak"}, {"prompt": "a low-poly fox"}]}',
            PROMPTS,
        ),
        (
            '["“a fox in clay”", "  a fox\\nin bronze ", "a fox carved in oak",'
            ' "a low-poly fox", "a sixth fox", "a seventh fox"]',
            PROMPTS,
        ),
        (
            '["a fox in clay", "a fox in bronze"]',
            [*PROMPTS[:2], "a fox in clay, front view", "a fox in bronze, front view"],
        ),
        (
            "Sure! []\n1. **a fox in clay**\n2. **a fox in bronze**\n"
            "3. a fox carved in oak\n4. a low-poly fox",
            PROMPTS,
        ),
        (
            '["A fox in clay", "a fox in clay", " a FOX in clay ", ""]',
            [
                "A fox in clay",
                "A fox in clay, front view",
                "A fox in clay, three-quarter view",
                "A fox in clay, side profile",
            ],
        ),
    ],
    ids=[
        "fenced-json",
        "fenced-plain-with-prose",
        "think-preamble",
        "numbered-list",
        "object-wrapping-array",
        "object-of-prompt-objects",
        "quoted-multiline-and-too-many",
        "fewer-than-asked",
        "empty-array-then-bold-list",
        "duplicates",
    ],
)
async def test_answers_formatted_differently_still_give_exactly_n_prompts(
    chat_http: httpx.AsyncClient, content: str, expected: list[str]
) -> None:
    await script(chat_http, {"content": content})
    variants = await qwen(chat_http).optimize("a fox", 4)
    assert variants == expected


async def test_an_engine_giving_fewer_variants_is_padded_to_n_distinct(
    chat_http: httpx.AsyncClient,
) -> None:
    await script(chat_http, {"variants": 1})
    variants = await qwen(chat_http).optimize("a red fox", 4)
    assert len(variants) == 4
    assert len({v.lower() for v in variants}) == 4
    assert variants[0] == "a red fox, studio lighting, take 1"
    assert all(v.startswith("a red fox, studio lighting, take 1") for v in variants)


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        ({"finish_reason": "content_filter"}, ProviderRejected),
        ({"finish_reason": "content_filter", "content": ""}, ProviderRejected),
        ({"status": 400, "code": "data_inspection_failed"}, ProviderRejected),
        ({"status": 400, "code": "Arrearage"}, ProviderAuthFailed),
        ({"status": 429, "retry_after": 2}, ProviderRateLimited),
        ({"status": 401}, ProviderAuthFailed),
        ({"status": 500}, ProviderUnavailable),
        ({"content": ""}, ProviderUnavailable),
        ({"content": "I am sorry, I cannot help with that."}, ProviderUnavailable),
        ({"content": '["", "  ", 42]'}, ProviderUnavailable),
        ({"body": {"choices": []}}, ProviderUnavailable),
        ({"body": {"choices": [{"message": {"content": None}}]}}, ProviderUnavailable),
        ({"text": "OK"}, ProviderUnavailable),
    ],
    ids=[
        "content-filter",
        "content-filter-empty",
        "data-inspection",
        "arrearage",
        "429",
        "401",
        "500",
        "empty-content",
        "prose-only",
        "no-usable-items",
        "no-choices",
        "null-content",
        "plain-text-200",
    ],
)
async def test_each_chat_failure_maps_to_its_typed_error(
    chat_http: httpx.AsyncClient, outcome: Outcome, error: type[ProviderError]
) -> None:
    await script(chat_http, outcome)
    raised = await chat_failure(qwen(chat_http))
    assert type(raised) is error
    assert raised.provider == "qwen"
    if error is ProviderRateLimited:
        assert isinstance(raised, ProviderRateLimited)
        assert raised.retry_after == 2


async def test_a_wrong_chat_key_is_an_auth_failure(chat_http: httpx.AsyncClient) -> None:
    raised = await chat_failure(qwen(chat_http, key="sk-wrong-qwen-key-0000000000"))
    assert type(raised) is ProviderAuthFailed
    assert "Incorrect API key provided" in str(raised)
    assert [c["status"] for c in await calls(chat_http)] == [401]


@pytest.mark.parametrize(
    "outcome",
    [
        {"status": 401, "message": f"Incorrect API key provided: {KEY}"},
        {"status": 400, "text": f"Authorization: Bearer {KEY}"},
        {"delay": 5},
    ],
    ids=["401-message", "400-text", "timeout"],
)
async def test_the_key_never_appears_in_a_chat_error(
    chat_http: httpx.AsyncClient, outcome: Outcome
) -> None:
    await script(chat_http, outcome)
    text = shown(await chat_failure(qwen(chat_http, timeout=0.3)))
    assert KEY not in text
    assert KEY[:12] not in text


async def test_a_slow_chat_answer_is_a_provider_timeout(chat_http: httpx.AsyncClient) -> None:
    await script(chat_http, {"delay": 5})
    started = asyncio.get_running_loop().time()
    raised = await chat_failure(qwen(chat_http, timeout=0.3))
    assert type(raised) is ProviderTimeout
    assert asyncio.get_running_loop().time() - started < 2


@pytest.mark.parametrize(("prompt", "count"), [("   \n ", 4), ("a fox", 0), ("a fox", 9)])
async def test_an_empty_prompt_or_a_count_out_of_range_is_refused_without_a_call(
    chat_http: httpx.AsyncClient, prompt: str, count: int
) -> None:
    with pytest.raises(ProviderRejected):
        await qwen(chat_http).optimize(prompt, count)
    assert await calls(chat_http) == []


# -- over a real socket ------------------------------------------------------------------


async def test_over_a_real_socket_the_fake_serves_images_and_chat() -> None:
    base_url, stop = start_fake_openai_compat(KEY, images_path=ARK.path, chat_path=COMPATIBLE_CHAT)
    try:
        async with httpx.AsyncClient(base_url=base_url) as http:
            generator = images(http, ARK, base_url=base_url, timeout=2)
            optimizer = qwen(http, base_url=f"{base_url}/compatible-mode", timeout=2)
            await script(http, {"status": 429, "retry_after": 2})
            limited = await failure(generator)
            assert isinstance(limited, ProviderRateLimited)
            assert limited.retry_after == 2

            result = await generator.generate("a red fox", seed=3, width=640, height=512)
            assert result.url is not None
            assert result.url.startswith(f"{base_url}/files/")
            download = await http.get(result.url)
            assert download.headers["content-type"] == result.content_type == "image/png"
            assert opened(download.content).size == (640, 512)
            expected = render_png("a red fox", 3, 640, 512)
            assert download.content == expected

            variants = await optimizer.optimize("a red fox", 4)
            assert len(set(variants)) == 4
            assert all(v.startswith("a red fox, ") for v in variants)
            logged = [(c["path"], c["status"]) for c in await calls(http)]
            assert logged == [(ARK.path, 429), (ARK.path, 200), (COMPATIBLE_CHAT, 200)]
    finally:
        stop()
