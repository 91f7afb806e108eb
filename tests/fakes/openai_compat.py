"""A fake OpenAI-compatible API: images (as Volcengine Ark and OpenAI answer) and chat.

Images, `POST {images_path}` (default `/v1/images/generations`; Ark's is
`/api/v3/images/generations`): `{"model", "prompt", "size": "WxH", "n", "seed",
"watermark", "response_format": "url" | "b64_json"}` → `{"model", "created", "data":
[{"url"} | {"b64_json"}], "usage": {"generated_images"}}`. A URL serves the image until
it expires (404 after `url_ttl_seconds`).

Chat, `POST {chat_path}` (default `/v1/chat/completions`): `{"model", "messages"}` →
`{"id", "object": "chat.completion", "created", "model", "choices": [{"index", "message":
{"role", "content"}, "finish_reason"}], "usage"}`. The content is a JSON array of prompt
variants derived from the last user message, as many as the system message asks for
("exactly N"), else 4.

Errors: `{"error": {"message", "type", "param", "code"}}`; 429 may carry Retry-After.

Scripted like the fake SiliconFlow (`/_fake/script`, `/_fake/calls`, `/_fake/reset`),
one outcome per accepted images or chat call. Besides `status`, `retry_after`, `delay`,
`message`, `code`, `repeat`, `text` and `body`, an outcome may carry `image_format`
(`png`, `jpeg`, `webp`), `content` (the chat answer, verbatim), `variants` (how many
the chat answers) and `finish_reason`.

In-process: `httpx.ASGITransport(app=create_fake_app(...))`. Over loopback:
`start_fake_openai_compat()` or `python -m tests.fakes.openai_compat --port N --api-key K`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from providers.formats import image_type
from providers.local import render_png
from tests.fakes import start_fake_module
from tests.fakes.siliconflow import FakeSiliconFlow, Invalid

_ERRORS = {
    400: ("invalid_request_error", "InvalidParameter", "One or more parameters are not valid."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", "AccessDenied", "You do not have access to this model."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", "InternalServiceError", "The server had an error, try again later."),
    503: ("server_error", "ServiceUnavailable", "The engine is currently overloaded."),
}
_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
# OpenAI's own engines take only these sizes; Ark and other compatible engines a range.
_FIXED_SIZES = {
    "gpt-image": ("1024x1024", "1536x1024", "1024x1536"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
}
_ASKED = re.compile(r"exactly (\d{1,2})")
_LOOKS = ("studio lighting", "matte clay", "polished resin", "low-poly", "bronze", "wood")
Parse = Callable[[Request, Any], dict[str, Any]]


def openai_error(status: int, outcome: dict[str, Any] | None = None) -> Response:
    """OpenAI's error shape, which Ark shares; a scripted `message`/`code` overrides."""
    outcome = outcome or {}
    kind, code, message = _ERRORS.get(status, ("server_error", "unknown_error", "Unknown error"))
    error = {
        "message": outcome.get("message") or message,
        "type": kind,
        "param": None,
        "code": outcome.get("code", code),
    }
    return JSONResponse({"error": error}, status_code=status)


@dataclass
class ScriptedVendor(FakeSiliconFlow):
    """The fake SiliconFlow's script, call log and expiring files, for another vendor."""

    def error(self, status: int, outcome: dict[str, Any] | None = None) -> Response:
        """The vendor's error body for `status`; a scripted `message`/`code` overrides it."""
        return openai_error(status, outcome)

    async def accept(
        self, request: Request, parse: Parse
    ) -> tuple[dict[str, Any], dict[str, Any]] | Response:
        """Checks the key and the body, then plays the next outcome: it and the parsed body,
        or the Response to send (a refusal, a scripted error or a verbatim answer)."""
        try:
            body: Any = await request.json()
        except ValueError:
            body = None
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            self.log(request, body, 401)
            return self.error(401)
        try:
            parsed = parse(request, body)
        except Invalid as exc:
            self.log(request, body, 400)
            return self.error(400, {"message": str(exc)})
        outcome = self.next_outcome()
        status = int(outcome.get("status", 200))
        self.log(request, body, status)  # before the delay: a test sees the call in flight
        if outcome.get("delay"):
            await asyncio.sleep(float(outcome["delay"]))
        if "text" in outcome:
            return PlainTextResponse(str(outcome["text"]), status_code=status)
        if "body" in outcome:
            return JSONResponse(outcome["body"], status_code=status)
        if status != 200:
            response = self.error(status, outcome)
            if "retry_after" in outcome:
                response.headers["Retry-After"] = str(outcome["retry_after"])
            return response
        return outcome, parsed

    def log(self, request: Request, body: Any, status: int) -> None:
        super().log(request, body, status)
        self.calls[-1]["path"] = request.url.path
        self.calls[-1]["method"] = request.method

    def keep(self, data: bytes) -> str:
        """Serves `data` under a new name until `url_ttl_seconds` from now."""
        now = time.monotonic()
        for name in [n for n, (expires, _) in self.files.items() if expires < now]:
            del self.files[name]
        name = uuid.uuid4().hex
        self.files[name] = (now + self.url_ttl_seconds, data)
        return name

    async def file(self, request: Request) -> Response:
        name = request.path_params["name"].split(".")[0]
        expires, data = self.files.get(name, (0.0, b""))
        if time.monotonic() >= expires:
            return PlainTextResponse("The URL has expired or never existed", status_code=404)
        return Response(data, media_type=image_type(data) or "application/octet-stream")


