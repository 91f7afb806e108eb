"""A client of the gateway's public API, for `lumi generate` and `lumi watch`.

It speaks only what any third-party client may: GraphQL over HTTP (and its multipart
request specification for an upload), graphql-transport-ws for `requestUpdates`, and the
signed file links the API hands out. A dropped socket is
resumed with the last `seq` seen, so every event arrives once and in order.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
# How long a lost gateway is waited for, reconnecting with backoff, before giving up.
RECONNECT_WINDOW_SECONDS = 60.0
FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.5, 8.0
# graphql-transport-ws closes that a retry cannot mend: the token or the protocol is wrong.
_REFUSED = {4400: "BAD_REQUEST", 4401: "BAD_REQUEST", 4403: "UNAUTHENTICATED"}

UPDATES = """subscription Follow($id: ID!, $afterSeq: Int!) {
  requestUpdates(id: $id, afterSeq: $afterSeq) {
    seq status phase step progress message errorCode imageId
  }
}"""
UPLOAD = """mutation Upload($file: Upload!) { uploadImage(file: $file) { id } }"""
CREATE = """mutation Create($input: CreateRequestInput!) {
  createRequest(input: $input) { id status seq }
}"""
STATE = """query State($id: ID!) {
  request(id: $id) {
    id status phase step progress seq errorCode errorMessage autoModel
    images { id index status url contentType }
    model { id format fileUrl files { name url size } }
  }
}"""
SELECT = """mutation Select($requestId: ID!, $imageId: ID!) {
  selectImage(requestId: $requestId, imageId: $imageId) { id status }
}"""
CANCEL = """mutation Cancel($id: ID!) { cancelRequest(id: $id) { id status } }"""


class ClientProblem(Exception):
    """Something `lumi generate` reports and exits on, with a code for machines."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class ApiError(ClientProblem):
    """The gateway answered with a GraphQL error; `code` is its `extensions.code`."""


class GatewayUnreachable(ClientProblem):
    """The gateway could not be reached (for longer than the reconnect window)."""


@dataclass(frozen=True)
class Retry:
    """Told to the caller before each wait for a lost gateway to come back."""

    delay: float
    reason: str


def _api_error(errors: list[dict[str, Any]]) -> ApiError:
    first = errors[0] if errors else {}
    code = (first.get("extensions") or {}).get("code") or "ERROR"
    return ApiError(str(code), str(first.get("message") or "unknown error"))


def is_local(url: str) -> bool:
    """Whether `url` names this machine."""
    return (urlsplit(url).hostname or "") in {"127.0.0.1", "localhost", "::1"}


class Backoff:
    """Growing waits between reconnects, within `RECONNECT_WINDOW_SECONDS` of the first."""

    def __init__(self, window: float = RECONNECT_WINDOW_SECONDS) -> None:
        self.window = window
        self.delay = FIRST_BACKOFF_SECONDS
        self.since: float | None = None

    def reset(self) -> None:
        self.delay, self.since = FIRST_BACKOFF_SECONDS, None

    def next(self) -> float | None:
        """The wait before the next attempt, or None once the window is spent."""
        now = time.monotonic()
        self.since = self.since if self.since is not None else now
        if now - self.since >= self.window:
            return None
        delay, self.delay = self.delay, min(self.delay * 2, MAX_BACKOFF_SECONDS)
        return delay


