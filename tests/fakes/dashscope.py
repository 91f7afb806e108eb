"""A fake Aliyun DashScope (Wanx) text-to-image API: asynchronous tasks, as VENDOR_APIS.md
describes them.

Create, `POST /api/v1/services/aigc/text2image/image-synthesis` with `Authorization:
Bearer <key>` and `X-DashScope-Async: enable` (without it: 403 AccessDenied, as the
vendor answers synchronous calls to an asynchronous-only model), body `{"model", "input":
{"prompt", "negative_prompt"}, "parameters": {"size": "W*H", "n", "seed", ...}}` →
`{"output": {"task_id", "task_status": "PENDING"}, "request_id"}`.

Poll, `GET /api/v1/tasks/{task_id}` → `output.task_status` goes PENDING, then RUNNING,
then SUCCEEDED (`output.results[].url`, `task_metrics`, `submit_time`, `end_time`) as
time passes; an id the fake never issued is UNKNOWN. Result URLs serve a real PNG until
they expire (404 after `url_ttl_seconds`).

Errors: `{"code", "message", "request_id"}` with 400 InvalidParameter, 401 InvalidApiKey,
403 AccessDenied, 429 Throttling.RateQuota, 500 InternalError.

Scripted like the other fakes (`/_fake/script`, `/_fake/calls`, `/_fake/reset`), one
outcome per accepted create call: `status`, `retry_after`, `delay`, `message`, `code`,
`text`, `body` and `repeat` as elsewhere, and for the task that call creates:
`task_status` (`FAILED`, or `UNKNOWN` once it would finish), `task_code` and
`task_message` (its failure), `result_failed` (SUCCEEDED with one result carrying a
`code`/`message` instead of a URL), `run_seconds` (how long it runs), and `poll_errors`
(statuses its next polls answer, e.g. `[503, 429]`, before the real answer).
"""

from __future__ import annotations

import argparse
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import start_fake_module
from tests.fakes.openai_compat import ScriptedVendor, fake_routes
from tests.fakes.siliconflow import Invalid