def _optional_int(body: dict[str, Any], name: str, low: int, high: int) -> None:
    value = body.get(name, low)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{name} must be an integer from {low} to {high}")


def parse_image_request(request: Request, body: Any) -> dict[str, Any]:
    """The fields Ark and OpenAI check, or `Invalid` with the message they would send."""
    if not isinstance(body, dict):
        raise Invalid("The request body must be a JSON object")
    for name in ("model", "prompt"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise Invalid(f"The parameter `{name}` is required")
    size = _SIZE.match(str(body.get("size", "1024x1024")))
    model = body["model"]
    if "seedream-4" in str(model):  # Seedream 4.x: by area, 1280x720 to 4096x4096
        area = int(size[1]) * int(size[2]) if size else 0
        if not 1280 * 720 <= area <= 4096 * 4096:
            raise Invalid("The parameter `size` must have 1280x720 to 4096x4096 pixels")
    elif size is None or not all(512 <= int(side) <= 2048 for side in size.groups()):
        raise Invalid("The parameter `size` must be WxH with sides of 512-2048 pixels")
    fixed = next((v for prefix, v in _FIXED_SIZES.items() if model.startswith(prefix)), None)
    if fixed and size[0] not in fixed:
        raise Invalid(f"Invalid value: '{size[0]}'. Supported values are: {', '.join(fixed)}.")
    _optional_int(body, "n", 1, 4)
    _optional_int(body, "seed", -1, 2_147_483_647)
    if not isinstance(body.get("watermark", False), bool):
        raise Invalid("The parameter `watermark` must be a boolean")
    # gpt-image engines take no response_format and always answer b64_json
    answer = "b64_json" if body["model"].startswith("gpt-image") else "url"
    if body.get("response_format", answer) not in ("url", "b64_json"):
        raise Invalid("The parameter `response_format` must be url or b64_json")
    seed = body.get("seed", -1)
    return {
        "prompt": body["prompt"],
        "width": int(size[1]),
        "height": int(size[2]),
        "n": body.get("n", 1),
        "seed": seed if seed >= 0 else random.randint(0, 2_147_483_647),
        "response_format": body.get("response_format", answer),
        "model": body["model"],
    }


def parse_chat_request(request: Request, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise Invalid("The parameter `model` is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("The parameter `messages` must be a non-empty array")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "user",
            "assistant",
        ):
            raise Invalid("Each message needs a role of system, user or assistant")
        if not isinstance(message.get("content"), str):
            raise Invalid("Each message needs a string content")
    # DashScope: the open-source Qwen3 models think by default, which only streaming
    # calls may do (400 InvalidParameter otherwise).
    family = body["model"].rsplit("/", 1)[-1].lower()
    if (
        "compatible-mode" in request.url.path
        and family.startswith("qwen3")
        and not body.get("stream")
        and body.get("enable_thinking") is not False
    ):
        raise Invalid("parameter.enable_thinking must be set to false for non-streaming calls")
    users = [m["content"] for m in messages if m["role"] == "user"]
    system = " ".join(m["content"] for m in messages if m["role"] == "system")
    asked = _ASKED.search(system)
    count = int(asked[1]) if asked else 4
    return {"model": body["model"], "prompt": users[-1] if users else "", "count": count}


@dataclass
class FakeOpenAICompat(ScriptedVendor):
    """Images and chat, as an OpenAI-compatible vendor answers them."""

    async def images(self, request: Request) -> Response:
        accepted = await self.accept(request, parse_image_request)
        if isinstance(accepted, Response):
            return accepted
        outcome, parsed = accepted
        self.calls[-1]["prompt"] = parsed["prompt"]
        form = str(outcome.get("image_format", "png"))
        base = str(request.base_url).rstrip("/")
        data = []
        for _ in range(parsed["n"]):
            image = _encode(self.picture(parsed), form)
            if parsed["response_format"] == "b64_json":
                data.append({"b64_json": base64.b64encode(image).decode()})
            else:
                data.append({"url": f"{base}/files/{self.keep(image)}.{form}"})
        reply = {
            "model": parsed["model"],
            "created": int(time.time()),
            "data": data,
            "usage": {"generated_images": len(data)},
        }
        return JSONResponse(reply)

    def picture(self, parsed: dict[str, Any]) -> bytes:
        return render_png(parsed["prompt"], parsed["seed"], parsed["width"], parsed["height"])

    async def chat(self, request: Request) -> Response:
        accepted = await self.accept(request, parse_chat_request)
        if isinstance(accepted, Response):
            return accepted
        outcome, parsed = accepted
        self.calls[-1]["prompt"] = parsed["prompt"]
        if "content" in outcome:
            content = str(outcome["content"])
        else:
            count = int(outcome.get("variants", parsed["count"]))
            subject = " ".join(parsed["prompt"].split())
            looks = [_LOOKS[i % len(_LOOKS)] for i in range(count)]
            variants = [f"{subject}, {look}, take {i + 1}" for i, look in enumerate(looks)]
            content = json.dumps(variants, ensure_ascii=False)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": outcome.get("finish_reason", "stop"),
        }
        tokens = len(parsed["prompt"].split()) + 60, len(content.split())
        reply = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed["model"],
            "choices": [choice],
            "usage": {
                "prompt_tokens": tokens[0],
                "completion_tokens": tokens[1],
                "total_tokens": sum(tokens),
            },
        }
        return JSONResponse(reply)


