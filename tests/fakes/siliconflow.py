"""A fake SiliconFlow image API, faithful to its documented shapes (VENDOR_APIS.md).

Success: `{"images": [{"url"}], "timings": {"inference"}, "seed"}` with an
`x-siliconcloud-trace-id` header, and each URL serves a real PNG until it expires (404
after `url_ttl_seconds`). Errors: 400/401/403/429/5xx with SiliconFlow's
`{"code", "message", "data"}` body; 429 may carry Retry-After.

Tests script the outcomes of the next generation calls over HTTP, so worker processes
meet the same script as the test that wrote it:

    POST /_fake/script {"responses": [{"status": 429, "retry_after": 1}, {"status": 503},
                                      {"status": 400, "message": "prompt rejected"},
                                      {"status": 200, "delay": 2.5}, ...]}
    GET  /_fake/calls   -> {"calls": [{"prompt", "seed", "status", "at", "body", ...}]}
    POST /_fake/reset

One outcome is used per accepted call, in order; an empty script means success, and
`"repeat": true` on the last outcome keeps it forever. An outcome may also carry
`"delay"` (seconds before answering), `"text"` (a plain-text body, as some gateways
send) or `"body"` (any JSON body, e.g. a malformed 200).

In-process: `httpx.ASGITransport(app=create_fake_app(...))`. Over loopback:
`start_fake_siliconflow()` or `python -m tests.fakes.siliconflow --port N --api-key K`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from providers.local import render_png
from tests.fakes import start_fake_module

_ERRORS = {
    400: (20015, "The parameter is invalid. Please check again."),
    401: (20003, "Invalid token"),
    403: (30001, "Sorry, your account balance is insufficient"),
    429: (50603, "System is too busy now. Please try again later."),
    500: (50500, "Internal error"),
    503: (50505, "Model service overloaded. Please try again later."),
}
_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
_MAX_SEED = 9_999_999_999


class Invalid(Exception):
    """A request body SiliconFlow would answer 400 to."""


def error_response(status: int, message: str | None = None, **headers: str) -> Response:
    code, default = _ERRORS.get(status, (50000, "Unknown error"))
    body = {"code": code, "message": message or default, "data": None}
    return JSONResponse(body, status_code=status, headers=headers)


def _int(body: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{name} must be an integer from {low} to {high}")
    return value


def parse_generation(body: Any) -> dict[str, Any]:
    """The fields SiliconFlow checks, or `Invalid` with the message it would send."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object")
    for name in ("model", "prompt"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise Invalid(f"{name} is required")
    size = _SIZE.match(str(body.get("image_size", "1024x1024")))
    if size is None:
        raise Invalid("image_size must look like 1024x1024")
    scale = body.get("guidance_scale", 7.5)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 <= scale <= 20:
        raise Invalid("guidance_scale must be a number from 0 to 20")
    _int(body, "num_inference_steps", 1, 100, 20)
    return {
        "prompt": body["prompt"],
        "width": int(size[1]),
        "height": int(size[2]),
        "batch_size": _int(body, "batch_size", 1, 4, 1),
        "seed": _int(body, "seed", 0, _MAX_SEED, random.randint(1, _MAX_SEED)),
    }


@dataclass
class FakeSiliconFlow:
    """The vendor's state: the scripted outcomes, the call log and the served files."""

    api_key: str
    url_ttl_seconds: float = 3600.0
    script: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, tuple[float, bytes]] = field(default_factory=dict)

    def next_outcome(self) -> dict[str, Any]:
        if not self.script:
            return {"status": 200}
        if len(self.script) == 1 and self.script[0].get("repeat"):
            return self.script[0]
        return self.script.pop(0)

    def log(self, request: Request, body: Any, status: int) -> None:
        fields = body if isinstance(body, dict) else {}
        self.calls.append(
            {
                "prompt": fields.get("prompt"),
                "seed": fields.get("seed"),
                "status": status,
                "at": time.time(),
                "body": body,
                "content_type": request.headers.get("content-type"),
            }
        )

    async def generate(self, request: Request) -> Response:
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            self.log(request, body, 401)
            return error_response(401)
        try:
            parsed = parse_generation(body)
        except Invalid as exc:
            self.log(request, body, 400)
            return error_response(400, str(exc))
        outcome = self.next_outcome()
        status = int(outcome.get("status", 200))
        self.log(request, body, status)  # before the delay: a test sees the call in flight
        if outcome.get("delay"):
            await asyncio.sleep(float(outcome["delay"]))
        return self.answer(request, outcome, status, parsed)

    def answer(
        self, request: Request, outcome: dict[str, Any], status: int, parsed: dict[str, Any]
    ) -> Response:
        trace = {"x-siliconcloud-trace-id": uuid.uuid4().hex}
        if "text" in outcome:
            return PlainTextResponse(str(outcome["text"]), status_code=status, headers=trace)
        if "body" in outcome:
            return JSONResponse(outcome["body"], status_code=status, headers=trace)
        if status != 200:
            if "retry_after" in outcome:
                trace["Retry-After"] = str(outcome["retry_after"])
            return error_response(status, outcome.get("message"), **trace)
        base = str(request.base_url).rstrip("/")
        urls = [self.store(parsed) for _ in range(parsed["batch_size"])]
        reply = {
            "images": [{"url": f"{base}/files/{name}.png"} for name in urls],
            "timings": {"inference": round(random.uniform(0.5, 3.0), 3)},
            "seed": parsed["seed"],
        }
        return JSONResponse(reply, headers=trace)

    def store(self, parsed: dict[str, Any]) -> str:
        now = time.monotonic()
        for name in [n for n, (expires, _) in self.files.items() if expires < now]:
            del self.files[name]
        name = uuid.uuid4().hex
        png = render_png(parsed["prompt"], parsed["seed"], parsed["width"], parsed["height"])
        self.files[name] = (now + self.url_ttl_seconds, png)
        return name

    async def file(self, request: Request) -> Response:
        expires, data = self.files.get(request.path_params["name"], (0.0, b""))
        if time.monotonic() >= expires:
            return PlainTextResponse("The URL has expired or never existed", status_code=404)
        return Response(data, media_type="image/png")

    async def set_script(self, request: Request) -> Response:
        try:
            responses = (await request.json())["responses"]
        except (ValueError, KeyError, TypeError):
            return PlainTextResponse('expected {"responses": [...]}', status_code=400)
        if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
            return PlainTextResponse("responses must be a list of objects", status_code=400)
        self.script[:] = responses
        return JSONResponse({"queued": len(self.script)})

    async def get_calls(self, request: Request) -> Response:
        return JSONResponse({"calls": self.calls})

    async def reset(self, request: Request) -> Response:
        self.script.clear()
        self.calls.clear()
        self.files.clear()
        return JSONResponse({})


