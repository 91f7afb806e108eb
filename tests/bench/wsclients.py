"""Websocket clients in processes of their own, so their CPU is never the server's.

One `Subscribers` group spreads connections over a few spawned processes. Each process
opens its connections (graphql-transport-ws with one subscription each, or a bare
relay connection), records the wall-clock receipt time of every message before looking
at it, answers the server's graphql-transport-ws pings, and on `stop()` returns what it
received. Connections use the `websockets` client with its default settings
(permessage-deflate offered) unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import time
from dataclasses import dataclass
from typing import Any

from tests.bench.common import SPAWN, Tracked, raise_nofile

GRAPHQL_WS = "graphql-transport-ws"


@dataclass(frozen=True)
class Target:
    """One connection: a graphql-transport-ws subscription when `query` is set, else a
    bare relay connection that only listens."""

    url: str
    token: str | None = None
    query: str | None = None
    variables: dict[str, Any] | None = None


@dataclass(frozen=True)
class Opened:
    ok: int
    failed: int
    errors: list[str]
    extensions: str | None  # Sec-WebSocket-Extensions the server answered
    skipped: int = 0  # not attempted: the opening deadline had passed


def _client_main(
    targets: list[tuple[int, Target]],
    counter: Any,
    stop: Any,
    results: Any,
    open_concurrency: int,
    compression: str | None,
    deadline: float | None,
) -> None:
    raise_nofile()
    asyncio.run(_client(targets, counter, stop, results, open_concurrency, compression, deadline))


async def _client(
    targets: list[tuple[int, Target]],
    counter: Any,
    stop: Any,
    results: Any,
    open_concurrency: int,
    compression: str | None,
    deadline: float | None,
) -> None:
    import websockets

    gate = asyncio.Semaphore(open_concurrency)
    received: list[tuple[float, str]] = []
    sources: list[int] = []  # which target each received frame came on
    readers: list[asyncio.Task[None]] = []
    connections: list[Any] = []
    errors: list[str] = []
    extensions: list[str | None] = []
    skipped = 0

    async def read(ws: Any, graphql: bool, index: int) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                now = time.time()
                if graphql and '"ping"' in raw[:30]:
                    await ws.send('{"type":"pong"}')
                    continue
                received.append((now, raw))
                sources.append(index)
                counter.value += 1

    async def open_one(index: int, target: Target) -> None:
        nonlocal skipped
        graphql = target.query is not None
        async with gate:
            if deadline is not None and time.time() > deadline:
                skipped += 1
                return
            try:
                ws = await websockets.connect(
                    target.url,
                    subprotocols=[GRAPHQL_WS] if graphql else None,  # type: ignore[list-item]
                    open_timeout=120,
                    compression=compression,
                )
                if graphql:
                    init = {"Authorization": f"Bearer {target.token}"}
                    await ws.send(json.dumps({"type": "connection_init", "payload": init}))
                    ack = json.loads(await asyncio.wait_for(ws.recv(), 120))
                    if ack.get("type") != "connection_ack":
                        raise RuntimeError(f"no ack: {ack}")
                    payload = {"query": target.query, "variables": target.variables or {}}
                    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                return
        connections.append(ws)
        extensions.append(ws.response.headers.get("Sec-WebSocket-Extensions"))
        readers.append(asyncio.create_task(read(ws, graphql, index)))

    await asyncio.gather(*(open_one(i, t) for i, t in targets))
    results.put(
        (
            "opened",
            Opened(
                len(connections), len(errors), errors[:5], extensions[0] if extensions else None
            ),
        )
    )
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    results.put(("received", (received, sources)))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(20):
            await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
    for reader in readers:
        reader.cancel()


class Subscribers:
    """`targets` spread over `processes` client processes."""

    def __init__(
        self,
        tracked: Tracked,
        targets: list[Target],
        *,
        processes: int = 2,
        open_concurrency: int = 50,
        compression: str | None = "deflate",
        deadline: float | None = None,
    ) -> None:
        """`deadline` (wall clock): connections not yet started by then are skipped."""
        self.processes = max(1, min(processes, len(targets)))
        self.counters = [SPAWN.Value("l", 0, lock=False) for _ in range(self.processes)]
        self.stop_event = SPAWN.Event()
        self.results = SPAWN.Queue()
        self.children = []
        numbered = list(enumerate(targets))
        for index in range(self.processes):
            share = numbered[index :: self.processes]
            child = SPAWN.Process(
                target=_client_main,
                args=(
                    share,
                    self.counters[index],
                    self.stop_event,
                    self.results,
                    open_concurrency,
                    compression,
                    deadline,
                ),
                daemon=True,
            )
            child.start()
            tracked.child(child)
            self.children.append(child)
        self.stopped = False
        tracked.callback(self._stop_quietly)

    def received_count(self) -> int:
        return sum(int(counter.value) for counter in self.counters)

    def wait_opened(self, timeout: float) -> Opened:
        """Until every process has opened its connections; their totals."""
        opened: list[Opened] = []
        deadline = time.monotonic() + timeout
        while len(opened) < self.processes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(opened)} of {self.processes} client processes opened")
            try:
                kind, value = self.results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if not all(child.is_alive() for child in self.children):
                    raise RuntimeError("a client process died") from None
                continue
            assert kind == "opened"
            opened.append(value)
        errors = [e for o in opened for e in o.errors]
        extensions = next((o.extensions for o in opened if o.extensions), None)
        return Opened(
            sum(o.ok for o in opened),
            sum(o.failed for o in opened),
            errors[:5],
            extensions,
            sum(o.skipped for o in opened),
        )

    def wait_received(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.received_count() >= count:
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 60) -> list[tuple[float, str]]:
        """Every message received, as (receipt time, raw frame)."""
        return [frame for frames in self.stop_by_target(timeout).values() for frame in frames]

    def stop_by_target(self, timeout: float = 60) -> dict[int, list[tuple[float, str]]]:
        """Every message received, by the index of the target it came on, in order."""
        self.stop_event.set()
        self.stopped = True
        by_target: dict[int, list[tuple[float, str]]] = {}
        for _ in range(self.processes):
            kind, (received, sources) = self.results.get(timeout=timeout)
            assert kind == "received"
            for frame, index in zip(received, sources, strict=True):
                by_target.setdefault(index, []).append(frame)
        for child in self.children:
            child.join(30)
        return by_target

    def _stop_quietly(self) -> None:
        if not self.stopped:
            self.stop_event.set()
