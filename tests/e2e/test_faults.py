"""Fault tests with real processes: worker processes on MariaDB and Redis, killed with
SIGKILL mid-job; vendors that answer 429, 503 or refuse; an impatient user's cancel."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    REDIS,
    SILICONFLOW_KEY,
    Server,
    lumi,
    mariadb_database,
    require,
    run_lumi,
    start_server,
    stop_process,
    stop_server,
)
from tests.e2e.client import REQUEST_UPDATES, collect, create_request, data_of, ws_session

pytestmark = pytest.mark.e2e

STATE = """query S($id: ID!) { request(id: $id) {
  status step images { id status } model { id }
  jobs { kind status attempt errorCode } } }"""
LEDGER = (
    """{ me { credits ledger(first: 50) { edges { node { kind reason amount requestId } } } } }"""
)


class Cluster:
    """An API process and the worker processes a test starts and kills."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir, self.env = data_dir, env
        self.api: Server = start_server(data_dir, name="api", **env)
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = self.data_dir / f"worker{len(self.workers)}.log"
        worker = lumi(self.data_dir, log, "worker", **self.env)
        self.workers.append(worker)
        return worker

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_lumi(self.data_dir, *args, **self.env)

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                stop_process(worker)
        stop_server(self.api)


@contextlib.contextmanager
def running_cluster(tmp_path: Path, **extra: str) -> Iterator[Cluster]:
    require("Redis", REDIS)
    with mariadb_database(f"lumi_faults_{os.getpid()}_{uuid.uuid4().hex[:6]}") as url:
        env = {
            "LUMI_DATABASE_URL": url,
            "LUMI_BROKER": "redis",
            "LUMI_BUS": "redis",
            "LUMI_REDIS_NAMESPACE": f"lumi-faults-{uuid.uuid4().hex[:8]}",
            "LUMI_WORKER_METRICS_PORT": "0",
            "LUMI_LOCAL_MODEL_LATENCY_SECONDS": "4",
            "LUMI_MODEL_POLL_INTERVAL_SECONDS": "0.3",
            "LUMI_STALL_SECONDS": "2",
            "LUMI_SWEEP_INTERVAL_SECONDS": "0.5",
            **extra,
        }
        running = Cluster(tmp_path, env)
        try:
            yield running
        finally:
            running.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as running:
        yield running


