"""Operators' view: Prometheus metrics, JSON log lines with request ids, no secrets."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.observability import redact
from tests.conftest import (
    REDIS,
    Server,
    lumi_listening,
    require,
    run_lumi,
    start_server,
    stop_process,
    stop_server,
    token_for,
)
from tests.e2e.client import REQUEST_UPDATES, collect, create_request, ws_session

pytestmark = pytest.mark.e2e

CREATE = 'mutation { createRequest(input: {prompt: "a lamp", imageCount: 1}) { id } }'
# Durations of operations with these names are labelled by name; any other is `other`.
KNOWN_NAMES = ("Create", "Follow")
API_ONLY = (
    "lumi_http_request_duration_seconds",
    "lumi_graphql_operation_duration_seconds",
    "lumi_active_subscriptions",
)


@pytest.fixture(scope="module")
def chatty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("observed"),
        log_level="info",
        LUMI_METRICS_OPERATION_NAMES=",".join(KNOWN_NAMES),
    )
    yield server
    stop_server(server)


def metric(text: str, sample: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith((sample + "{", sample + " ")):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {sample} {labels}")


async def test_metrics_cover_http_graphql_events_jobs_phases_and_providers(
    chatty_server: Server,
) -> None:
    user = f"m-{uuid.uuid4().hex[:6]}"
    created = await create_request(chatty_server, user, imageCount=2, autoModel=True)
    async with ws_session(chatty_server, user) as session:
        await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{chatty_server.url}/metrics")
    assert response.status_code == 200
    text = response.text
    assert metric(text, "lumi_http_request_duration_seconds_count", route="/graphql") >= 1
    assert (
        metric(
            text, "lumi_graphql_operation_duration_seconds_count", type="mutation", name="Create"
        )
        >= 1
    )
    assert metric(text, "lumi_events_published_total") >= 10
    assert metric(text, "lumi_events_delivered_total") >= 10
    assert metric(text, "lumi_active_subscriptions") == 0
    assert metric(text, "lumi_jobs", kind="IMAGE", status="COMPLETED") == 2
    assert metric(text, "lumi_phase_duration_seconds_count", phase="IMAGE_GENERATION") >= 1
    assert metric(text, "lumi_phase_duration_seconds_count", phase="MODEL_GENERATION") >= 1
    assert (
        metric(
            text,
            "lumi_provider_latency_seconds_count",
            provider="local",
            operation="generate_image",
        )
        == 2
    )
    assert metric(text, "lumi_queue_depth", queue="default") >= 0


def label_values(text: str, sample: str, label: str) -> set[str]:
    return {
        dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))[label]
        for line in text.splitlines()
        if line.startswith(sample + "{")
    }


async def test_client_chosen_operation_names_and_methods_cannot_multiply_the_series(
    chatty_server: Server,
) -> None:
    names = [f"Probe{uuid.uuid4().hex}" for _ in range(150)]
    async with httpx.AsyncClient(timeout=30) as client:
        for name in names:
            body = {"query": f"query {name} {{ __typename }}", "operationName": name}
            assert (await client.post(chatty_server.graphql, json=body)).status_code == 200
        for method in ("FOO", "PROPFIND"):
            await client.request(method, chatty_server.graphql)
        text = (await client.get(f"{chatty_server.url}/metrics")).text
    durations = "lumi_graphql_operation_duration_seconds_count"
    assert label_values(text, durations, "name") <= {*KNOWN_NAMES, "other", "anonymous"}
    assert metric(text, durations, type="query", name="other") >= 150
    methods = label_values(text, "lumi_http_request_duration_seconds_count", "method")
    assert "other" in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


async def test_metrics_show_the_process_and_no_created_series(chatty_server: Server) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"{chatty_server.url}/metrics")).text
    assert metric(text, "process_resident_memory_bytes") > 0
    assert metric(text, "process_open_fds") > 0
    assert "python_info{" in text
    assert [line for line in text.splitlines() if "_created" in line] == []


def test_a_worker_serves_its_own_and_the_process_metrics_but_no_api_ones(tmp_path: Path) -> None:
    require("Redis", REDIS)
    env = {"LUMI_BROKER": "redis", "LUMI_REDIS_NAMESPACE": f"lumi-test-{uuid.uuid4().hex[:8]}"}
    assert run_lumi(tmp_path, "migrate", **env).returncode == 0
    log = tmp_path / "worker.log"
    worker, port = lumi_listening(
        tmp_path, log, "LUMI_WORKER_METRICS_PORT", "/metrics", "worker", **env
    )
    try:
        text = scrape(f"http://127.0.0.1:{port}/metrics", worker, log)
    finally:
        stop_process(worker)
    assert "# TYPE lumi_provider_latency_seconds histogram" in text
    assert metric(text, "process_resident_memory_bytes") > 0
    assert [name for name in API_ONLY if name in text] == []
    assert [line for line in text.splitlines() if "_created" in line] == []


def scrape(url: str, process: subprocess.Popen[bytes], log: Path) -> str:
    """The text of `url` once the process serves it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url, timeout=5).text
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered: {log.read_text()}")


async def test_log_lines_are_json_and_carry_the_request_id_into_the_stages(
    chatty_server: Server,
) -> None:
    user = f"l-{uuid.uuid4().hex[:6]}"
    trace = f"trace-{uuid.uuid4().hex[:8]}"
    token = token_for(user)
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            chatty_server.graphql,
            json={"query": CREATE},
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": trace},
        )
        assert response.headers["x-request-id"] == trace
        request_id = response.json()["data"]["createRequest"]["id"]
    async with ws_session(chatty_server, user) as session:
        await collect(
            session,
            REQUEST_UPDATES,
            {"id": request_id, "afterSeq": 0},
            until=lambda e: e["status"] == "IMAGE_COMPLETED",
        )
    log_text = await asyncio.to_thread(Path(chatty_server.log).read_text)
    # Every log line is one JSON object (the start-up banner with the dev token is not a
    # log line: it is printed for the person who ran `make run`).
    lines = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    stages = [e for e in lines if e.get("request_id") == trace and e["logger"] == "workers.actors"]
    assert {"optimize_prompt", "generate_image"} <= {e["message"].split()[1] for e in stages}
    assert token not in log_text


def test_secrets_are_redacted_from_log_text() -> None:
    jwt = token_for("someone")
    text = redact(
        f"auth Bearer {jwt} raw {jwt} url /files/a?expires=1&signature=deadbeef "
        "X-Amz-Signature=abc123 password=hunter2"
    )
    for secret in (jwt, "deadbeef", "abc123", "hunter2"):
        assert secret not in text