def _encode(png: bytes, form: str) -> bytes:
    if form == "png":
        return png
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format=form.upper())
    return buffer.getvalue()


def fake_routes(fake: ScriptedVendor) -> list[Route]:
    """The scripting and file routes every scripted fake vendor serves."""
    return [
        Route("/files/{name}", fake.file),
        Route("/_fake/script", fake.set_script, methods=["POST"]),
        Route("/_fake/calls", fake.get_calls),
        Route("/_fake/reset", fake.reset, methods=["POST"]),
    ]


def create_fake_app(
    *,
    api_key: str = "sk-test",
    url_ttl_seconds: float = 3600.0,
    images_path: str = "/v1/images/generations",
    chat_path: str = "/v1/chat/completions",
) -> Starlette:
    """The fake as an ASGI app; `app.state.fake` is its `FakeOpenAICompat`."""
    fake = FakeOpenAICompat(api_key=api_key, url_ttl_seconds=url_ttl_seconds)
    routes = [
        Route(images_path, fake.images, methods=["POST"]),
        Route(chat_path, fake.chat, methods=["POST"]),
        *fake_routes(fake),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake
    return app


def start_fake_openai_compat(
    api_key: str = "sk-test",
    *,
    url_ttl_seconds: float = 3600.0,
    images_path: str = "/v1/images/generations",
    chat_path: str = "/v1/chat/completions",
    log: Path | None = None,
) -> tuple[str, Callable[[], None]]:
    """The fake in a subprocess on a free loopback port: its base URL and a `stop()`."""
    arguments = ["--api-key", api_key, "--url-ttl-seconds", str(url_ttl_seconds)]
    arguments += ["--images-path", images_path, "--chat-path", chat_path]
    return start_fake_module("tests.fakes.openai_compat", arguments, log=log)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default="sk-test")
    parser.add_argument("--url-ttl-seconds", type=float, default=3600.0)
    parser.add_argument("--images-path", default="/v1/images/generations")
    parser.add_argument("--chat-path", default="/v1/chat/completions")
    args = parser.parse_args(argv)
    app = create_fake_app(
        api_key=args.api_key,
        url_ttl_seconds=args.url_ttl_seconds,
        images_path=args.images_path,
        chat_path=args.chat_path,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