@pytest.fixture
def vendor(siliconflow: str, tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    """A cluster whose images come from the fake SiliconFlow, with one worker running."""
    httpx.post(f"{siliconflow}/_fake/reset")
    with running_cluster(
        tmp_path,
        LUMI_IMAGE_PROVIDERS="siliconflow",
        LUMI_SILICONFLOW_API_KEY=SILICONFLOW_KEY,
        LUMI_SILICONFLOW_BASE_URL=siliconflow,
        LUMI_LOCAL_MODEL_LATENCY_SECONDS="0.5",
        LUMI_RETRY_BASE_SECONDS="0.2",
        LUMI_JOB_MAX_ATTEMPTS="3",
    ) as running:
        running.start_worker()
        yield running, siliconflow


async def fake_vendor(base: str, path: str, body: dict[str, object] | None = None) -> Any:
    async with httpx.AsyncClient(base_url=base) as client:
        if body is None and path != "/_fake/reset":
            response = await client.get(path)
        else:
            response = await client.post(path, json=body or {})
    response.raise_for_status()
    return response.json()


async def script(base: str, *responses: dict[str, object]) -> None:
    await fake_vendor(base, "/_fake/script", {"responses": list(responses)})


async def vendor_calls(base: str) -> list[int]:
    return [call["status"] for call in (await fake_vendor(base, "/_fake/calls"))["calls"]]


async def until(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def charges(server: Server, user: str, request_id: str) -> list[tuple[str, str, int]]:
    me = (await data_of(server, LEDGER, user=user))["me"]
    return sorted(
        (e["node"]["kind"], e["node"]["reason"], e["node"]["amount"])
        for e in me["ledger"]["edges"]
        if e["node"]["requestId"] == request_id
    )


async def wait_for(server: Server, user: str, request_id: str, predicate, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (await data_of(server, STATE, {"id": request_id}, user=user))["request"]
        if predicate(state):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; last state {state}")


async def test_a_worker_killed_during_a_3d_job_costs_nothing_twice(cluster: Cluster) -> None:
    first = cluster.start_worker()
    user = f"kill-{uuid.uuid4().hex[:6]}"
    async with ws_session(cluster.api, user) as session:
        created = await create_request(cluster.api, user, imageCount=2, autoModel=True)
        request_id = created["id"]
        # Dramatiq alone would redeliver the dead worker's message only after 60 s.
        follow = asyncio.create_task(
            collect(session, REQUEST_UPDATES, {"id": request_id, "afterSeq": 0}, timeout=40)
        )
        await wait_for(
            cluster.api, user, request_id, lambda s: s["step"].startswith("generating 3D model")
        )
        vendor_done = time.monotonic() + 4
        await asyncio.sleep(2)
        first.send_signal(signal.SIGKILL)  # mid-job: the vendor is still working
        first.wait()
        cluster.start_worker()
        events = await follow
    late = time.monotonic() - vendor_done
    print(f"\nrecovery: COMPLETED {late:.1f} s after the vendor finished the 3D job")

    assert events[-1]["status"] == "COMPLETED"
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))  # every event once, in order
    state = (await data_of(cluster.api, STATE, {"id": request_id}, user=user))["request"]
    assert [i["status"] for i in state["images"]] == ["COMPLETED", "COMPLETED"]
    assert state["model"] is not None
    model_jobs = [j for j in state["jobs"] if j["kind"] == "MODEL"]
    assert [(j["status"], j["attempt"]) for j in model_jobs] == [("COMPLETED", 1)]
    me = (await data_of(cluster.api, LEDGER, user=user))["me"]
    charges = [
        (e["node"]["kind"], e["node"]["reason"], e["node"]["amount"])
        for e in me["ledger"]["edges"]
        if e["node"]["requestId"] == request_id
    ]
    assert sorted(charges) == [("DEBIT", "IMAGES", -2), ("DEBIT", "MODEL", -5)]
    library = await data_of(
        cluster.api, "{ myModels(first: 10) { edges { node { id } } } }", user=user
    )
    assert len(library["myModels"]["edges"]) == 1


async def test_a_vendor_answering_429_then_503_then_success_completes_after_retries(
    vendor: tuple[Cluster, str],
) -> None:
    cluster, fake = vendor
    await script(fake, {"status": 429, "retry_after": 1}, {"status": 503})
    user = f"retry-{uuid.uuid4().hex[:6]}"
    async with ws_session(cluster.api, user) as session:
        created = await create_request(cluster.api, user, imageCount=1, autoModel=True)
        events = await collect(
            session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0}, timeout=40
        )
    assert events[-1]["status"] == "COMPLETED"
    retries = [e for e in events if e["jobStatus"] == "RETRYING"]
    assert [(e["attempt"], e["errorCode"]) for e in retries] == [
        (1, "PROVIDER_RATE_LIMITED"),
        (2, "PROVIDER_UNAVAILABLE"),
    ]
    assert all(e["nextAttemptAt"] for e in retries)
    assert await vendor_calls(fake) == [429, 503, 200]
    state = (await data_of(cluster.api, STATE, {"id": created["id"]}, user=user))["request"]
    [image_job] = [j for j in state["jobs"] if j["kind"] == "IMAGE"]
    assert (image_job["status"], image_job["attempt"]) == ("COMPLETED", 3)
    assert await charges(cluster.api, user, created["id"]) == [
        ("DEBIT", "IMAGES", -1),
        ("DEBIT", "MODEL", -5),
    ]


