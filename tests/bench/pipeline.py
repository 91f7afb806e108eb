"""4. Pipeline throughput: image tasks per second end to end, one worker process, and
what each image task costs.

Measured: 500 requests of 4 images each (--quick 50) are created through the requests
service (`service.create_request` in a unit of work, exactly what the `createRequest`
resolver runs, without the API in front: the API is not what is measured here), so
2,000 image tasks wait behind 500 prompt tasks in the Redis broker. Then one
`lumi worker` process (8 threads, MariaDB, Redis bus, local storage, instant offline
providers: LUMI_LOCAL_LATENCY_SECONDS=0 and 64 px images, the smallest the local
renderer makes, so rendering costs ~1 ms) starts and runs them all. The figure is image
tasks / (last image job finished - first prompt job claimed), both from the job table:
every prompt stage is included, worker start-up is not. Per image task (a quarter of
a prompt stage included): the worker's CPU over the run, and the statements MariaDB
counted (`Com_*`, by kind), less the benchmark's own polling. The same then runs on 2
worker processes: the scale-out figure.

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
    mariadb_status,
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
TARGET = 150.0  # image tasks/s on one worker process (issue 21)
TARGET_CPU_MS = 5.0
TARGET_STATEMENTS = 8


# The statements MariaDB counts, by kind: a worker's SQL, whatever it is.
STATEMENTS = (
    "Com_select",
    "Com_insert",
    "Com_insert_select",
    "Com_update",
    "Com_update_multi",
    "Com_delete",
    "Com_delete_multi",
    "Com_replace",
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Com_set_option",
)


class Polls:
    """How many statements the benchmark's own polling sent (to subtract them)."""

    count = 0


def wait_for(url: str, sql: str, want: int, *, timeout: float, stall: float = 60) -> int:
    """Polls `sql` (a count) until it reaches `want`, stops moving for `stall` s, or
    `timeout` passes; the last count."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = int(query(url, sql)[0][0])
        Polls.count += 1
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


def statements_per_poll(url: str) -> float:
    """The statements one `query()` of the benchmark's own costs the counters."""
    before = mariadb_status(*STATEMENTS)
    for _ in range(10):
        query(url, "SELECT 1")
    after = mariadb_status(*STATEMENTS)
    return sum(after[name] - before[name] for name in STATEMENTS) / 10


def one_round(
    opts: Options,
    tracked: Tracked,
    env: dict[str, str],
    users: list[Any],
    *,
    requests: int,
    workers: int,
    per_poll: float,
) -> dict[str, Any]:
    """`requests` requests queued, then `workers` worker processes run them all; the
    rate and what each image task cost (worker CPU, SQL statements by kind)."""
    url = env["LUMI_DATABASE_URL"]
    tasks = requests * IMAGES_PER_REQUEST
    (since,) = query(url, "SELECT NOW(6)")[0]
    done_before = int(query(url, _DONE)[0][0])
    log(f"pipeline: creating {requests} requests ({tasks} image tasks), {workers} worker(s)")
    started = time.monotonic()
    asyncio.run(create_requests(env, users, requests, image_count=IMAGES_PER_REQUEST))
    create_seconds = time.monotonic() - started
    Polls.count = 0
    statements_before = mariadb_status(*STATEMENTS)
    processes = [
        start_worker(opts, tracked, env, "pipeline", label=f"worker-{workers}-{i}")
        for i in range(workers)
    ]
    pids = [process.pid for process in processes]
    meter = CpuMeter({"worker": pids, **backend_pids()}).start()
    with profiled(opts, pids[0], f"pipeline-worker-{workers}"):
        done = wait_for(url, _DONE, done_before + tasks, timeout=opts.size(600.0, 180.0))
        done -= done_before
    cpu = meter.stop()
    statements_after = mariadb_status(*STATEMENTS)
    for process in processes:
        stop_process_quietly(process)
    by_kind = {
        name.removeprefix("Com_"): statements_after[name] - statements_before[name]
        for name in STATEMENTS
    }
    by_kind["select"] -= round(Polls.count * per_poll)  # the benchmark's own polling
    statements = sum(by_kind.values())
    first = query(
        url,
        "SELECT MIN(started_at) FROM generation_jobs WHERE kind = 'PROMPT' AND created_at >= %s",
        since,
    )
    last = query(
        url,
        "SELECT MAX(finished_at) FROM generation_jobs"
        " WHERE kind = 'IMAGE' AND status = 'COMPLETED' AND created_at >= %s",
        since,
    )
    span = seconds_between(first[0][0], last[0][0])
    result = {
        "workers": workers,
        "requests": requests,
        "image_tasks": tasks,
        "images_completed": done,
        "seconds": span,
        "image_tasks_per_second": done / span if span else None,
        "create_seconds": round(create_seconds, 1),
        "cpu_cores": cpu,
        # Per image task, the prompt stages (one per 4 images) included: what it costs.
        "worker_cpu_ms_per_image": round(1000 * cpu["worker"] * cpu["wall_seconds"] / done, 2)
        if done
        else None,
        "statements_per_image": round(statements / done, 2) if done else None,
        "statements_by_kind_per_image": {
            kind: round(count / done, 2) for kind, count in by_kind.items() if count
        }
        if done
        else None,
    }
    log(f"pipeline ({workers} worker(s)): {result}")
    return result


