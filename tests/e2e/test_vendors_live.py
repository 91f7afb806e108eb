"""The pipeline on real vendors' shapes: the README's settings example against the fakes,
and Hunyuan's concurrency limit held across two worker processes (MariaDB, Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, SILICONFLOW_KEY
from tests.e2e.client import REQUEST_UPDATES, collect, create_request, data_of, ws_session
from tests.e2e.test_faults import Cluster, fake_vendor, running_cluster
from tests.fakes.hunyuan import start_fake_hunyuan

pytestmark = pytest.mark.e2e

DASHSCOPE_KEY = "sk-fake-dashscope-key-42"
HUNYUAN_ID = "AKIDfakeLumiTest0001"
HUNYUAN_KEY = "fake-hunyuan-secret-key-0042"
RESULT = """query R($id: ID!) { request(id: $id) {
  status step images { provider status }
  model { provider format files { name contentType size url } }
  jobs { kind status attempt } } }"""


def documented_settings() -> dict[str, str]:
    """The README's example of switching to real vendors, as KEY=VALUE pairs."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Vendors", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's Vendors section lost its settings example"
    pairs = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return dict(pair.split("=", 1) for pair in pairs if pair)


@contextlib.contextmanager
def vendors(
    tmp_path: Path, *, hunyuan_run_seconds: float, images: bool = True
) -> Iterator[dict[str, str]]:
    """The fake vendors on loopback; the settings that point the gateway at them."""
    with contextlib.ExitStack() as stack:

        def started(pair: tuple[str, Any]) -> str:
            url, stop = pair
            stack.callback(stop)
            return url

        hunyuan = started(
            start_fake_hunyuan(
                HUNYUAN_ID,
                HUNYUAN_KEY,
                run_seconds=hunyuan_run_seconds,
                log=tmp_path / "hunyuan.log",
            )
        )
        settings = {"hunyuan": hunyuan, "LUMI_HUNYUAN_ENDPOINT": hunyuan}
        if images:
            from tests.fakes.dashscope import start_fake_dashscope
            from tests.fakes.openai_compat import start_fake_openai_compat

            chat = "/compatible-mode/v1/chat/completions"
            qwen_log = tmp_path / "qwen.log"
            qwen = started(start_fake_openai_compat(DASHSCOPE_KEY, chat_path=chat, log=qwen_log))
            dashscope_log = tmp_path / "dashscope.log"
            dashscope = started(start_fake_dashscope(DASHSCOPE_KEY, log=dashscope_log))
            settings |= {
                "qwen": qwen,
                "dashscope": dashscope,
                "LUMI_QWEN_BASE_URL": f"{qwen}/compatible-mode",
                "LUMI_DASHSCOPE_BASE_URL": dashscope,
            }
        yield settings


def secrets_in_logs(directory: Path, secrets: list[str]) -> list[str]:
    found = []
    for log in directory.glob("*.log"):
        if log.stem in ("qwen", "dashscope", "hunyuan", "fake"):
            continue  # the fakes' own logs
        text = log.read_text(errors="replace")
        found += [f"{log.name}: {secret[:6]}..." for secret in secrets if secret in text]
        if "Signature=" in text:
            found.append(f"{log.name}: a TC3 signature")
    return found


@pytest.fixture
def documented(tmp_path: Path, siliconflow: str) -> Iterator[tuple[Cluster, dict[str, str]]]:
    """A cluster configured by the README's example, its vendors being the fakes; the
    first image vendor (SiliconFlow) answers 503 to everything."""
    example = documented_settings()
    assert example["LUMI_LLM_PROVIDERS"] == "qwen,local"
    assert example["LUMI_IMAGE_PROVIDERS"] == "siliconflow,dashscope"
    assert example["LUMI_MODEL_PROVIDERS"] == "hunyuan"
    httpx.post(f"{siliconflow}/_fake/reset").raise_for_status()
    script = {"responses": [{"status": 503, "repeat": True}]}
    httpx.post(f"{siliconflow}/_fake/script", json=script).raise_for_status()
    keys = {
        "LUMI_SILICONFLOW_API_KEY": SILICONFLOW_KEY,
        "LUMI_DASHSCOPE_API_KEY": DASHSCOPE_KEY,
        "LUMI_HUNYUAN_SECRET_ID": HUNYUAN_ID,
        "LUMI_HUNYUAN_SECRET_KEY": HUNYUAN_KEY,
    }
    assert set(keys) <= set(example), "the example must name every key it needs"
    with vendors(tmp_path, hunyuan_run_seconds=2.5) as fakes:
        env = {
            **example,
            **keys,
            "LUMI_SILICONFLOW_BASE_URL": siliconflow,
            **{k: v for k, v in fakes.items() if k.startswith("LUMI_")},
            "LUMI_HUNYUAN_TYPICAL_SECONDS": "3",
            "LUMI_BREAKER_THRESHOLD": "2",
            "LUMI_RETRY_BASE_SECONDS": "0.2",
        }
        with running_cluster(tmp_path, **env) as cluster:
            cluster.start_worker()
            yield cluster, fakes