async def test_a_permanent_failure_fails_refunds_once_and_can_be_requeued(
    vendor: tuple[Cluster, str],
) -> None:
    cluster, fake = vendor
    await script(
        fake, {"status": 400, "message": "prompt rejected by content policy", "repeat": True}
    )
    user = f"dead-{uuid.uuid4().hex[:6]}"
    async with ws_session(cluster.api, user) as session:
        created = await create_request(cluster.api, user, imageCount=2, autoModel=True)
        request_id = created["id"]
        events = await collect(session, REQUEST_UPDATES, {"id": request_id, "afterSeq": 0})
    assert [e["status"] for e in events[-2:]] == ["IMAGE_FAILED", "FAILED"]
    assert events[-1]["errorCode"] == "PROVIDER_REJECTED"
    assert await vendor_calls(fake) == [400, 400]  # no retry of a refusal
    assert await charges(cluster.api, user, request_id) == [
        ("DEBIT", "IMAGES", -2),
        ("DEBIT", "MODEL", -5),
        ("REFUND", "IMAGES", 2),
        ("REFUND", "MODEL", 5),
    ]

    dead = cluster.command("queue", "dead")
    assert dead.returncode == 0, dead.stderr
    letters = [line for line in dead.stdout.splitlines() if request_id in line]
    assert len(letters) == 2
    assert all("generate_image" in line and "PROVIDER_REJECTED" in line for line in letters)
    status = cluster.command("queue", "status")
    assert "dead letters" in status.stdout

    await fake_vendor(fake, "/_fake/reset")  # the vendor accepts the prompt again
    requeued = cluster.command("queue", "requeue", "--all")
    assert requeued.returncode == 0, requeued.stderr
    assert "requeued" in requeued.stdout
    state = await wait_for(cluster.api, user, request_id, lambda s: s["status"] == "COMPLETED")
    assert [i["status"] for i in state["images"]] == ["COMPLETED", "COMPLETED"]
    assert "0 dead letter(s)" in cluster.command("queue", "dead").stdout
    final = await charges(cluster.api, user, request_id)
    assert final.count(("DEBIT", "IMAGES", -2)) == 2  # the requeue paid again
    assert final.count(("REFUND", "IMAGES", 2)) == 1  # and the refund happened once


async def test_cancel_during_a_slow_vendor_call_is_seen_within_two_seconds(
    vendor: tuple[Cluster, str],
) -> None:
    cluster, fake = vendor
    await script(fake, {"status": 200, "delay": 4})
    user = f"cancel-{uuid.uuid4().hex[:6]}"
    async with ws_session(cluster.api, user) as session:
        created = await create_request(cluster.api, user, imageCount=1)
        request_id = created["id"]
        follow = asyncio.create_task(
            collect(session, REQUEST_UPDATES, {"id": request_id, "afterSeq": 0}, timeout=30)
        )
        await until(lambda: vendor_calls(fake))  # the vendor call is in flight now
        asked = time.monotonic()
        await data_of(
            cluster.api,
            "mutation C($id: ID!) { cancelRequest(id: $id) { status } }",
            {"id": request_id},
            user=user,
        )
        events = await follow
        seen = time.monotonic() - asked
    print(f"\ncancel: CANCELLED reached the subscriber {seen * 1000:.0f} ms after the mutation")
    assert events[-1]["status"] == "CANCELLED"
    assert seen < 2
    await asyncio.sleep(5)  # the slow call has answered by now
    state = (await data_of(cluster.api, STATE, {"id": request_id}, user=user))["request"]
    after = await data_of(
        cluster.api, "query Q($id: ID!) { request(id: $id) { seq } }", {"id": request_id}, user=user
    )
    assert after["request"]["seq"] == events[-1]["seq"]  # no event after CANCELLED
    assert state["status"] == "CANCELLED"
    assert [i["status"] for i in state["images"]] != ["COMPLETED"]
    assert await charges(cluster.api, user, request_id) == [
        ("DEBIT", "IMAGES", -1),
        ("REFUND", "IMAGES", 1),
    ]


async def test_an_embedded_restart_resumes_what_was_in_flight(tmp_path: Path) -> None:
    """Embedded mode keeps its queue in memory: a killed server loses every message.
    The first sweep of the next start finds the work in the database and resumes it."""
    env = {"LUMI_LOCAL_LATENCY_SECONDS": "1.5", "LUMI_WORKER_THREADS": "1"}
    server = start_server(tmp_path, name="before", **env)
    user = f"restart-{uuid.uuid4().hex[:6]}"
    try:
        created = await create_request(server, user, imageCount=3, autoModel=True)
        request_id = created["id"]
        await wait_for(server, user, request_id, lambda s: "generating images" in s["step"])
    finally:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    restarted = start_server(tmp_path, name="after", **env)
    try:
        started = time.monotonic()
        state = await wait_for(
            restarted, user, request_id, lambda s: s["status"] == "COMPLETED", timeout=40
        )
        print(f"\nembedded restart: COMPLETED {time.monotonic() - started:.1f} s after restart")
        assert [i["status"] for i in state["images"]] == ["COMPLETED"] * 3
        assert state["model"] is not None
        assert await charges(restarted, user, request_id) == [
            ("DEBIT", "IMAGES", -3),
            ("DEBIT", "MODEL", -5),
        ]
        async with ws_session(restarted, user) as session:
            events = await collect(session, REQUEST_UPDATES, {"id": request_id, "afterSeq": 0})
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert [e["status"] for e in events].count("COMPLETED") == 1
    finally:
        stop_server(restarted)
