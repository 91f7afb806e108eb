"""`lumi generate` and `lumi watch`: submit a prompt or follow a request through the
public API, show its progress, pick an image, and download the images and the model.

Exit codes: 0 completed and saved, 1 the request FAILED, 2 usage, 3 an API or connection
error, 4 the request was CANCELLED, 130 detached by Ctrl-C (the request goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable
from enum import IntEnum
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import urlsplit

from app.auth import TokenVerifier
from app.cli_display import Display, display_for
from app.client import FINAL, ApiError, ClientProblem, GatewayClient, Retry, is_local
from app.config import Settings

DEFAULT_URL = "http://127.0.0.1:8000/graphql"
T = TypeVar("T")


class Exit(IntEnum):
    COMPLETED = 0
    FAILED = 1
    USAGE = 2
    ERROR = 3
    CANCELLED = 4
    DETACHED = 130


class Interrupted:
    """Ctrl-C came first."""


def add_parsers(commands: Any) -> None:
    generate = commands.add_parser(
        "generate",
        help="submit a prompt (or an image of yours), follow it live, download the images "
        "and model",
    )
    generate.add_argument("prompt", nargs="?", help="what to make; optional with --image")
    generate.add_argument(
        "--image",
        type=Path,
        metavar="FILE",
        help="make the model from this PNG, JPEG or WebP instead of generating images",
    )
    generate.add_argument("--images", type=int, default=4, metavar="N", help="1-4 (default 4)")
    generate.add_argument(
        "--auto-model", action="store_true", help="build the 3D model from the first image"
    )
    generate.add_argument("--format", choices=["glb", "obj"], default="glb")
    _common_options(generate)
    generate.set_defaults(run=run_generate)
    watch = commands.add_parser("watch", help="follow a request live, then download its files")
    watch.add_argument("request_id")
    _common_options(watch)
    watch.set_defaults(run=run_watch)


def _common_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", type=Path, help="where files go (./lumi-out/<request id>/)")
    command.add_argument("--url", default=DEFAULT_URL, help=f"the gateway (default {DEFAULT_URL})")
    command.add_argument("--token", help="bearer token (default: $LUMI_TOKEN)")
    command.add_argument(
        "--pick",
        type=int,
        metavar="N",
        help="image N (from 1) for the 3D model, unasked; without a terminal image 1 is picked",
    )


def run_generate(settings: Settings, args: argparse.Namespace) -> int:
    request_input: dict[str, Any] = {"modelFormat": args.format.upper()}
    if args.prompt:
        request_input["prompt"] = args.prompt
    if args.image is not None:  # the upload is the one image: no image options
        if not args.image.is_file():
            print(f"lumi generate: --image {args.image}: no such file", file=sys.stderr)
            return Exit.USAGE
    elif not args.prompt:
        print("lumi generate: give a prompt, or --image FILE", file=sys.stderr)
        return Exit.USAGE
    else:
        request_input.update(imageCount=args.images, autoModel=args.auto_model)
    return _run(settings, args, None, request_input)


def run_watch(settings: Settings, args: argparse.Namespace) -> int:
    return _run(settings, args, args.request_id, None)


def _run(
    settings: Settings,
    args: argparse.Namespace,
    request_id: str | None,
    request_input: dict[str, Any] | None,
) -> int:
    if args.pick is not None and args.pick < 1:
        print(f"lumi {args.command}: --pick counts from 1", file=sys.stderr)
        return Exit.USAGE
    if urlsplit(args.url).scheme not in ("http", "https"):
        print(f"lumi {args.command}: --url must be http(s)://…/graphql", file=sys.stderr)
        return Exit.USAGE
    # The HTTP libraries narrate each request at INFO: noise around the progress shown.
    for name in ("httpx", "httpcore", "websockets"):
        logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.WARNING))
    display = display_for(sys.stdout)
    try:
        return asyncio.run(
            _session(display, args, token_for(settings, args), request_id, request_input)
        )
    except KeyboardInterrupt:  # before the request was known: nothing to cancel or watch
        display.problem(f"lumi {args.command}: interrupted")
        return Exit.DETACHED
    finally:
        display.close()


def token_for(settings: Settings, args: argparse.Namespace) -> str | None:
    """--token, else $LUMI_TOKEN, else the development token `lumi serve` prints, when the
    gateway is on this machine and these settings are the development ones."""
    # A client's own token, not a setting of the gateway: so not in `Settings`.
    token: str | None = args.token or os.environ.get("LUMI_TOKEN")
    if (
        token
        or not is_local(args.url)
        or settings.env != "development"
        or settings.auth_mode != "hs256"
    ):
        return token
    verifier = TokenVerifier.from_settings(settings)
    return verifier.mint("dev", ttl_seconds=settings.dev_token_ttl_seconds)


async def _session(
    display: Display,
    args: argparse.Namespace,
    token: str | None,
    request_id: str | None,
    request_input: dict[str, Any] | None,
) -> int:
    client = GatewayClient(args.url, token)
    try:
        if request_id is None:
            request_input = dict(request_input or {})
            image: Path | None = getattr(args, "image", None)
            if image is not None:
                request_input["sourceImage"] = await client.upload_image(image)
                display.notice(f"{image.name} uploaded")
            created = await client.create_request(request_input)
            request_id = str(created["id"])
            display.notice(f"request {request_id} created")
        return await Follow(client, request_id, display, args).run()
    except ClientProblem as problem:
        display.problem(f"lumi {args.command}: {problem.code}: {problem.message}")
        if problem.code == "UNAUTHENTICATED":
            display.problem("pass --token or set LUMI_TOKEN (`lumi token --user NAME` mints one)")
        return Exit.ERROR
    finally:
        await client.aclose()


def _safe(name: str) -> str:
    """A file name from the gateway, kept inside the output folder."""
    cleaned = re.sub(r"[^A-Za-z0-9._=-]", "_", PurePosixPath(name).name).lstrip(".")
    return cleaned or "file"


class Follow:
    """Follows one request to its end: shows it, picks an image, saves its files."""

    def __init__(
        self, client: GatewayClient, request_id: str, display: Display, args: argparse.Namespace
    ) -> None:
        self.client, self.id, self.display, self.args = client, request_id, display, args
        self.out: Path = args.out or Path("lumi-out") / _safe(request_id)
        self.images: list[dict[str, Any]] = []
        self.saved: set[str] = set()
        self.last_seq = 0
        self.reconnecting = False
        self.interrupted = asyncio.Event()
        self.answering = sys.stdin.isatty()
        client.on_retry = self._on_retry

    async def run(self) -> int:
        self.images = (await self.client.request(self.id))["images"]
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.interrupted.set)
        events: asyncio.Queue[dict[str, Any] | ClientProblem] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(events))
        try:
            final = await self._follow(events)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            loop.remove_signal_handler(signal.SIGINT)
        return final if isinstance(final, int) else await self._finish(final)

    async def _pump(self, events: asyncio.Queue[dict[str, Any] | ClientProblem]) -> None:
        try:
            async for event in self.client.updates(self.id):
                events.put_nowait(event)
        except ClientProblem as problem:
            events.put_nowait(problem)

    async def _follow(
        self, events: asyncio.Queue[dict[str, Any] | ClientProblem]
    ) -> dict[str, Any] | int:
        """The final event, or the exit code when the user detached."""
        while True:
            item = await self._unless_interrupted(events.get())
            if isinstance(item, Interrupted):
                if (code := await self._interrupt()) is not None:
                    return code
                continue
            if isinstance(item, ClientProblem):
                raise item
            await self._show(item)
            if item["status"] in FINAL:
                return item
            if item["status"] == "IMAGE_COMPLETED" and (code := await self._maybe_pick()):
                return code

    async def _show(self, event: dict[str, Any]) -> None:
        if self.reconnecting:
            self.display.notice(f"reconnected: resuming after #{self.last_seq}")
            self.reconnecting = False
        self.last_seq = int(event["seq"])
        if event["phase"] == "IMAGE_GENERATION" or event.get("imageId"):
            self.images = (await self.client.request(self.id))["images"]
        self.display.event(event, self.images)

    def _on_retry(self, retry: Retry) -> None:
        self.reconnecting = True
        self.display.notice(
            f"connection lost: {retry.reason}; retrying in {retry.delay:.1f} s"
            f" (resuming after #{self.last_seq})"
        )

    async def _unless_interrupted(self, awaitable: Awaitable[T]) -> T | Interrupted:
        wanted = asyncio.ensure_future(awaitable)
        interrupt = asyncio.ensure_future(self.interrupted.wait())
        await asyncio.wait({wanted, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        interrupt.cancel()
        if wanted.done():  # an event that came with the Ctrl-C is shown first
            return wanted.result()
        wanted.cancel()
        return Interrupted()

    async def _interrupt(self) -> int | None:
        """Ctrl-C: cancel the request (None: follow it to CANCELLED) or detach (130)."""
        self.interrupted.clear()
        answer = None
        if self.answering:
            self.display.pause()
            answer = await self._unless_interrupted(ask(f"\nCancel request {self.id}? [y/N] "))
        if not isinstance(answer, str) or not answer.strip().lower().startswith("y"):
            return self._detach()
        try:
            await self.client.cancel_request(self.id)
            self.display.notice("cancelling the request")
        except ApiError as error:
            if error.code != "CONFLICT":
                raise
            self.display.notice("the request has already finished")
        return None

    def _detach(self) -> int:
        again = f"lumi watch {self.id}"
        if self.args.url != DEFAULT_URL:
            again += f" --url {self.args.url}"
        if self.args.out:
            again += f" --out {self.args.out}"
        self.display.notice(f"detached; the request goes on. Follow it again with: {again}")
        return Exit.DETACHED

    async def _maybe_pick(self) -> int | None:
        """When the request waits for an image (not on a replayed event), picks one."""
        state = await self.client.request(self.id)
        if state["phase"] != "AWAITING_SELECTION" or state["seq"] != self.last_seq:
            return None
        self.images = state["images"]
        await self._save_images(state)
        ready = {i["index"] + 1: i["id"] for i in self.images if i["status"] == "COMPLETED"}
        if not ready:
            return None
        number = await self._choose(sorted(ready))
        if isinstance(number, Interrupted):
            return await self._interrupt()
        try:
            await self.client.select_image(self.id, ready[number])
        except ApiError as error:
            if error.code != "CONFLICT":
                raise
            self.display.notice("an image was picked meanwhile (elsewhere)")
            return None
        self.display.notice(f"image {number} goes to 3D")
        return None

    async def _choose(self, numbers: list[int]) -> int | Interrupted:
        if self.args.pick is not None:
            if self.args.pick not in numbers:
                raise ClientProblem("BAD_PICK", f"--pick {self.args.pick}: ready are {numbers}")
            return int(self.args.pick)
        if not self.answering:
            self.display.notice(f"no terminal to ask: picking image {numbers[0]} (see --pick)")
            return numbers[0]
        question = f"Pick the image for the 3D model {numbers} (Enter: {numbers[0]}): "
        while True:
            self.display.pause()
            answer = await self._unless_interrupted(ask(question))
            if isinstance(answer, Interrupted):
                return answer
            if answer is None or not answer.strip():
                return numbers[0]
            if answer.strip().isdigit() and int(answer) in numbers:
                return int(answer)

    async def _finish(self, final: dict[str, Any]) -> int:
        if final["status"] == "CANCELLED":
            self.display.problem(f"request {self.id} was CANCELLED")
            return Exit.CANCELLED
        state = await self.client.request(self.id)
        await self._save_images(state)
        if final["status"] == "FAILED":
            code = final.get("errorCode") or state.get("errorCode") or "UNKNOWN"
            self.display.problem(f"request {self.id} FAILED: {code}: {state.get('errorMessage')}")
            return Exit.FAILED
        await self._save_model(state)
        self.display.notice(f"request {self.id} COMPLETED; files in {self.out}")
        return Exit.COMPLETED

    async def _save_images(self, state: dict[str, Any]) -> None:
        for image in state["images"]:
            if image["status"] != "COMPLETED" or not image["url"] or image["id"] in self.saved:
                continue
            suffix = PurePosixPath(urlsplit(image["url"]).path).suffix or ".png"
            await self._save(image["url"], f"image-{image['index'] + 1}{suffix}")
            self.saved.add(image["id"])

    async def _save_model(self, state: dict[str, Any]) -> None:
        model = state.get("model")
        if not model:
            return
        files = model["files"] or [
            {"name": f"model.{model['format'].lower()}", "url": model["fileUrl"]}
        ]
        for file in files:
            await self._save(file["url"], _safe(file["name"]))

    async def _save(self, url: str, name: str) -> None:
        size = await self.client.download(url, self.out / name)
        self.display.notice(f"saved {self.out / name} ({size} bytes)")


async def ask(question: str) -> str | None:
    """A line typed on the terminal (None at its end), read without blocking the loop."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str | None] = loop.create_future()
    typed = bytearray()

    def readable() -> None:
        chunk = os.read(sys.stdin.fileno(), 1024)
        typed.extend(chunk)
        if not answered.done() and (not chunk or b"\n" in chunk):
            answered.set_result(typed.decode(errors="replace").strip() if typed else None)

    print(question, end="", file=sys.stderr, flush=True)
    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        return await answered
    finally:
        loop.remove_reader(sys.stdin.fileno())
