"""OpenAI-style vendors: image generation and chat-based prompt optimisation.

- `OpenAIImageGenerator`: `POST {base}{path}` with a bearer key, `{"model", "prompt", "n",
  "size", "response_format"}`, answered `{"data": [{"url"} | {"b64_json"}]}`. It serves
  Volcengine Ark Seedream (`/api/v3/images/generations`, with `seed` and `watermark`)
  and any OpenAI-compatible endpoint.
- `OpenAIChatOptimizer`: `POST {base}/v1/chat/completions`, `{"model", "messages"}` →
  `{"choices": [{"message": {"content"}}]}`. It serves Qwen through DashScope's
  compatible mode and SiliconFlow chat, asking for the variants as a JSON array.

Errors come as `{"error": {"code", "message", "type"}}` (OpenAI, Ark, DashScope's
compatible mode) or `{"code", "message"}` (SiliconFlow, DashScope's native API); both
map onto the typed provider errors, and neither the key nor the Authorization header
ever appears in one. `vendor_error`, `http_error` and `bounded` serve DashScope too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from providers.base import (
    ImageResult,
    ProviderAuthFailed,
    ProviderError,
    ProviderInvalidRequest,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    refuses_content,
)
from providers.formats import fit_pixels, fit_size, image_type, nearest_size
from providers.siliconflow import retry_after_seconds

_MESSAGE_LIMIT = 300
PROMPT_LIMIT = 2000
MAX_VARIANTS = 8
SEED_RANGE = 2**31  # Ark and DashScope take seeds in [0, 2147483647]

# Codes saying the prompt or the picture broke a content policy: retrying won't help.


# Codes saying the account must be fixed (unpaid, out of quota), whatever the status.
_ACCOUNT = {"arrearage", "insufficient_quota", "accountoverdueerror"}


def vendor_error(response: httpx.Response, secret: str) -> tuple[str | None, str]:
    """The vendor's error code (if any) and a one-line message with the key cut out.

    Reads `{"error": {"code", "message"}}`, `{"code", "message", "request_id"}` or plain
    text. `secret` is cut out before truncating, so no prefix of it can survive either."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    code: Any = None
    suffix = ""
    if isinstance(body, dict):
        error = body.get("error")
        source = error if isinstance(error, dict) else body
        code = source.get("code")
        message = source.get("message") or (error if isinstance(error, str) else None) or body
        if code not in (None, ""):
            suffix += f" (code {code})"
        if body.get("request_id"):
            suffix += f" [request {body['request_id']}]"
    else:
        message = body

    def clean(text: object) -> str:
        # gateways answer HTML pages and multi-line text too
        flat = " ".join(str(text).split())
        return flat.replace(secret, "[redacted]") if secret else flat

    text = clean(message)[:_MESSAGE_LIMIT] or response.reason_phrase
    tail = f" {clean(suffix)}" if suffix else ""  # clean() strips the leading space
    return (clean(code) if code not in (None, "") else None), text + tail


def error_type(status: int, code: str | None) -> type[ProviderError]:
    """Which typed error an HTTP status and vendor code mean."""
    if code and refuses_content(code):
        return ProviderRejected
    if code and code.lower() in _ACCOUNT:
        return ProviderAuthFailed
    if status == 429:
        return ProviderRateLimited
    if status in (401, 403):
        return ProviderAuthFailed
    if status >= 500 or status == 408:
        return ProviderUnavailable
    if status in (400, 413, 422):  # a refused content has its code, matched above
        return ProviderInvalidRequest
    return ProviderError  # 404, 405, 3xx ...: our configuration, not the prompt


def http_error(response: httpx.Response, *, name: str, secret: str) -> ProviderError:
    """The typed error for a non-2xx answer; a 429 carries its Retry-After hint."""
    status = response.status_code
    code, message = vendor_error(response, secret)
    text = f"{name} answered {status}: {message}"
    kind = error_type(status, code)
    if kind is ProviderRateLimited:
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return ProviderRateLimited(text, provider=name, retry_after=retry_after)
    return kind(text, provider=name)


