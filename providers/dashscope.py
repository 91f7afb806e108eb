"""Aliyun DashScope (Wanx) image generation: an asynchronous task, created then polled.

`POST {base}/api/v1/services/aigc/text2image/image-synthesis` with a bearer key and
`X-DashScope-Async: enable` answers `{"output": {"task_id", "task_status"}}`; then
`GET {base}/api/v1/tasks/{task_id}` reports PENDING, RUNNING, SUCCEEDED (with
`output.results[].url`, kept 24 h), FAILED (with `output.code`/`message`) or UNKNOWN
(an expired or unknown task). Errors are `{"code", "message", "request_id"}` and map
onto the typed provider errors; the key never appears in one.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from providers.base import (
    ImageResult,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.formats import fit_size
from providers.openai_compat import SEED_RANGE, bounded, http_error

CREATE_PATH = "/api/v1/services/aigc/text2image/image-synthesis"
TASK_PATH = "/api/v1/tasks/{task_id}"
_WAITING = ("PENDING", "RUNNING")
SIDE_RANGE = (512, 1440)  # Wanx takes each side in [512, 1440]
# A transient failure while polling must not lose a task already paid for: poll again.
_POLL_RETRIES = 3
# FAILED tasks whose code says the prompt or picture was refused: retrying won't help.
_REFUSED = re.compile(r"DataInspection|IPInfringement|InvalidParameter|BadRequest", re.I)


class DashScopeImageGenerator:
    """Wanx text-to-image through the shared HTTP client.

    `timeout` bounds the whole create-and-poll, not each request: a task stuck in the
    queue fails in time too. `poll_interval` is the wait between task queries (the
    vendor allows 20 queries a second per account)."""

    def __init__(
        self,
        *,
        api_key: str,
        http: httpx.AsyncClient,
        base_url: str = "https://dashscope.aliyuncs.com",
        model: str = "wanx2.1-t2i-turbo",
        poll_interval: float = 1.0,
        timeout: float = 120.0,
        name: str = "dashscope",
    ) -> None:
        if not api_key:
            raise ValueError(f"{name} needs an API key")
        self.name = name
        self._key = api_key
        self._http = http
        self._base = base_url.rstrip("/")
        self._model = model
        self._poll_interval = poll_interval
        self._timeout = timeout

    async def generate(self, prompt: str, *, seed: int, width: int, height: int) -> ImageResult:
        width, height = fit_size(width, height, *SIDE_RANGE)
        async with bounded(self.name, self._timeout, "finish the task"):
            task_id = await self._create(prompt, seed=seed, width=width, height=height)
            url = await self._wait(task_id)
        return ImageResult(content_type="image/png", width=width, height=height, url=url)

    async def _create(self, prompt: str, *, seed: int, width: int, height: int) -> str:
        body = {
            "model": self._model,
            "input": {"prompt": prompt},
            "parameters": {"size": f"{width}*{height}", "n": 1, "seed": seed % SEED_RANGE},
        }
        output = await self._request("POST", CREATE_PATH, json=body, async_=True)
        task_id = output.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise ProviderUnavailable(f"{self.name} created no task", provider=self.name)
        return task_id

    async def _wait(self, task_id: str) -> str:
        """Polls the task until it finishes: its image URL, or its typed error."""
        failures = 0
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                output = await self._request("GET", TASK_PATH.format(task_id=task_id))
            except (ProviderRateLimited, ProviderUnavailable) as exc:
                failures += 1
                if failures > _POLL_RETRIES:
                    raise
                if isinstance(exc, ProviderRateLimited) and exc.retry_after:
                    await asyncio.sleep(exc.retry_after)
                continue
            failures = 0
            status = output.get("task_status")
            if status not in _WAITING:
                return self._finished(task_id, status, output)

    def _finished(self, task_id: str, status: object, output: dict[str, Any]) -> str:
        if status == "SUCCEEDED":
            results = output.get("results")
            first = results[0] if isinstance(results, list) and results else None
            url = first.get("url") if isinstance(first, dict) else None
            if isinstance(url, str) and url.startswith(("https://", "http://")):
                return url
            raise self._task_error(task_id, first if isinstance(first, dict) else {})
        if status == "FAILED":
            raise self._task_error(task_id, output)
        if status == "UNKNOWN":
            message = f"{self.name} task {task_id} is unknown or has expired"
            raise ProviderUnavailable(message, provider=self.name)
        message = f"{self.name} task {task_id} ended {status}"  # CANCELED, or a new status
        raise ProviderUnavailable(message, provider=self.name)

    def _task_error(self, task_id: str, failed: dict[str, Any]) -> ProviderError:
        code = str(failed.get("code") or "")
        detail = " ".join(str(failed.get("message") or "no image and no reason").split())
        detail = detail.replace(self._key, "[redacted]")[:300]
        message = f"{self.name} task {task_id} failed: {detail}"
        if code:
            message += f" (code {code})"
        kind = ProviderRejected if code and _REFUSED.search(code) else ProviderUnavailable
        return kind(message, provider=self.name)

    async def _request(
        self, method: str, path: str, *, json: Any = None, async_: bool = False
    ) -> dict[str, Any]:
        """The `output` of one 2xx answer, or the typed error of any other."""
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        if async_:
            headers["X-DashScope-Async"] = "enable"
        async with bounded(self.name, self._timeout):
            response = await self._http.request(
                method, f"{self._base}{path}", json=json, headers=headers, timeout=self._timeout
            )
        if not response.is_success:
            raise http_error(response, name=self.name, secret=self._key)
        try:
            reply: Any = response.json()
        except ValueError:
            reply = None
        output = reply.get("output") if isinstance(reply, dict) else None
        if not isinstance(output, dict):
            message = f"{self.name} answered {response.status_code} without an output"
            raise ProviderUnavailable(message, provider=self.name)
        return output