_DONE = "SELECT COUNT(*) FROM generated_images WHERE status = 'COMPLETED'"


def run(opts: Options) -> list[Row]:
    requests = opts.size(500, 50)
    extra = {"LUMI_IMAGE_SIZE": "64", "LUMI_WORKER_THREADS": str(THREADS)}
    with production_env(opts, "pipeline", **extra) as env, Tracked() as tracked:
        url = env["LUMI_DATABASE_URL"]
        users = make_users(max(1, requests // 10), "pipeline")
        insert_rows(url, users)
        per_poll = statements_per_poll(url)
        rounds = {
            workers: one_round(
                opts, tracked, env, users, requests=requests, workers=workers, per_poll=per_poll
            )
            for workers in (1, 2)
        }
        count = opts.size(5000, 1000)
        floors = {mode: noop_floor(opts, tracked, env, mode, count) for mode in ("sync", "async")}
    one, two = rounds[1], rounds[2]
    rate, done = one["image_tasks_per_second"], one["images_completed"]
    cpu_ms, statements = one["worker_cpu_ms_per_image"], one["statements_per_image"]
    notes = {"rounds": rounds, "floor": floors}
    speed_up = (
        two["image_tasks_per_second"] / rate if rate and two["image_tasks_per_second"] else None
    )
    return [
        Row(
            "4 pipeline",
            f"image tasks/s end to end, 1 worker x {THREADS} threads",
            rate,
            "tasks/s",
            floor=floors["sync"]["messages_per_second"],
            floor_label="no-op actor",
            target=f"≥{TARGET:.0f} tasks/s",
            met=rate is not None and rate >= TARGET and done == one["image_tasks"],
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
        Row(
            "4 pipeline",
            "worker CPU per image task (1 worker)",
            cpu_ms,
            "ms",
            target=f"≤{TARGET_CPU_MS:.0f} ms",
            met=cpu_ms is not None and cpu_ms <= TARGET_CPU_MS,
            notes=notes,
        ),
        Row(
            "4 pipeline",
            "SQL statements per image task (1 worker)",
            statements,
            "statements",
            target=f"≤{TARGET_STATEMENTS}",
            met=statements is not None and statements <= TARGET_STATEMENTS,
            notes=notes,
        ),
        Row(
            "4 pipeline",
            f"image tasks/s, 2 workers x {THREADS} threads",
            two["image_tasks_per_second"],
            "tasks/s",
            floor=rate,
            floor_label="1 worker",
            target="speed-up shown",
            notes={**notes, "speed_up": speed_up},
        ),
    ]