class GatewayClient:
    """One gateway (`url`, its GraphQL endpoint), as one user (`token`)."""

    def __init__(
        self, url: str, token: str | None, *, on_retry: Callable[[Retry], None] | None = None
    ) -> None:
        self.url, self.token = url, token
        self.on_retry = on_retry or (lambda retry: None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(headers=headers, timeout=30)
        # File links are signed and may point at another host (S3): no token goes there.
        self._files = httpx.AsyncClient(timeout=120, follow_redirects=True)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._files.aclose()

    async def execute(
        self, query: str, variables: dict[str, Any], *, idempotent: bool = True
    ) -> dict[str, Any]:
        """The operation's `data`; an `ApiError` when it answers errors. A connection that
        fails before the operation is sent is retried, others only when `idempotent`."""
        backoff = Backoff()
        while True:
            try:
                response = await self._http.post(
                    self.url, json={"query": query, "variables": variables}
                )
                return self._data_of(response)
            except httpx.TransportError as exc:
                if not (idempotent or isinstance(exc, httpx.ConnectError)):
                    raise GatewayUnreachable("CONNECTION_LOST", f"{self.url}: {exc}") from exc
                await self._wait(backoff, f"{type(exc).__name__}: {exc}")

    def _data_of(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(f"HTTP_{response.status_code}", response.text[:200] or "no body")
        if body.get("errors"):
            raise _api_error(body["errors"])
        return dict(body.get("data") or {})

    async def _wait(self, backoff: Backoff, reason: str) -> None:
        delay = backoff.next()
        if delay is None:
            raise GatewayUnreachable("CONNECTION_LOST", f"{self.url}: {reason}")
        self.on_retry(Retry(delay, reason))
        await asyncio.sleep(delay)

    async def create_request(self, request_input: dict[str, Any]) -> dict[str, Any]:
        # The key makes a retry after a lost answer return the first request, not a second.
        keyed = {"idempotencyKey": f"lumi-cli-{uuid.uuid4().hex}", **request_input}
        return dict((await self.execute(CREATE, {"input": keyed}))["createRequest"])

    async def upload_image(self, path: Path) -> str:
        """Uploads the image at `path` (`uploadImage`, a GraphQL multipart request); its
        id, for `createRequest(input: {sourceImage})`. Sent again only when the
        connection failed before it was sent: a second upload would be a second file."""
        data = await asyncio.to_thread(path.read_bytes)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        form = {
            "operations": json.dumps({"query": UPLOAD, "variables": {"file": None}}),
            "map": json.dumps({"0": ["variables.file"]}),
        }
        backoff = Backoff()
        while True:
            try:
                response = await self._http.post(
                    self.url,
                    data=form,
                    files={"0": (path.name, data, kind)},
                    # A multipart POST needs the token or this header (the gateway's CSRF
                    # rule): sent either way, so an anonymous try gets UNAUTHENTICATED.
                    headers={"Apollo-Require-Preflight": "true"},
                )
                return str(self._data_of(response)["uploadImage"]["id"])
            except httpx.ConnectError as exc:
                await self._wait(backoff, f"{type(exc).__name__}: {exc}")
            except httpx.TransportError as exc:
                raise GatewayUnreachable("CONNECTION_LOST", f"{self.url}: {exc}") from exc

    async def request(self, request_id: str) -> dict[str, Any]:
        return dict((await self.execute(STATE, {"id": request_id}))["request"])

    async def select_image(self, request_id: str, image_id: str) -> None:
        variables = {"requestId": request_id, "imageId": image_id}
        await self.execute(SELECT, variables, idempotent=False)

    async def cancel_request(self, request_id: str) -> None:
        await self.execute(CANCEL, {"id": request_id}, idempotent=False)

    async def updates(self, request_id: str, after_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event of the request after `after_seq` until its final one, across
        dropped connections: each reconnect resubscribes after the last `seq` seen."""
        backoff = Backoff()
        while True:
            try:
                async for event in self._subscribe(request_id, after_seq):
                    backoff.reset()
                    after_seq = int(event["seq"])
                    yield event
                    if event["status"] in FINAL:
                        return
                reason = "the subscription ended before a final status"
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code in _REFUSED:
                    raise ApiError(
                        _REFUSED[code], f"the gateway closed the socket ({code})"
                    ) from None
                reason = f"the socket closed ({code})" if code else "the socket dropped"
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = f"{type(exc).__name__} {exc}".strip()
            await self._wait(backoff, reason)

    async def _subscribe(self, request_id: str, after_seq: int) -> AsyncIterator[dict[str, Any]]:
        ws_url = "ws" + self.url.removeprefix("http")
        async with websockets.connect(
            ws_url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            open_timeout=10,
            ping_interval=10,
            ping_timeout=10,
        ) as ws:
            auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            await ws.send(json.dumps({"type": "connection_init", "payload": auth}))
            while json.loads(await ws.recv()).get("type") != "connection_ack":
                continue  # a ping before the ack needs no answer
            variables = {"id": request_id, "afterSeq": after_seq}
            subscribe = {"query": UPDATES, "variables": variables}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif kind == "next":
                    payload = message.get("payload") or {}
                    if payload.get("errors"):
                        raise _api_error(payload["errors"])
                    yield dict(payload["data"]["requestUpdates"])
                elif kind == "error":
                    raise _api_error(list(message.get("payload") or []))
                elif kind == "complete":
                    return

    async def download(self, url: str, target: Path) -> int:
        """Saves a file link (relative ones are the gateway's own) to `target`; its size."""
        try:
            response = await self._files.get(urljoin(self.url, url))
        except httpx.HTTPError as exc:
            raise GatewayUnreachable("DOWNLOAD_FAILED", f"{target.name}: {exc}") from exc
        if response.status_code != 200:
            raise ApiError(f"HTTP_{response.status_code}", f"could not download {target.name}")
        await asyncio.to_thread(_write, target, response.content)
        return len(response.content)


def _write(target: Path, data: bytes) -> None:
    """Whole or not at all: an interrupted write leaves no truncated file behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    partial.replace(target)