async def test_the_documented_settings_run_the_pipeline_on_the_vendors(
    documented: tuple[Cluster, dict[str, str]], tmp_path: Path
) -> None:
    cluster, fakes = documented
    user = f"vendors-{uuid.uuid4().hex[:6]}"
    async with ws_session(cluster.api, user) as session:
        created = await create_request(
            cluster.api, user, imageCount=2, autoModel=True, modelFormat="OBJ"
        )
        events = await collect(
            session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0}, timeout=60
        )
    result = (await data_of(cluster.api, RESULT, {"id": created["id"]}, user=user))["request"]
    chat_calls = (await fake_vendor(fakes["qwen"], "/_fake/calls"))["calls"]
    hunyuan_calls = (await fake_vendor(fakes["hunyuan"], "/_fake/calls"))["calls"]

    assert events[-1]["status"] == "COMPLETED", events[-1]
    assert [c["status"] for c in chat_calls] == [200]  # Qwen optimized the prompt
    assert result["images"] == [{"provider": "dashscope", "status": "COMPLETED"}] * 2
    assert [c["outcome"] for c in hunyuan_calls if c["outcome"] != "ok"] == []
    model = result["model"]
    assert (model["provider"], model["format"]) == ("hunyuan", "OBJ")
    assert {f["name"] for f in model["files"]} >= {"model.obj", "material.mtl", "texture.png"}
    building = [e for e in events if e["status"] == "MODEL_GENERATING" and e["progress"]]
    assert any(e["progressIsEstimate"] for e in building), "Hunyuan gives no percentage"
    figures = [e["progress"] for e in events]
    assert figures == sorted(figures), "progress went backwards"

    await fake_vendor(fakes["hunyuan"], "/_fake/reset")  # its result URLs are dead now
    [obj] = [f for f in model["files"] if f["name"] == "model.obj"]
    async with httpx.AsyncClient(base_url=cluster.api.url) as client:
        download = await client.get(obj["url"])
    assert download.status_code == 200
    assert b"\nv " in download.content

    leaked = secrets_in_logs(tmp_path, [SILICONFLOW_KEY, DASHSCOPE_KEY, HUNYUAN_KEY])
    assert leaked == []


LIMIT = 3


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, str]]]:
    """Two worker processes sharing Redis, 3D jobs on the fake Hunyuan limited to 3."""
    with vendors(tmp_path, hunyuan_run_seconds=1.5, images=False) as fakes:
        env = {
            "LUMI_MODEL_PROVIDERS": "hunyuan",
            "LUMI_HUNYUAN_SECRET_ID": HUNYUAN_ID,
            "LUMI_HUNYUAN_SECRET_KEY": HUNYUAN_KEY,
            "LUMI_HUNYUAN_ENDPOINT": fakes["LUMI_HUNYUAN_ENDPOINT"],
            "LUMI_PROVIDER_CONCURRENCY": f"hunyuan={LIMIT}",
            "LUMI_LOCAL_LATENCY_SECONDS": "0",
        }
        with running_cluster(tmp_path, **env) as cluster:
            cluster.start_worker()
            cluster.start_worker()
            yield cluster, fakes


async def test_hunyuan_never_runs_more_than_its_limit_across_two_workers(
    two_workers: tuple[Cluster, dict[str, str]],
) -> None:
    cluster, fakes = two_workers
    requests = 10
    made = [
        (user, await create_request(cluster.api, user, imageCount=1, autoModel=True))
        for user in (f"slots-{i}-{uuid.uuid4().hex[:4]}" for i in range(requests))
    ]
    steps, finals = await watch(cluster, made, timeout=90)
    stats = await fake_vendor(fakes["hunyuan"], "/_fake/stats")
    calls = (await fake_vendor(fakes["hunyuan"], "/_fake/calls"))["calls"]

    assert [state["status"] for state in finals] == ["COMPLETED"] * requests
    assert stats["jobs"] == requests  # one vendor job per request, none submitted twice
    assert stats["max_concurrent_seen"] == LIMIT  # used to the full, never beyond
    assert [c for c in calls if c["outcome"] != "ok"] == []  # the vendor never refused one
    model_jobs = [j for state in finals for j in state["jobs"] if j["kind"] == "MODEL"]
    assert {(j["status"], j["attempt"]) for j in model_jobs} == {("COMPLETED", 1)}
    assert any("waiting for a free slot at hunyuan" in step for step in steps)


async def watch(
    cluster: Cluster, made: list[tuple[str, dict[str, Any]]], *, timeout: float
) -> tuple[set[str], list[dict[str, Any]]]:
    """Every step the requests showed while running, and their final states."""
    steps: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        states = [
            (await data_of(cluster.api, RESULT, {"id": request["id"]}, user=user))["request"]
            for user, request in made
        ]
        steps |= {state["step"] for state in states}
        if all(state["status"] in ("COMPLETED", "FAILED") for state in states):
            return steps, states
        assert time.monotonic() < deadline, [s["status"] for s in states]
        await asyncio.sleep(0.1)
