"""3. Query throughput: a gallery page of 20 public models with owner, likedByMe,
favoritedByMe and preview URL, under concurrent load from a separate process.

Measured: `lumi serve` (one uvicorn process, MariaDB, Redis bus and broker) answering
POST /graphql `publicModels(first: 20)` for a signed-in viewer. The database holds 100
public models of 30 owners; the viewer likes and favorites some of them and 200 other
users like others. A load process (`tests/bench/httpload.py`) keeps 16 keep-alive
connections busy, closed loop: requests/s and p99 of the requests sent after a warm-up.

Floor: `tests/bench/gallery_floor.py`, a plain Starlette endpoint under uvicorn with the
same settings, returning the same JSON from the same database with one joined SELECT.
Both answers are compared field by field before the load starts.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
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
    production_env,
    profiled,
    start_api,
    start_module,
    tokens_for,
    wait_http,
)
from tests.bench.httpload import post_request, run_load
from tests.conftest import free_port

QUERY = """query Gallery {
  publicModels(first: 20) {
    edges { node { id name likeCount favoriteCount likedByMe favoritedByMe
                   owner { displayName } previewUrl } }
    pageInfo { hasNextPage endCursor }
  }
}"""
CONCURRENCY = 16
TARGET_RATIO = 0.5


def seed(url: str) -> str:
    """The gallery's rows; the viewer's subject."""
    from app.tables import Model, ModelInteraction, utcnow

    rng = random.Random(7)
    owners = make_users(30, "owner")
    viewer = make_users(1, "viewer")[0]
    fans = make_users(200, "fan")
    now = utcnow()
    models = [
        Model(
            owner_id=owners[i % len(owners)].id,
            name=f"Benchmark model {i}",
            description="a brass robot toy",
            file_key=f"models/bench/{i}.glb",
            preview_key=f"models/bench/{i}-preview.png",
            file_size=123_456,
            provider="local",
            visibility="PUBLIC",
            published_at=now - timedelta(minutes=i + 1),
        )
        for i in range(100)
    ]
    interactions = []
    for i, model in enumerate(models):
        if i % 3 == 0:
            interactions.append(ModelInteraction(user_id=viewer.id, model_id=model.id, type="LIKE"))
        if i % 4 == 0:
            interactions.append(
                ModelInteraction(user_id=viewer.id, model_id=model.id, type="FAVORITE")
            )
    for fan in fans:
        for model in rng.sample(models, 5):
            interactions.append(ModelInteraction(user_id=fan.id, model_id=model.id, type="LIKE"))
        model = rng.choice(models)
        interactions.append(ModelInteraction(user_id=fan.id, model_id=model.id, type="FAVORITE"))
    for model in models:
        mine = [x for x in interactions if x.model_id == model.id]
        model.like_count = sum(x.type == "LIKE" for x in mine)
        model.favorite_count = sum(x.type == "FAVORITE" for x in mine)
        model.popularity = 2 * model.like_count + 3 * model.favorite_count
    insert_rows(url, [*owners, viewer, *fans, *models, *interactions])
    return viewer.external_id


def _comparable(page: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [dict(edge["node"]) for edge in page["edges"]]
    for node in nodes:  # signed URLs carry their expiry time and host: compare the path
        node["previewUrl"] = httpx.URL(node["previewUrl"] or "").path
    return nodes


def _load(
    opts: Options, label: str, port: int, path: str, body: bytes, token: str, pid: int
) -> dict[str, Any]:
    request = post_request(
        "127.0.0.1",
        port,
        path,
        body,
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    meter = CpuMeter({"server": [pid], **backend_pids()})
    with profiled(opts, pid, f"gallery-{label}"):
        meter.start()
        result = run_load(
            "127.0.0.1",
            port,
            request,
            concurrency=CONCURRENCY,
            warmup=opts.size(3.0, 1.0),
            duration=opts.size(15.0, 4.0),
        )
        cpu = meter.stop()
    result["cpu_cores"] = cpu
    # CPU per answer over the whole load (warm-up included, idle seconds cost nothing)
    result["server_cpu_ms_per_request"] = round(
        1000 * cpu["server"] * cpu["wall_seconds"] / result["requests_with_warmup"], 2
    )
    log(f"gallery {label}: {result}")
    if result["failures"]:
        raise RuntimeError(
            f"{label}: {result['failures']} failed answers: {result['failure_sample']}"
        )
    return result


def run(opts: Options) -> list[Row]:
    with production_env(opts, "gallery") as env, Tracked() as tracked:
        subject = seed(env["LUMI_DATABASE_URL"])
        token = tokens_for([subject])[0]
        api = start_api(opts, tracked, env, "gallery")
        port = free_port()
        floor_log = data_dir(opts, "gallery") / "floor.log"
        floor_env = {k: v for k, v in env.items() if k != "LUMI_LOG_LEVEL"}
        floor_env["LUMI_DATA_DIR"] = str(data_dir(opts, "gallery"))
        floor = start_module(
            tracked,
            "tests.bench.gallery_floor",
            *("--port", str(port), "--log-level", opts.log_level),
            log_path=floor_log,
            env=floor_env,
        )
        floor_url = f"http://127.0.0.1:{port}"
        wait_http(f"{floor_url}/health", floor, floor_log)

        body = json.dumps({"query": QUERY, "operationName": "Gallery"}).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        answer = httpx.post(api.graphql, content=body, headers=headers, timeout=30).json()
        if "errors" in answer:
            raise RuntimeError(f"the gateway answered {answer['errors']}")
        plain = httpx.post(f"{floor_url}/gallery", content=body, headers=headers).json()
        gateway_page, floor_page = answer["data"]["publicModels"], plain["data"]["publicModels"]
        if _comparable(gateway_page) != _comparable(floor_page):
            raise RuntimeError(
                "the floor does not answer what the gateway answers: "
                f"{_comparable(gateway_page)[:2]} != {_comparable(floor_page)[:2]}"
            )
        assert len(gateway_page["edges"]) == 20
        assert any(e["node"]["likedByMe"] for e in gateway_page["edges"])

        api_port = int(api.url.rsplit(":", 1)[1])
        gateway = _load(opts, "gateway", api_port, "/graphql", body, token, api.process.pid)
        plain_result = _load(opts, "floor", port, "/gallery", body, token, floor.pid)
    notes = {"gateway": gateway, "floor": plain_result}
    ratio = gateway["rps"] / plain_result["rps"]
    return [
        Row(
            "3 gallery",
            f"publicModels(first: 20) req/s, {CONCURRENCY} conns",
            gateway["rps"],
            "req/s",
            floor=plain_result["rps"],
            floor_label="plain Starlette",
            target=f"≥{TARGET_RATIO}x floor",
            met=ratio >= TARGET_RATIO,
            notes=notes,
        ),
        Row(
            "3 gallery",
            "p99 under that load",
            gateway["p99_ms"],
            "ms",
            floor=plain_result["p99_ms"],
            floor_label="plain Starlette",
            notes=notes,
        ),
    ]