@contextlib.asynccontextmanager
async def bounded(name: str, timeout: float, doing: str = "answer") -> AsyncIterator[None]:
    """Runs the block under `timeout` (not just each socket read: a vendor that trickles
    its answer still fails in time), mapping timeouts and transport errors onto typed ones.

    `from None`: an httpx exception holds the request, and with it our key."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except (TimeoutError, httpx.TimeoutException):
        message = f"{name} did not {doing} within {timeout:g} s"
        raise ProviderTimeout(message, provider=name) from None
    except httpx.RequestError as exc:
        message = f"{name} could not be reached ({type(exc).__name__})"
        raise ProviderUnavailable(message, provider=name) from None


def _type_from_url(url: str) -> str:
    path = httpx.URL(url).path.lower()
    if path.endswith((".jpg", ".jpeg")):
        return "image/jpeg"
    if path.endswith(".webp"):
        return "image/webp"
    return "image/png"


class _OpenAIEndpoint:
    """One JSON endpoint behind a bearer key, called through the shared HTTP client."""

    def __init__(
        self,
        *,
        api_key: str,
        http: httpx.AsyncClient,
        base_url: str,
        path: str,
        model: str,
        name: str,
        timeout: float,
    ) -> None:
        if not api_key:
            raise ValueError(f"{name} needs an API key")
        self.name = name
        self._key = api_key
        self._http = http
        self._url = f"{base_url.rstrip('/')}/{path.lstrip('/')}"
        self._model = model
        self._timeout = timeout

    async def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON object of a 2xx answer, or the typed error of any other."""
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        async with bounded(self.name, self._timeout):
            response = await self._http.post(
                self._url, json=body, headers=headers, timeout=self._timeout
            )
        if not response.is_success:
            raise http_error(response, name=self.name, secret=self._key)
        try:
            reply: Any = response.json()
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            message = f"{self.name} answered {response.status_code} without a JSON object"
            raise ProviderUnavailable(message, provider=self.name)
        return reply


