"""`lumi worker`'s liveness: a tiny HTTP server answering `GET /health`.

Alive means able to run stages: every consumer thread fetching its queue, and the event
loop the stages run on. A dead consumer answers 503 until the watchdog has started it
again, so a probe that keeps failing restarts a worker that could not mend itself.
Redis is not asked: a worker restarted during a Redis outage finds the same outage, and
its threads ride one out on their own.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread

from workers.watchdog import consumers_alive

log = logging.getLogger(__name__)

Report = tuple[bool, dict[str, Any]]


def report(worker: dramatiq.Worker) -> Report:
    """(alive, what the endpoint answers): each consumer thread and the event loop."""
    consumers = consumers_alive(worker)
    loop_thread = get_event_loop_thread()
    loop = loop_thread is not None and loop_thread.is_alive()
    alive = loop and bool(consumers) and all(consumers.values())
    return alive, {
        "status": "ok" if alive else "down",
        "consumers": {name: "ok" if up else "dead" for name, up in consumers.items()},
        "eventLoop": "ok" if loop else "dead",
    }


class _Handler(BaseHTTPRequestHandler):
    server: _HealthHTTPServer

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/health":
            self._answer(404, {"error": "not found"})
            return
        alive, body = self.server.report()
        self._answer(200 if alive else 503, body)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a probe every few seconds would fill the log with one line each."""


class _HealthHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], report: Callable[[], Report]) -> None:
        super().__init__(address, _Handler)
        self.report = report


class HealthServer:
    """Serves `/health` for `worker` on its own thread until stopped."""

    def __init__(self, host: str, port: int, worker: dramatiq.Worker) -> None:
        self._server = _HealthHTTPServer((host, port), lambda: report(worker))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="lumi-worker-health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("worker health on port %s", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
