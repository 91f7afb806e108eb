"""1. Progress latency: a worker's commit → the client's receipt over a websocket.

Measured: N subscribers (1, 100, 1,000; --quick 1, 10, 100), each a user of its own
following its own request with `requestUpdates` over graphql-transport-ws, connected to
one `lumi serve` process on MariaDB and Redis. A driver process writes progress events
exactly as a worker stage does (`workers/image.py` → `service.transition` inside the
unit of work of `app/unit.py`: the request and its owner locked, the request updated
and an event row inserted in one transaction), takes `time.time()` right after COMMIT
returns, then publishes the event on the Redis bus as `publish_events` does. Clients
take `time.time()` when a frame arrives; events are matched by (request id, seq).
Events go out at a fixed total rate spread round-robin over the N requests, so N
measures how the gateway fares with N live subscriptions (including the process-wide
recheck of their latest numbers every LUMI_SUBSCRIPTION_RECHECK_SECONDS), not a burst
of N frames. The details name how many events took over 10 ms and when they were made
(seconds after the first), to tell a stall from a slow path.

Floor: the same N clients on the same machine connected to `tests/bench/relay.py` (a raw
Redis pub/sub → websocket relay), the driver publishing a payload that carries the
`time.time()` taken just before PUBLISH, at the same rate.

The event rows' `created_at` is not used: it is set when the row object is built,
before the INSERT and the COMMIT, so it would flatter the figure.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from app.graphql.relay import global_id
from tests.bench.common import (
    REDIS_URL,
    CpuMeter,
    Options,
    Row,
    Tracked,
    backend_pids,
    insert_rows,
    log,
    make_users,
    metric,
    percentile,
    production_env,
    profiled,
    settings_from,
    start_api,
    start_relay,
    tokens_for,
)
from tests.bench.wsclients import Subscribers, Target

SUBSCRIPTION = """subscription Follow($id: ID!) {
  requestUpdates(id: $id, afterSeq: 0) {
    requestId seq status step progress progressIsEstimate createdAt
  }
}"""
GRACE_SECONDS = 3.0  # after the last event: longer than one table re-check (2 s)
PAD = "x" * 160  # the relay's frames about as long as the gateway's


def seed(url: str, count: int) -> list[tuple[str, str]]:
    """`count` users, each with one request generating its 3D model: (subject, request id)."""
    from app.tables import GenerationRequest, utcnow

    users = make_users(count, "latency")
    requests = [
        GenerationRequest(
            user_id=user.id,
            prompt="latency benchmark",
            image_count=1,
            image_width=512,
            image_height=512,
            auto_model=True,
            status="MODEL_GENERATING",
            phase="MODEL_GENERATION",
            step="generating 3D model (bench)",
            progress=52.0,
            seq=0,
            phase_started_at=utcnow(),
        )
        for user in users
    ]
    insert_rows(url, [*users, *requests])
    return [(u.external_id, r.id) for u, r in zip(users, requests, strict=True)]


async def _paced(total: int, rate: float, launch: Any) -> float:
    """Calls `launch(k)` for k in 0..total-1 at `rate` per second; the achieved rate."""
    tasks = []
    start = time.perf_counter() + 0.05
    for k in range(total):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(launch(k)))
    await asyncio.gather(*tasks)
    return total / max(time.perf_counter() - start, 1e-9)


async def drive_gateway(
    env: dict[str, str], request_ids: list[str], rate: float, duration: float, subs: Subscribers
) -> tuple[dict[tuple[str, int], float], dict[str, Any]]:
    """Warm-up event per request (every subscriber must see it), then the measured ones:
    {(request id, seq): commit time}."""
    from app.bus import RedisBus
    from app.db import Database, create_engine
    from app.requests import repository, service
    from app.requests.stages import Status
    from app.unit import Unit, publish_events

    settings = settings_from(env)
    db = Database(create_engine(settings.resolved_database_url))
    bus = RedisBus(settings.redis_url, prefix=settings.redis_namespace)
    locks = {rid: asyncio.Lock() for rid in request_ids}
    committed: dict[tuple[str, int], float] = {}
    n = len(request_ids)
    per_request = math.ceil(rate * duration / n) + 1

    async def commit(rid: str, number: int) -> None:
        # One request's events in order, as one stage at a time moves a request.
        async with locks[rid]:
            async with db.write() as session:
                unit = Unit(session)
                request = await repository.get(session, rid, for_update=True)
                assert request is not None
                await service.transition(
                    unit,
                    request,
                    Status.MODEL_GENERATING,
                    step=request.step,
                    progress=52.0 + 40.0 * number / per_request,
                    estimated=True,
                )
                await unit.store_events()  # as `unit_of_work` does before its commit
            at = time.time()
            await publish_events(bus, unit.events)
        committed[(rid, unit.events[0].seq)] = at

    try:
        gate = asyncio.Semaphore(16)

        async def warm(rid: str) -> None:
            async with gate:
                await commit(rid, 0)

        await asyncio.gather(*(warm(rid) for rid in request_ids))
        if not await asyncio.to_thread(subs.wait_received, n, 120):
            raise RuntimeError(f"warm-up: {subs.received_count()} of {n} subscribers got an event")
        committed.clear()
        total = max(1, int(rate * duration))
        achieved = await _paced(total, rate, lambda k: commit(request_ids[k % n], 1 + k // n))
    finally:
        await bus.close()
        await db.dispose()
    return committed, {"events": total, "achieved_rate": round(achieved, 1)}


async def drive_relay(
    prefix: str, n: int, rate: float, duration: float, subs: Subscribers
) -> dict[str, Any]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL)

    async def publish(channel: int, seq: int) -> None:
        payload = {"c": channel, "seq": seq, "pad": PAD, "t": time.time()}
        await client.publish(f"{prefix}{channel}", json.dumps(payload))

    gate = asyncio.Semaphore(16)  # redis-py caps a client's pool at 100 connections

    async def warm(channel: int) -> None:
        async with gate:
            await publish(channel, 0)

    try:
        await asyncio.gather(*(warm(c) for c in range(n)))
        if not await asyncio.to_thread(subs.wait_received, n, 60):
            raise RuntimeError(f"relay warm-up: {subs.received_count()} of {n} clients")
        total = max(1, int(rate * duration))
        achieved = await _paced(total, rate, lambda k: publish(k % n, 1 + k // n))
    finally:
        await client.aclose()
    return {"events": total, "achieved_rate": round(achieved, 1)}


def _wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def measure_gateway(
    opts: Options,
    api: Any,
    env: dict[str, str],
    group: list[tuple[str, str, str]],
    rate: float,
    duration: float,
) -> tuple[list[float], dict[str, Any]]:
    n = len(group)
    with Tracked() as inner:
        targets = [Target(api.ws, token, SUBSCRIPTION, {"id": rid}) for _, rid, token in group]
        subs = Subscribers(inner, targets, processes=2)
        opened = subs.wait_opened(timeout=600)
        if opened.failed:
            raise RuntimeError(f"{opened.failed} subscriptions failed: {opened.errors}")
        meter = CpuMeter({"api": [api.process.pid], **backend_pids()})
        with profiled(opts, api.process.pid, f"latency-api-{n}"):
            meter.start()
            committed, info = asyncio.run(
                drive_gateway(env, [rid for _, rid, _ in group], rate, duration, subs)
            )
            time.sleep(GRACE_SECONDS)
            cpu = meter.stop()
        frames = subs.stop()
    # Events name their request by its global id; the driver knows the row ids.
    row_ids = {global_id("GenerationRequest", rid): rid for _, rid, _ in group}
    latencies = []
    late: list[float] = []  # when (s after the first commit) the events over 10 ms were made
    first = min(committed.values(), default=0.0)
    seen: set[tuple[str, int]] = set()
    for received_at, raw in frames:
        message = json.loads(raw)
        if message.get("type") != "next":
            continue
        event = message["payload"]["data"]["requestUpdates"]
        key = (row_ids.get(event["requestId"], event["requestId"]), int(event["seq"]))
        if key in committed and key not in seen:
            seen.add(key)
            latencies.append((received_at - committed[key]) * 1000)
            if latencies[-1] > 10:
                late.append(round(committed[key] - first, 2))
    late.sort()
    info.update(
        received=len(latencies),
        missing=len(committed) - len(latencies),
        over_10ms=len(late),
        over_10ms_made_at_s=late[:3] + late[-3:] if len(late) > 6 else late,
        cpu_cores=cpu,
        deflate=opened.extensions,
    )
    _wait_until(
        lambda: metric(api.url, "lumi_active_subscriptions") == 0, 60, "subscriptions to end"
    )
    return latencies, info


def measure_relay(
    opts: Options,
    relay_url: str,
    relay_pid: int,
    prefix: str,
    n: int,
    rate: float,
    duration: float,
) -> tuple[list[float], dict[str, Any]]:
    import httpx

    ws_base = relay_url.replace("http://", "ws://", 1)
    with Tracked() as inner:
        subs = Subscribers(inner, [Target(f"{ws_base}/ws/{c}") for c in range(n)], processes=2)
        opened = subs.wait_opened(timeout=600)
        _wait_until(
            lambda: httpx.get(f"{relay_url}/health").json()["connections"] >= n,
            60,
            "relay connections",
        )
        meter = CpuMeter({"relay": [relay_pid], **backend_pids()})
        meter.start()
        info = asyncio.run(drive_relay(prefix, n, rate, duration, subs))
        time.sleep(GRACE_SECONDS)
        cpu = meter.stop()
        frames = subs.stop()
    latencies = []
    for received_at, raw in frames:
        payload = json.loads(raw)
        if payload["seq"] > 0:
            latencies.append((received_at - payload["t"]) * 1000)
    info.update(
        received=len(latencies),
        missing=info["events"] - len(latencies),
        cpu_cores=cpu,
        deflate=opened.extensions,
    )
    return latencies, info


def run(opts: Options) -> list[Row]:
    sizes = opts.size([1, 100, 1000], [1, 10, 100])
    rate = opts.size(100.0, 50.0)
    duration = opts.size(10.0, 4.0)
    rows: list[Row] = []
    with production_env(opts, "latency") as env, Tracked() as tracked:
        log(f"latency: seeding {sum(sizes)} users and requests")
        seeded = seed(env["LUMI_DATABASE_URL"], sum(sizes))
        tokens = tokens_for([subject for subject, _ in seeded])
        everyone = [(s, r, t) for (s, r), t in zip(seeded, tokens, strict=True)]
        api = start_api(opts, tracked, env, "latency")
        prefix = f"{env['LUMI_REDIS_NAMESPACE']}:relay:"
        relay, relay_url = start_relay(opts, tracked, "latency", prefix)
        offset = 0
        for n in sizes:
            group = everyone[offset : offset + n]
            offset += n
            log(f"latency: {n} subscriber(s) on the gateway, {rate:.0f} events/s, {duration:.0f} s")
            gateway, gateway_info = measure_gateway(opts, api, env, group, rate, duration)
            log(f"latency: {n} client(s) on the raw relay")
            floor, floor_info = measure_relay(opts, relay_url, relay.pid, prefix, n, rate, duration)
            notes = {"gateway": gateway_info, "floor": floor_info}
            log(
                f"latency @{n}: gateway p50 {percentile(gateway, 50):.2f} p99 "
                f"{percentile(gateway, 99):.2f} ms; floor p50 {percentile(floor, 50):.2f} "
                f"p99 {percentile(floor, 99):.2f} ms; {notes}"
            )
            rows.append(
                Row(
                    "1 latency",
                    f"p50 commit→receipt, {n} subs",
                    percentile(gateway, 50),
                    "ms",
                    floor=percentile(floor, 50),
                    floor_label="relay p50",
                    notes=notes,
                )
            )
            p99, floor99 = percentile(gateway, 99), percentile(floor, 99)
            top = n == sizes[-1]
            limit_ms = 10.0
            within_floor = p99 <= 1.5 * floor99
            met = within_floor and (p99 <= limit_ms if top else True)
            if gateway_info["missing"] or floor_info["missing"]:
                met = False
            rows.append(
                Row(
                    "1 latency",
                    f"p99 commit→receipt, {n} subs",
                    p99,
                    "ms",
                    floor=floor99,
                    floor_label="relay p99",
                    target=f"≤{limit_ms:.0f} ms & ≤1.5x floor" if top else "≤1.5x floor",
                    met=met,
                    notes=notes,
                )
            )
    return rows
