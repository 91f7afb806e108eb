"""4. Pipeline throughput: image tasks per second end to end, one worker process.

Measured: 500 requests of 4 images each (--quick 50) are created through the requests
service (`service.create_request` in a unit of work, exactly what the `createRequest`
resolver runs, without the API in front: the API is not what is measured here), so
2,000 image tasks wait behind 500 prompt tasks in the Redis broker. Then one
`lumi worker` process (8 threads, MariaDB, Redis bus, local storage, instant offline
providers: LUMI_LOCAL_LATENCY_SECONDS=0 and 64 px images, the smallest the local
renderer makes, so rendering costs ~1 ms) starts and runs them all. The figure is image
tasks / (last image job finished - first prompt job claimed), both from the job table:
every prompt stage is included, worker start-up is not.

Floor: a no-op Dramatiq actor on the same Redis broker (same namespace and middleware,
built by `app.queue.build_broker`), one worker process with the same 8 threads, the
messages queued before it starts: messages / (last - first processed). A second floor
row runs an empty coroutine the way every stage runs (`async_to_sync` on the worker's
event loop).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import datetime
from typing import Any

from tests.bench.common import (
    CpuMeter,
    Options,
    Row,
    Tracked,
    backend_pids,
    create_requests,
    data_dir,
    insert_rows,
    log,
    make_users,
    production_env,
    profiled,
    query,
    settings_from,
    start_module,
    start_worker,
    stop_process_quietly,
)

THREADS = 8
IMAGES_PER_REQUEST = 4
TARGET = 300.0


def wait_for(url: str, sql: str, want: int, *, timeout: float, stall: float = 60) -> int:
    """Polls `sql` (a count) until it reaches `want`, stops moving for `stall` s, or
    `timeout` passes; the last count."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = int(query(url, sql)[0][0])
        if count >= want:
            return count
        if count != last:
            last, moved = count, time.monotonic()
        elif time.monotonic() - moved > stall:
            break
        time.sleep(0.25)
    return last


def seconds_between(first: datetime | None, last: datetime | None) -> float | None:
    if first is None or last is None:
        return None
    return (last - first).total_seconds()


def noop_floor(
    opts: Options, tracked: Tracked, env: dict[str, str], mode: str, count: int
) -> dict[str, Any]:
    import dramatiq

    from app.queue import build_broker
    from tests.bench.noop_worker import ACTOR, QUEUE

    broker = build_broker(settings_from(env))
    broker.declare_queue(QUEUE)
    for i in range(count):
        broker.enqueue(
            dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR, args=(i,), kwargs={}, options={})
        )
    broker.close()
    log_path = data_dir(opts, "pipeline") / f"noop-{mode}.log"
    process = start_module(
        tracked,
        "tests.bench.noop_worker",
        *("--count", str(count), "--threads", str(THREADS), "--mode", mode),
        log_path=log_path,
        env=env,
    )
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        stop_process_quietly(process)
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    seen = json.loads(lines[-1]) if lines else {"count": 0, "first": 0, "last": 0}
    span = seen["last"] - seen["first"]
    rate = (seen["count"] - 1) / span if seen["count"] > 1 and span > 0 else None
    result = {**seen, "messages_per_second": rate}
    log(f"pipeline floor ({mode} no-op): {result}")
    return result


def run(opts: Options) -> list[Row]:
    requests = opts.size(500, 50)
    tasks = requests * IMAGES_PER_REQUEST
    extra = {"LUMI_IMAGE_SIZE": "64", "LUMI_WORKER_THREADS": str(THREADS)}
    with production_env(opts, "pipeline", **extra) as env, Tracked() as tracked:
        url = env["LUMI_DATABASE_URL"]
        users = make_users(max(1, requests // 10), "pipeline")
        insert_rows(url, users)
        log(f"pipeline: creating {requests} requests ({tasks} image tasks)")
        started = time.monotonic()
        asyncio.run(create_requests(env, users, requests, image_count=IMAGES_PER_REQUEST))
        create_seconds = time.monotonic() - started
        worker = start_worker(opts, tracked, env, "pipeline")
        meter = CpuMeter({"worker": [worker.pid], **backend_pids()}).start()
        with profiled(opts, worker.pid, "pipeline-worker"):
            done = wait_for(
                url,
                "SELECT COUNT(*) FROM generated_images WHERE status = 'COMPLETED'",
                tasks,
                timeout=opts.size(600.0, 180.0),
            )
        cpu = meter.stop()
        stop_process_quietly(worker)
        first = query(url, "SELECT MIN(started_at) FROM generation_jobs WHERE kind = 'PROMPT'")
        last = query(
            url,
            "SELECT MAX(finished_at) FROM generation_jobs"
            " WHERE kind = 'IMAGE' AND status = 'COMPLETED'",
        )
        statuses = dict(
            query(url, "SELECT status, COUNT(*) FROM generation_requests GROUP BY status")
        )
        span = seconds_between(first[0][0], last[0][0])
        rate = done / span if span else None
        gateway = {
            "requests": requests,
            "image_tasks": tasks,
            "images_completed": done,
            "seconds": span,
            "create_seconds": round(create_seconds, 1),
            "request_statuses": statuses,
            "cpu_cores": cpu,
            "worker_cpu_ms_per_image": round(1000 * cpu["worker"] * cpu["wall_seconds"] / done, 2)
            if done
            else None,
        }
        log(f"pipeline: {rate} image tasks/s; {gateway}")
        count = opts.size(5000, 1000)
        floors = {mode: noop_floor(opts, tracked, env, mode, count) for mode in ("sync", "async")}
    notes = {"gateway": gateway, "floor": floors}
    return [
        Row(
            "4 pipeline",
            f"image tasks/s end to end, 1 worker x {THREADS} threads",
            rate,
            "tasks/s",
            floor=floors["sync"]["messages_per_second"],
            floor_label="no-op actor",
            target=f"≥{TARGET:.0f} tasks/s",
            met=rate is not None and rate >= TARGET and done == tasks,
            notes=notes,
        ),
        Row(
            "4 pipeline",
            "(same figure, against an async no-op)",
            rate,
            "tasks/s",
            floor=floors["async"]["messages_per_second"],
            floor_label="async no-op actor",
            notes=notes,
        ),
    ]
