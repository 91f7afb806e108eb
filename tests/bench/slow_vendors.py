"""5. Slow vendors: 1,000 3D jobs that each take 60 s at the vendor (--quick: 100 of 6 s),
one worker process with 8 threads; all should be done within 75 s (--quick 7.5 s).

Measured: the fake Tencent Hunyuan 3D (`tests/bench/fake_vendor.py`: the test fake,
every job exactly N s, no account job limit) behind `LUMI_MODEL_PROVIDERS=hunyuan`, with
`LUMI_PROVIDER_CONCURRENCY=hunyuan=100000` so our own limit never holds a job back,
polled every LUMI_MODEL_POLL_INTERVAL_SECONDS (1 s, the default). The requests are
seeded as the image stages leave them (one stored 64 px image each, awaiting selection)
and one idle worker is running; the clock starts when `selectImage` begins for all of
them (through the requests service, 16 at a time) and stops at the last request's
`completed_at`: the 3D jobs are submitted, polled, their files downloaded and stored,
and the requests completed within that time.

Floor: the vendor's own job time; ratio = wall time / job time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import (
    CpuMeter,
    Options,
    Row,
    Tracked,
    backend_pids,
    data_dir,
    insert_rows,
    log,
    make_users,
    percentile,
    production_env,
    profiled,
    query,
    select_images,
    settings_from,
    start_module,
    start_worker,
    wait_http,
)
from tests.bench.pipeline import wait_for
from tests.conftest import free_port

THREADS = 8
SECRET_ID = "AKIDbenchmark0000000000000000000000"
SECRET_KEY = "benchmark-hunyuan-secret-key-0000"


def seed(env: dict[str, str], directory: Path, users: list[Any]) -> list[tuple[Any, str, str]]:
    """One request per user, awaiting the selection of its one stored 64 px image as the
    image stages leave it (rows and file); (user, request id, image id) for selectImage."""
    from app.tables import GeneratedImage, GenerationRequest, utcnow
    from providers.local import render_png
    from providers.storage import LocalStorage

    png = render_png("a brass robot toy", 1, 64, 64)
    storage = LocalStorage(
        settings_from({**env, "LUMI_DATA_DIR": str(directory)}).storage_dir, secret=b"-"
    )
    rows: list[Any] = []
    choices = []
    for user in users:
        request = GenerationRequest(
            user_id=user.id,
            prompt="a brass robot toy",
            image_count=1,
            image_width=64,
            image_height=64,
            optimize_prompt=False,
            status="IMAGE_COMPLETED",
            phase="AWAITING_SELECTION",
            step="images ready",
            progress=50.0,
            seq=0,
            phase_started_at=utcnow(),
        )
        image = GeneratedImage(
            request_id=request.id,
            index=0,
            prompt=request.prompt,
            seed=1,
            status="COMPLETED",
            storage_key=f"requests/{request.id}/images/{request.id}.png",
            width=64,
            height=64,
            content_type="image/png",
            provider="local",
        )
        storage._write(storage.path_for(str(image.storage_key)), png, "image/png")
        rows += [request, image]
        choices.append((user, request.id, image.id))
    insert_rows(str(env["LUMI_DATABASE_URL"]), rows)
    return choices


def epoch(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()


def run(opts: Options) -> list[Row]:
    jobs = opts.size(1000, 100)
    vendor_seconds = opts.size(60.0, 6.0)
    limit = vendor_seconds * 1.25
    with Tracked() as tracked:
        port = free_port()
        fake_log = data_dir(opts, "slow_vendors") / "fake-hunyuan.log"
        fake = start_module(
            tracked,
            "tests.bench.fake_vendor",
            *("--port", str(port), "--secret-id", SECRET_ID, "--secret-key", SECRET_KEY),
            *("--run-seconds", str(vendor_seconds)),
            log_path=fake_log,
        )
        fake_url = f"http://127.0.0.1:{port}"
        wait_http(f"{fake_url}/_fake/stats", fake, fake_log)
        extra = {
            "LUMI_MODEL_PROVIDERS": "hunyuan",
            "LUMI_HUNYUAN_SECRET_ID": SECRET_ID,
            "LUMI_HUNYUAN_SECRET_KEY": SECRET_KEY,
            "LUMI_HUNYUAN_ENDPOINT": fake_url,
            "LUMI_PROVIDER_CONCURRENCY": "hunyuan=100000",
            "LUMI_WORKER_THREADS": str(THREADS),
            "LUMI_IMAGE_SIZE": "64",
        }
        # the worker stops (inner) before the database and Redis keys go (outer)
        with production_env(opts, "slow", **extra) as env, Tracked() as inner:
            url = env["LUMI_DATABASE_URL"]
            users = make_users(jobs, "slow")
            insert_rows(url, users)
            log(f"slow vendors: {jobs} requests awaiting the selection of their image")
            choices = seed(env, data_dir(opts, "slow_vendors"), users)
            worker = start_worker(opts, inner, env, "slow_vendors")
            time.sleep(3)  # the worker is up and idle, as a deployed one would be
            meter = CpuMeter({"worker": [worker.pid], "fake_vendor": [fake.pid], **backend_pids()})
            log(f"slow vendors: selecting {jobs} images; each 3D job takes {vendor_seconds} s")
            with profiled(opts, worker.pid, "slow-vendors-worker"):
                meter.start()
                started = time.time()
                asyncio.run(select_images(env, choices))
                selected = time.time() - started
                finished = wait_for(
                    url,
                    "SELECT COUNT(*) FROM generation_requests"
                    " WHERE status IN ('COMPLETED', 'FAILED')",
                    jobs,
                    timeout=opts.size(200.0, 60.0),
                )
                cpu = meter.stop()
            details = _details(url, started, vendor_seconds)
            # every stage run: a start, each poll (the last one stores the files)
            stages = details["polls_total"] + jobs
            details["worker_cpu_ms_per_stage"] = round(
                1000 * cpu["worker"] * cpu["wall_seconds"] / max(stages, 1), 2
            )
            details.update(
                jobs=jobs,
                vendor_seconds=vendor_seconds,
                finished=finished,
                select_seconds=round(selected, 1),
                cpu_cores=cpu,
                vendor=httpx.get(f"{fake_url}/_fake/stats").json(),
            )
    log(f"slow vendors: {details}")
    wall = details["wall_seconds"]
    all_done = details["completed"] == jobs
    return [
        Row(
            "5 slow vendors",
            f"{jobs} 3D jobs of {vendor_seconds:.0f} s, wall time to all done"
            + ("" if all_done else f" ({details['completed']} done)"),
            wall if all_done else None,
            "s",
            floor=vendor_seconds,
            floor_label="vendor job time",
            target=f"≤{limit:.1f} s",
            met=all_done and wall is not None and wall <= limit,
            notes=details,
        )
    ]


def _details(url: str, started: float, vendor_seconds: float) -> dict[str, Any]:
    statuses = dict(query(url, "SELECT status, COUNT(*) FROM generation_requests GROUP BY status"))
    done = query(
        url,
        "SELECT r.completed_at, j.started_at, j.poll_count FROM generation_requests r"
        " JOIN generation_jobs j ON j.request_id = r.id AND j.kind = 'MODEL'"
        " WHERE r.status = 'COMPLETED'",
    )
    submitted = [epoch(s) - started for _, s, _ in done if s is not None]
    lags = [epoch(c) - epoch(s) - vendor_seconds for c, s, _ in done if c and s]
    ends = [epoch(c) - started for c, _, _ in done if c]
    polls = query(
        url, "SELECT COALESCE(SUM(poll_count), 0) FROM generation_jobs WHERE kind = 'MODEL'"
    )
    return {
        "completed": statuses.get("COMPLETED", 0),
        "statuses": statuses,
        "wall_seconds": round(max(ends), 2) if ends else None,
        "first_done_seconds": round(min(ends), 2) if ends else None,
        "last_job_claimed_seconds": round(max(submitted), 2) if submitted else None,
        "done_after_vendor_p50_seconds": round(percentile(lags, 50), 2),
        "done_after_vendor_p99_seconds": round(percentile(lags, 99), 2),
        "done_after_vendor_max_seconds": round(max(lags), 2) if lags else None,
        "polls_per_job": round(sum(p for _, _, p in done) / len(done), 1) if done else None,
        "polls_total": int(polls[0][0]),
    }
