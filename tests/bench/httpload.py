"""A closed-loop HTTP/1.1 load generator, run in a process of its own.

`concurrency` keep-alive connections each send one request, read the whole answer and
send the next (the same request; or, given lists, connection i cycles through
`request[i]`: users' alternating likes and unlikes), for `warmup + duration` seconds;
only answers to requests sent after the warm-up count. A few dozen lines on asyncio
streams rather than httpx: the client must cost far less CPU than the server it
measures, on a machine with two cores.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from tests.bench.common import SPAWN, percentile


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, body
            body += chunk[:-2]
    return status, await reader.readexactly(int(headers.get("content-length", "0")))


async def _load(
    host: str,
    port: int,
    request: bytes | list[list[bytes]],
    concurrency: int,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    latencies: list[float] = []
    failures: list[str] = []
    started = time.perf_counter()
    measure_from, end = started + warmup, started + warmup + duration
    sizes: list[int] = []
    sent_total = 0

    async def connection(index: int) -> None:
        cycle = [request] if isinstance(request, bytes) else request[index % len(request)]
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for turn in itertools.count():
                sent = time.perf_counter()
                if sent >= end:
                    return
                writer.write(cycle[turn % len(cycle)])
                status, body = await read_answer(reader)
                done = time.perf_counter()
                nonlocal sent_total
                sent_total += 1
                if sent >= measure_from:
                    latencies.append(done - sent)
                    # a GraphQL error is a 200 as application/json: a failure all the same
                    if status != 200 or b'"errors"' in body:
                        failures.append(f"{status}: {body[:200]!r}")
                    elif len(sizes) < 1:
                        sizes.append(len(body))
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(concurrency)))
    return {
        "requests": len(latencies),
        "requests_with_warmup": sent_total,
        "failures": len(failures),
        "failure_sample": failures[:3],
        "rps": len(latencies) / duration,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "body_bytes": sizes[0] if sizes else None,
        "concurrency": concurrency,
    }


def _child(results: Any, *args: Any) -> None:
    results.put(asyncio.run(_load(*args)))


def post_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run_load(
    host: str,
    port: int,
    request: bytes | list[list[bytes]],
    *,
    concurrency: int,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Runs the load from a spawned process; its figures."""
    results = SPAWN.Queue()
    child = SPAWN.Process(
        target=_child, args=(results, host, port, request, concurrency, warmup, duration)
    )
    child.start()
    try:
        return dict(results.get(timeout=warmup + duration + 120))
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