CREATE_PATH = "/api/v1/services/aigc/text2image/image-synthesis"
_ERRORS = {
    400: ("InvalidParameter", "The request parameter is invalid."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    403: ("AccessDenied", "current user api does not support synchronous calls"),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later."),
}
_SIZE = re.compile(r"^(\d{3,4})\*(\d{3,4})$")
_MAX_SEED = 2_147_483_647


def dashscope_error(status: int, outcome: dict[str, Any] | None = None) -> Response:
    outcome = outcome or {}
    code, message = _ERRORS.get(status, ("InternalError", "Service unavailable."))
    body = {
        "code": outcome.get("code", code),
        "message": outcome.get("message") or message,
        "request_id": str(uuid.uuid4()),
    }
    return JSONResponse(body, status_code=status)


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class Task:
    id: str
    parsed: dict[str, Any]
    submitted: float
    pending_seconds: float
    run_seconds: float
    outcome: dict[str, Any]
    poll_errors: list[int] = field(default_factory=list)
    results: list[dict[str, str]] | None = None

    def status(self, now: float) -> str:
        if now < self.submitted + self.pending_seconds:
            return "PENDING"
        if now < self.submitted + self.pending_seconds + self.run_seconds:
            return "RUNNING"
        return str(self.outcome.get("task_status", "SUCCEEDED"))


def parse_synthesis(body: Any) -> dict[str, Any]:
    """The fields Wanx checks, or `Invalid` with the message it would send."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise Invalid("Field required: model")
    given = body.get("input")
    prompt = given.get("prompt") if isinstance(given, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise Invalid("Field required: input.prompt")
    if len(prompt) > 800:
        raise Invalid("Range of input length should be [1, 800]")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise Invalid("parameters must be an object")
    size = _SIZE.match(str(parameters.get("size", "1024*1024")))
    if size is None or not all(512 <= int(side) <= 1440 for side in size.groups()):
        raise Invalid("size must be W*H with sides of 512-1440 pixels")
    n, seed = parameters.get("n", 4), parameters.get("seed", 0)
    for name, value, high in (("n", n, 4), ("seed", seed, _MAX_SEED)):
        low = 1 if name == "n" else 0
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Invalid(f"{name} must be an integer from {low} to {high}")
    width, height = int(size[1]), int(size[2])
    return {"prompt": prompt, "width": width, "height": height, "n": n, "seed": seed}


@dataclass
class FakeDashScope(ScriptedVendor):
    pending_seconds: float = 0.2
    run_seconds: float = 0.6
    tasks: dict[str, Task] = field(default_factory=dict)
    polls: list[dict[str, Any]] = field(default_factory=list)

    def error(self, status: int, outcome: dict[str, Any] | None = None) -> Response:
        return dashscope_error(status, outcome)

    async def create(self, request: Request) -> Response:
        if request.headers.get("x-dashscope-async") != "enable":
            self.log(request, None, 403)
            return self.error(403)
        accepted = await self.accept(request, lambda _request, body: parse_synthesis(body))
        if isinstance(accepted, Response):
            return accepted
        outcome, parsed = accepted
        self.calls[-1]["prompt"] = parsed["prompt"]
        task = Task(
            id=str(uuid.uuid4()),
            parsed=parsed,
            submitted=time.time(),
            pending_seconds=self.pending_seconds,
            run_seconds=float(outcome.get("run_seconds", self.run_seconds)),
            outcome=outcome,
            poll_errors=[int(status) for status in outcome.get("poll_errors", [])],
        )
        self.tasks[task.id] = task
        self.calls[-1]["task_id"] = task.id
        output = {"task_id": task.id, "task_status": "PENDING"}
        return JSONResponse({"output": output, "request_id": str(uuid.uuid4())})

    async def query(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        authorized = request.headers.get("authorization") == f"Bearer {self.api_key}"
        task = self.tasks.get(task_id)
        poll = {"path": request.url.path, "method": "GET", "task_id": task_id, "at": time.time()}
        self.polls.append(poll)
        if not authorized:
            poll["status"] = 401
            return self.error(401)
        if task is not None and task.poll_errors:
            poll["status"] = status = task.poll_errors.pop(0)
            return self.error(status)
        poll["status"] = 200
        now = time.time()
        output: dict[str, Any] = {"task_id": task_id, "task_status": "UNKNOWN"}
        if task is not None:
            output = self.report(request, task, now)
        return JSONResponse({"request_id": str(uuid.uuid4()), "output": output})

    def report(self, request: Request, task: Task, now: float) -> dict[str, Any]:
        status = task.status(now)
        output: dict[str, Any] = {
            "task_id": task.id,
            "task_status": status,
            "submit_time": _stamp(task.submitted),
        }
        if status in ("PENDING", "RUNNING", "UNKNOWN"):
            return output
        output["end_time"] = _stamp(task.submitted + task.pending_seconds + task.run_seconds)
        if status == "FAILED":
            output["code"] = task.outcome.get("task_code", "InternalError.Algo")
            output["message"] = task.outcome.get("task_message", "Algorithm process error.")
            return output
        if task.results is None:  # each URL is minted once, when the task first reports it
            task.results = [self.result(request, task) for _ in range(task.parsed["n"])]
        failed = sum("code" in result for result in task.results)
        output["results"] = task.results
        output["task_metrics"] = {
            "TOTAL": len(task.results),
            "SUCCEEDED": len(task.results) - failed,
            "FAILED": failed,
        }
        return output

    def result(self, request: Request, task: Task) -> dict[str, str]:
        if task.outcome.get("result_failed"):
            code = str(task.outcome.get("task_code", "DataInspectionFailed"))
            message = "Output data may contain inappropriate content."
            return {"code": code, "message": str(task.outcome.get("task_message", message))}
        base = str(request.base_url).rstrip("/")
        return {"url": f"{base}/files/{self.keep(self.picture(task.parsed))}.png"}

    def picture(self, parsed: dict[str, Any]) -> bytes:
        from providers.local import render_png

        return render_png(parsed["prompt"], parsed["seed"], parsed["width"], parsed["height"])

    async def get_calls(self, request: Request) -> Response:
        return JSONResponse({"calls": self.calls, "polls": self.polls})

    async def reset(self, request: Request) -> Response:
        self.tasks.clear()
        self.polls.clear()
        return await super().reset(request)


def create_fake_app(
    *,
    api_key: str = "sk-test",
    url_ttl_seconds: float = 86_400.0,
    pending_seconds: float = 0.2,
    run_seconds: float = 0.6,
) -> Starlette:
    """The fake as an ASGI app; `app.state.fake` is its `FakeDashScope`."""
    fake = FakeDashScope(
        api_key=api_key,
        url_ttl_seconds=url_ttl_seconds,
        pending_seconds=pending_seconds,
        run_seconds=run_seconds,
    )
    routes = [
        Route(CREATE_PATH, fake.create, methods=["POST"]),
        Route("/api/v1/tasks/{task_id}", fake.query, methods=["GET"]),
        *fake_routes(fake),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake
    return app


def start_fake_dashscope(
    api_key: str = "sk-test",
    *,
    url_ttl_seconds: float = 86_400.0,
    run_seconds: float = 0.6,
    log: Path | None = None,
) -> tuple[str, Callable[[], None]]:
    """The fake in a subprocess on a free loopback port: its base URL and a `stop()`."""
    arguments = ["--api-key", api_key, "--url-ttl-seconds", str(url_ttl_seconds)]
    arguments += ["--run-seconds", str(run_seconds)]
    return start_fake_module("tests.fakes.dashscope", arguments, log=log)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A fake Aliyun DashScope image API")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default="sk-test")
    parser.add_argument("--url-ttl-seconds", type=float, default=86_400.0)
    parser.add_argument("--run-seconds", type=float, default=0.6)
    args = parser.parse_args(argv)
    app = create_fake_app(
        api_key=args.api_key, url_ttl_seconds=args.url_ttl_seconds, run_seconds=args.run_seconds
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
