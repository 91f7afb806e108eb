"""Production backends: two API processes and a worker process on MariaDB, Redis and S3."""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Iterator

import httpx
import pytest
import trimesh
from PIL import Image

from tests.conftest import (
    REDIS,
    Server,
    free_port,
    lumi,
    mariadb_database,
    require,
    start_server,
    stop_process,
    stop_server,
)
from tests.e2e.client import REQUEST_UPDATES, collect, create_request, data_of, ws_session

pytestmark = pytest.mark.e2e

DETAILS = """query D($id: ID!) { request(id: $id) {
  images { url } model { fileUrl } } }"""


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, moto_s3: dict[str, str]
) -> Iterator[tuple[Server, Server]]:
    require("Redis", REDIS)
    data_dir = tmp_path_factory.mktemp("cluster")
    worker_metrics_port = free_port()
    with mariadb_database(f"lumi_cluster_{os.getpid()}") as url:
        env = {
            **moto_s3,
            "LUMI_DATABASE_URL": url,
            "LUMI_BROKER": "redis",
            "LUMI_BUS": "redis",
            "LUMI_REDIS_NAMESPACE": f"lumi-test-{uuid.uuid4().hex[:8]}",
            "LUMI_AUTO_MIGRATE": "false",
            "LUMI_WORKER_METRICS_PORT": str(worker_metrics_port),
            # Table re-checks every 30 s: live events can only cross processes via Redis.
            "LUMI_SUBSCRIPTION_RECHECK_SECONDS": "30",
        }
        # Everything started is stopped, also when a later start fails: a worker left
        # running outlives the test session and works on other tests' queues.
        with contextlib.ExitStack() as started:
            worker = lumi(data_dir, data_dir / "worker.log", "worker", **env)
            started.callback(stop_process, worker)
            first = start_server(data_dir, name="api1", **env)
            started.callback(stop_server, first)
            second = start_server(data_dir, name="api2", **env)
            started.callback(stop_server, second)
            first.worker_metrics = f"http://127.0.0.1:{worker_metrics_port}/metrics"  # type: ignore[attr-defined]
            yield first, second


async def test_a_client_on_one_api_sees_every_event_of_a_request_made_on_another(
    cluster: tuple[Server, Server], moto_s3: dict[str, str]
) -> None:
    api1, api2 = cluster
    user = f"scale-{uuid.uuid4().hex[:6]}"
    async with ws_session(api2, user) as session:
        # Subscribe through API 2 before the request exists there: create it via API 1.
        created = await create_request(api1, user, imageCount=2, autoModel=True)
        events = await collect(
            session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0}, timeout=60
        )
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["status"] == "COMPLETED"

    details = (await data_of(api2, DETAILS, {"id": created["id"]}, user=user))["request"]
    # Files come straight from the bucket through presigned SigV4 URLs.
    assert all("X-Amz-Signature=" in i["url"] for i in details["images"])
    assert details["model"]["fileUrl"].startswith(moto_s3["LUMI_S3_ENDPOINT_URL"])
    async with httpx.AsyncClient(timeout=30) as client:
        for image in details["images"]:
            png = (await client.get(image["url"])).content
            Image.open(io.BytesIO(png)).verify()
        glb = await client.get(details["model"]["fileUrl"])
    mesh = trimesh.load(io.BytesIO(glb.content), file_type="glb", force="mesh")
    assert len(mesh.faces) > 0
    # the worker process serves its own metrics: its provider calls are counted there
    async with httpx.AsyncClient() as client:
        worker_metrics = (await client.get(api1.worker_metrics)).text  # type: ignore[attr-defined]
    assert 'lumi_provider_latency_seconds_count{operation="generate_image",provider="local"}' in (
        worker_metrics
    )


async def test_live_events_cross_processes_without_waiting_for_table_rechecks(
    cluster: tuple[Server, Server],
) -> None:
    """Table re-checks are 30 s apart and the wait is 20 s: only the bus can deliver."""
    api1, api2 = cluster
    user = f"live-{uuid.uuid4().hex[:6]}"
    created = await create_request(api1, user, imageCount=1, autoModel=False)
    async with ws_session(api2, user) as session:
        events = await collect(
            session,
            REQUEST_UPDATES,
            {"id": created["id"], "afterSeq": 0},
            until=lambda e: e["status"] == "IMAGE_COMPLETED",
            timeout=20,
        )
    assert events[-1]["status"] == "IMAGE_COMPLETED"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