class OpenAIImageGenerator(_OpenAIEndpoint):
    """An OpenAI-style image endpoint: Ark Seedream or any OpenAI-compatible vendor.

    `size_format` spells the size (`"{w}x{h}"`). The size asked for is fitted to what
    the engine takes: `side_range` bounds each side (Ark Seedream: 512-2048), else
    `sizes` lists the only ones it takes (default from the model's name: OpenAI's
    gpt-image and DALL·E engines take a few fixed sizes). `response_format` is `url` or
    `b64_json` (None: not sent; gpt-image engines never get it, they reject it and
    always answer b64_json); `send_seed` adds our seed (Ark takes one, OpenAI rejects
    unknown fields); `extra` is merged into every body (Ark: `{"watermark": False}`).
    """

    def __init__(
        self,
        *,
        api_key: str,
        http: httpx.AsyncClient,
        base_url: str,
        model: str,
        name: str,
        path: str = "/v1/images/generations",
        size_format: str = "{w}x{h}",
        response_format: str | None = "url",
        extra: dict[str, Any] | None = None,
        send_seed: bool = False,
        side_range: tuple[int, int] | None = None,
        sizes: tuple[tuple[int, int], ...] | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(
            api_key=api_key,
            http=http,
            base_url=base_url,
            path=path,
            model=model,
            name=name,
            timeout=timeout,
        )
        self._size_format = size_format
        self._response_format = None if model.startswith("gpt-image") else response_format
        self._extra = dict(extra or {})
        self._send_seed = send_seed
        self._pixels = _pixel_range(model)
        self._side_range = None if self._pixels else _side_range(model) or side_range
        self._sizes = sizes if sizes is not None or side_range else _fixed_sizes(model)

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """What this engine is asked for when we want `width` x `height`: by the rules of
        the model's family where we know them, else by the vendor's."""
        if self._pixels:
            return fit_pixels(width, height, *self._pixels)
        if self._side_range:
            return fit_size(width, height, *self._side_range)
        if self._sizes:
            return nearest_size(width, height, self._sizes)
        return width, height

    async def generate(self, prompt: str, *, seed: int, width: int, height: int) -> ImageResult:
        width, height = self.size_for(width, height)
        body: dict[str, Any] = {
            "model": self._model,
            "prompt": prompt,
            "n": 1,
            "size": self._size_format.format(w=width, h=height),
        }
        if self._response_format:
            body["response_format"] = self._response_format
        if self._send_seed:
            body["seed"] = seed % SEED_RANGE
        body.update(self._extra)
        reply = await self._call(body)
        return self._image(reply, width, height)

    def _image(self, reply: dict[str, Any], width: int, height: int) -> ImageResult:
        data = reply.get("data")
        first = data[0] if isinstance(data, list) and data else None
        if not isinstance(first, dict):
            raise ProviderUnavailable(f"{self.name} answered without an image", provider=self.name)
        if isinstance(first.get("b64_json"), str):
            content = self._decode(first["b64_json"])
            kind = image_type(content)
            if kind is None:
                message = f"{self.name} answered bytes that are not a PNG, JPEG or WebP image"
                raise ProviderUnavailable(message, provider=self.name)
            return ImageResult(content_type=kind, width=width, height=height, data=content)
        url = first.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            return ImageResult(
                content_type=_type_from_url(url), width=width, height=height, url=url
            )
        error = first.get("error")  # Ark reports a refused picture per image
        if isinstance(error, dict):
            code = str(error.get("code") or "")
            message = f"{self.name} refused the image: {error.get('message')} (code {code})"
            kind_ = ProviderRejected if refuses_content(code) else ProviderUnavailable
            raise kind_(message.replace(self._key, "[redacted]"), provider=self.name)
        raise ProviderUnavailable(f"{self.name} answered without an image", provider=self.name)

    def _decode(self, text: str) -> bytes:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            message = f"{self.name} answered an image that is not valid base64"
            raise ProviderUnavailable(message, provider=self.name) from None


def _pixel_range(model: str) -> tuple[int, int] | None:
    """Seedream 4.x takes any size whose area is 1280x720 to 4096x4096 pixels."""
    if "seedream-4" in model:
        return 1280 * 720, 4096 * 4096
    return None


def _side_range(model: str) -> tuple[int, int] | None:
    """Seedream 3.x takes sides of 512 to 2048 pixels."""
    if "seedream-3" in model:
        return 512, 2048
    return None


def _fixed_sizes(model: str) -> tuple[tuple[int, int], ...] | None:
    """The sizes OpenAI's own engines take (any other size is a 400)."""
    if model.startswith("gpt-image"):
        return ((1024, 1024), (1536, 1024), (1024, 1536))
    if model == "dall-e-3":
        return ((1024, 1024), (1792, 1024), (1024, 1792))
    if model == "dall-e-2":
        return ((256, 256), (512, 512), (1024, 1024))
    return None


# -- prompt optimisation ----------------------------------------------------------------

_INSTRUCTIONS = """\
You write prompts for a text-to-image engine. Each picture will be turned into a \
3D-printable model, so every prompt must describe exactly one subject, whole and \
centred, on a plain neutral background, with a clear silhouette, no text and no \
other objects. Rewrite the user's idea into exactly {count} distinct prompts that \
vary the pose, the style and the material while keeping the subject. \
Answer with only a JSON array of {count} strings, nothing else."""
# Used, in order, to make extra variants when the engine gave fewer than asked.
_LOOKS = (
    "front view",
    "three-quarter view",
    "side profile",
    "matte clay finish",
    "polished resin finish",
    "low-poly stylised",
    "carved wood texture",
    "bronze statue look",
)
_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.S)
_THINKING = re.compile(r"<think>.*?</think>", re.S)
_LISTED = re.compile(r"^\s*(?:\d{1,2}\s*[.):、]|[-*•])\s*(.+)$")


