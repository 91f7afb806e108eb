"""A webhook receiver for tests: a real HTTP server on loopback whose answers a test
scripts (status codes, or "hang" past the sender's timeout), recording every call."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    headers: dict[str, str]
    body: bytes
    answer: int | str  # the status sent, or "hang"


@dataclass
class Receiver:
    url: str
    script: list[int | str] = field(default_factory=list)  # answers for the next calls
    then: int | str = 204  # the answer once the script is spent
    hang_seconds: float = 3.0
    delay_seconds: float = 0.0  # how long every answer takes
    calls: list[Call] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def next_answer(self) -> int | str:
        with self.lock:
            return self.script.pop(0) if self.script else self.then

    def accepted(self) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if isinstance(c.answer, int) and c.answer < 300]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        """Until `condition()` holds, checked at each call; fails after `timeout` s."""
        with self.changed:
            if not self.changed.wait_for(condition, timeout):
                raise AssertionError(f"receiver: condition not met; calls: {len(self.calls)}")

    async def until(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        await asyncio.to_thread(self.wait_for, condition, timeout)


@contextmanager
def receiver(path: str = "/hook") -> Iterator[Receiver]:
    state: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            answer = state.next_answer()
            headers = {k.lower(): v for k, v in self.headers.items()}
            with state.changed:
                state.calls.append(Call(headers, body, answer))
                state.changed.notify_all()
            if answer == "hang":
                time.sleep(state.hang_seconds)
                answer = 204
            time.sleep(state.delay_seconds)
            try:
                self.send_response(int(answer))
                if 300 <= int(answer) < 400:  # a redirect to this very receiver
                    self.send_header("location", state.url)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender gave up waiting

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Receiver(f"http://127.0.0.1:{server.server_address[1]}{path}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written here from the specification (not with
    the gateway's code): key = base64 of the secret after `whsec_`; signed content
    `{webhook-id}.{webhook-timestamp}.{body}`; HMAC-SHA256, base64; the header is a
    space-separated list of `v1,<signature>`, any of which may match."""
    import base64
    import hashlib
    import hmac

    key = base64.b64decode(secret.split("_", 1)[1])
    content = b".".join(
        [headers["webhook-id"].encode(), headers["webhook-timestamp"].encode(), body]
    )
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for signature in headers["webhook-signature"].split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


def verified_by_reference(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver using the Standard Webhooks reference library (`standardwebhooks`
    on PyPI) concludes: its `Webhook.verify` also refuses a timestamp over five minutes
    from now."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True
