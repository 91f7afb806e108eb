"""SiliconFlow image generation: one synchronous call returns short-lived image URLs.

`POST {base}/v1/images/generations` with a bearer key; the reply lists `images[].url`
(valid one hour), which the pipeline copies into our storage at once. Errors map onto
the typed provider errors; neither the key nor the Authorization header ever appears
in one, even when a gateway echoes the key back in its error body.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
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

NAME = "siliconflow"
TRACE_HEADER = "x-siliconcloud-trace-id"
_MESSAGE_LIMIT = 300


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """A Retry-After header as seconds from now: either a number or an HTTP date."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _vendor_message(response: httpx.Response, secret: str) -> str:
    """SiliconFlow's `{"code", "message", "data"}`, an OpenAI-style error, or plain text.

    `secret` is cut out before truncating, so no prefix of it can survive either."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        error = body.get("error")
        message = body.get("message") or (
            error.get("message") if isinstance(error, dict) else error
        )
        code = body.get("code")
        text = str(message or body)
        if code is not None:
            text = f"{text} (code {code})"
    else:
        text = str(body)
    text = " ".join(text.split())  # gateways answer HTML pages and multi-line text too
    text = text.replace(secret, "[redacted]")
    return text[:_MESSAGE_LIMIT] or response.reason_phrase


def _error_type(status: int) -> type[ProviderError]:
    if status in (401, 403):
        return ProviderAuthFailed
    if status >= 500 or status == 408:
        return ProviderUnavailable
    if status in (400, 413, 422):  # not the content (see `_error`): our parameters
        return ProviderInvalidRequest
    return ProviderError  # 404, 405, 3xx ...: our configuration, not the prompt


class SiliconFlowImageGenerator:
    """Kolors (or another SiliconFlow engine) through the shared HTTP client.

    `timeout` bounds the whole call, not just each socket read: a vendor that trickles
    its answer still fails in time.
    """

    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        http: httpx.AsyncClient,
        base_url: str = "https://api.siliconflow.cn",
        model: str = "Kwai-Kolors/Kolors",
        timeout: float = 60.0,
    ) -> None:
        if not api_key:
            raise ValueError("SiliconFlow needs an API key")
        self._key = api_key
        self._http = http
        self._url = f"{base_url.rstrip('/')}/v1/images/generations"
        self._model = model
        self._timeout = timeout

    async def generate(self, prompt: str, *, seed: int, width: int, height: int) -> ImageResult:
        body: dict[str, Any] = {
            "model": self._model,
            "prompt": prompt,
            "image_size": f"{width}x{height}",
            "batch_size": 1,
            "seed": seed,
        }
        response = await self._post(body)
        if not response.is_success:
            raise self._error(response)
        url = _first_url(response)
        if url is None:
            raise ProviderUnavailable(
                f"{NAME} answered {response.status_code} without an image{_trace(response)}",
                provider=NAME,
            )
        return ImageResult(content_type="image/png", width=width, height=height, url=url)

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        # `from None`: the httpx exception holds the request, and with it our key.
        try:
            async with asyncio.timeout(self._timeout):
                return await self._http.post(
                    self._url, json=body, headers=headers, timeout=self._timeout
                )
        except (TimeoutError, httpx.TimeoutException):
            message = f"{NAME} did not answer within {self._timeout:g} s"
            raise ProviderTimeout(message, provider=NAME) from None
        except httpx.RequestError as exc:
            message = f"{NAME} could not be reached ({type(exc).__name__})"
            raise ProviderUnavailable(message, provider=NAME) from None

    def _error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        message = _vendor_message(response, self._key)
        text = f"{NAME} answered {status}: {message}{_trace(response)}"
        if status == 429:
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            return ProviderRateLimited(text, provider=NAME, retry_after=retry_after)
        if status in (400, 413, 422) and refuses_content(message):
            return ProviderRejected(text, provider=NAME)
        return _error_type(status)(text, provider=NAME)


def _first_url(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    images = body.get("images") if isinstance(body, dict) else None
    first = images[0] if isinstance(images, list) and images else None
    url = first.get("url") if isinstance(first, dict) else None
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def _trace(response: httpx.Response) -> str:
    """The vendor's trace id, which its support asks for."""
    trace = response.headers.get(TRACE_HEADER)
    return f" [trace {trace}]" if trace else ""