def _json_items(text: str) -> list[Any] | None:
    """A JSON array in `text`, or the first array inside a JSON object."""
    candidates = [text.strip()]
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value: Any = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            value = next((v for v in value.values() if isinstance(v, list)), None)
        if isinstance(value, list):
            return value
    return None


def _clean(items: Iterable[Any]) -> list[str]:
    """Distinct, non-empty, one-line prompts of at most PROMPT_LIMIT characters."""
    variants: list[str] = []
    for item in items:
        if isinstance(item, dict):
            item = item.get("prompt")
        if not isinstance(item, str):
            continue
        text = " ".join(item.replace("**", "").split()).strip("\"'“”` ,")  # and Markdown bold
        text = text[:PROMPT_LIMIT].rstrip()
        if text and text.lower() not in {v.lower() for v in variants}:
            variants.append(text)
    return variants


def parse_variants(content: str) -> list[str]:
    """Prompts from an engine's answer: a JSON array (fenced or not), else listed lines."""
    content = _THINKING.sub("", content)
    for block in [*_FENCE.findall(content), content]:
        items = _json_items(block)
        if items is not None and (variants := _clean(items)):
            return variants  # an empty array (or one of non-strings) falls through
    listed = (_LISTED.match(line) for line in content.splitlines())
    return _clean(match.group(1) for match in listed if match)


def fit_variants(variants: list[str], count: int) -> list[str]:
    """Exactly `count` distinct prompts: the first ones, then looks added to them."""
    chosen = variants[:count]
    for look in _LOOKS:
        for base in variants:
            if len(chosen) == count:
                return chosen
            suffix = f", {look}"
            extra = base[: PROMPT_LIMIT - len(suffix)].rstrip() + suffix
            if extra.lower() not in {c.lower() for c in chosen}:
                chosen.append(extra)
    return chosen


def thinks_by_default(model: str) -> bool:
    """Whether `model` is a hybrid-thinking Qwen3 (`qwen3-32b`, `Qwen/Qwen3-8B`): it
    thinks unless told not to, and DashScope refuses that on a non-streaming call. A
    prompt rewrite needs no thinking anywhere, so it is turned off for the family."""
    return model.rsplit("/", 1)[-1].lower().startswith("qwen3")


class OpenAIChatOptimizer(_OpenAIEndpoint):
    """An OpenAI-style chat engine (Qwen, SiliconFlow chat) rewriting a prompt into variants."""

    def __init__(
        self,
        *,
        api_key: str,
        http: httpx.AsyncClient,
        base_url: str,
        model: str,
        name: str,
        path: str = "/v1/chat/completions",
        timeout: float = 60.0,
    ) -> None:
        super().__init__(
            api_key=api_key,
            http=http,
            base_url=base_url,
            path=path,
            model=model,
            name=name,
            timeout=timeout,
        )

    async def optimize(self, prompt: str, count: int) -> list[str]:
        text = " ".join(prompt.split())
        if not text:
            raise ProviderRejected("the prompt is empty", provider=self.name)
        if not 1 <= count <= MAX_VARIANTS:
            raise ProviderRejected(f"count must be 1-{MAX_VARIANTS}", provider=self.name)
        body = {
            "model": self._model,
            "messages": [
                {"role": "system", "content": _INSTRUCTIONS.format(count=count)},
                {"role": "user", "content": text},
            ],
            "temperature": 0.8,
        }
        if thinks_by_default(self._model):
            body["enable_thinking"] = False  # a non-streaming call may not think (DashScope)
        reply = await self._call(body)
        variants = parse_variants(self._content(reply))
        if not variants:
            message = f"{self.name} answered without usable prompt variants"
            raise ProviderUnavailable(message, provider=self.name)
        return fit_variants(variants, count)

    def _content(self, reply: dict[str, Any]) -> str:
        choices = reply.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict):
            return ""
        if first.get("finish_reason") == "content_filter":
            text = f"{self.name} filtered its answer to this prompt (content policy)"
            raise ProviderRejected(text, provider=self.name)
        message = first.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""