def create_fake_app(*, api_key: str = "sk-test", url_ttl_seconds: float = 3600.0) -> Starlette:
    """The fake as an ASGI app; `app.state.fake` is its `FakeSiliconFlow`."""
    fake = FakeSiliconFlow(api_key=api_key, url_ttl_seconds=url_ttl_seconds)
    app = Starlette(
        routes=[
            Route("/v1/images/generations", fake.generate, methods=["POST"]),
            Route("/files/{name}.png", fake.file),
            Route("/_fake/script", fake.set_script, methods=["POST"]),
            Route("/_fake/calls", fake.get_calls),
            Route("/_fake/reset", fake.reset, methods=["POST"]),
        ]
    )
    app.state.fake = fake
    return app


def serve_fake_siliconflow(port: int, api_key: str, *, url_ttl_seconds: float = 3600.0) -> None:
    """Runs the fake under uvicorn on 127.0.0.1:`port` until interrupted."""
    import uvicorn

    app = create_fake_app(api_key=api_key, url_ttl_seconds=url_ttl_seconds)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_fake_siliconflow(
    api_key: str = "sk-test", *, url_ttl_seconds: float = 3600.0, log: Path | None = None
) -> tuple[str, Callable[[], None]]:
    """The fake in a subprocess on a free loopback port: its base URL and a `stop()`."""
    arguments = ["--api-key", api_key, "--url-ttl-seconds", str(url_ttl_seconds)]
    return start_fake_module("tests.fakes.siliconflow", arguments, log=log)


@contextlib.contextmanager
def fake_siliconflow(api_key: str = "sk-test", **options: Any) -> Iterator[str]:
    """`start_fake_siliconflow` as a context manager yielding the base URL."""
    url, stop = start_fake_siliconflow(api_key, **options)
    try:
        yield url
    finally:
        stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default="sk-test")
    parser.add_argument("--url-ttl-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    serve_fake_siliconflow(args.port, args.api_key, url_ttl_seconds=args.url_ttl_seconds)


if __name__ == "__main__":
    main()
