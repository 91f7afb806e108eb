"""3. Reads and likes of the model gallery under concurrent load from a separate process,
each beside a floor measured in the same run:

- the gallery page, `publicModels(first: 20, sort: LATEST | POPULAR)` with owner,
  likedByMe, favoritedByMe and preview URL, for a signed-in viewer and anonymously;
- a model's detail, `model(id)` with the viewer's fields, owner, files and URLs, for a
  signed-in viewer, cycling over 20 models;
- likes: `likeModel` and `unlikeModel` in turn by 64 users, each on a model of its own
  (16 connections, each cycling through 4 users).

Measured: `lumi serve` (one uvicorn process, MariaDB, Redis bus and broker) answering
POST /graphql. The database holds 100 public models of 30 owners; the viewer likes and
favorites some of them and 200 other users like others. A load process
(`tests/bench/httpload.py`) keeps 16 keep-alive connections busy, closed loop:
requests/s and p99 of the requests sent after a warm-up, and the server's CPU per
answer. With a response cache in the gateway (its `response_cache` counters on /metrics)
its hit rate during each load; and the invalidation latency: from sending a like to the
first anonymous gallery read that shows it.

Floor: `tests/bench/gallery_floor.py`, plain Starlette endpoints under uvicorn with the
same settings, returning the same JSON from the same database with one statement (one
transaction for a like). Both answers are compared field by field before the load.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from app.graphql.relay import global_id
from tests.bench.common import (
    CpuMeter,
    Options,
    Row,
    Tracked,
    backend_pids,
    cache_counters,
    data_dir,
    hit_rate,
    insert_rows,
    log,
    make_users,
    percentile,
    production_env,
    profiled,
    start_api,
    start_module,
    tokens_for,
    wait_http,
)
from tests.bench.httpload import post_request, run_load
from tests.conftest import free_port

GALLERY = """query Gallery($sort: ModelSort!) {
  publicModels(first: 20, sort: $sort) {
    edges { node { id name likeCount favoriteCount likedByMe favoritedByMe
                   owner { displayName } previewUrl } }
    pageInfo { hasNextPage endCursor }
  }
}"""
DETAIL = """query Detail($id: ID!) {
  model(id: $id) {
    id name description likeCount favoriteCount downloadCount likedByMe favoritedByMe
    owner { displayName } previewUrl fileUrl files { name contentType size url }
  }
}"""
LIKE = "mutation Like($id: ID!) { likeModel(id: $id) { id likeCount likedByMe } }"
UNLIKE = "mutation Unlike($id: ID!) { unlikeModel(id: $id) { id likeCount likedByMe } }"
CONCURRENCY = 16
TOGGLERS = 64  # users liking and unliking, 4 per connection


def seed(url: str) -> tuple[str, list[str], list[str]]:
    """The gallery's rows: the viewer's subject, the togglers' subjects, the model ids
    (latest first)."""
    from app.tables import Model, ModelInteraction, utcnow

    rng = random.Random(7)
    owners = make_users(30, "owner")
    viewer = make_users(1, "viewer")[0]
    fans = make_users(200, "fan")
    togglers = make_users(TOGGLERS, "toggler")
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
    insert_rows(url, [*owners, viewer, *fans, *togglers, *models, *interactions])
    return viewer.external_id, [t.external_id for t in togglers], [m.id for m in models]


@dataclass
class Scenario:
    """One load: each connection cycles through its (body, token) pairs; `path` is the
    floor's endpoint for the same operations."""

    label: str
    path: str
    cycles: list[list[tuple[bytes, str | None]]]
    cached: bool = True  # a read a response cache may answer
    target: float | None = None  # the least ratio to the floor's requests/s
    cpu_target_ms: float | None = None  # the most server CPU per answer


def _body(query: str, operation: str, **variables: Any) -> bytes:
    return json.dumps({"query": query, "operationName": operation, "variables": variables}).encode()


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def scenarios(viewer: str, togglers: list[str], model_ids: list[str]) -> list[Scenario]:
    found: list[Scenario] = []
    for signed_in in (True, False):
        for sort in ("LATEST", "POPULAR"):
            who = "signed in" if signed_in else "anonymous"
            found.append(
                Scenario(
                    f"gallery {sort} {who}",
                    "/gallery",
                    [[(_body(GALLERY, "Gallery", sort=sort), viewer if signed_in else None)]],
                    target=GALLERY_TARGET if signed_in else None,
                    cpu_target_ms=GALLERY_CPU_MS if signed_in else None,
                )
            )
    details = [_body(DETAIL, "Detail", id=global_id("Model", i)) for i in model_ids[:20]]
    found.append(
        Scenario(
            "model detail signed in",
            "/model",
            [[(body, viewer) for body in details[c:] + details[:c]] for c in range(CONCURRENCY)],
            target=DETAIL_TARGET,
        )
    )
    rng = random.Random(11)
    toggles: list[list[tuple[bytes, str | None]]] = [[] for _ in range(CONCURRENCY)]
    for i, token in enumerate(togglers):
        model = global_id("Model", rng.choice(model_ids))
        toggles[i % CONCURRENCY] += [
            (_body(LIKE, "Like", id=model), token),
            (_body(UNLIKE, "Unlike", id=model), token),
        ]
    found.append(Scenario("like/unlike toggle", "/like", toggles, cached=False, target=1.0))
    return found


GALLERY_TARGET, GALLERY_CPU_MS, DETAIL_TARGET = 2.0, 1.0, 2.0


def _urls_as_paths(node: dict[str, Any]) -> dict[str, Any]:
    """Signed URLs carry their expiry time and host: compare the paths."""
    node = dict(node)
    for key in ("previewUrl", "fileUrl"):
        if key in node:
            node[key] = httpx.URL(node[key] or "").path
    if "files" in node:
        node["files"] = [{**f, "url": httpx.URL(f["url"]).path} for f in node["files"]]
    return node


def _answer(url: str, body: bytes, token: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.post(url, content=body, headers=_headers(token)).json()
    if "errors" in answer:
        raise RuntimeError(f"{url} answered {answer['errors']}")
    data: dict[str, Any] = answer["data"]
    return data


def _compare(label: str, gateway: Any, floor: Any) -> None:
    if gateway != floor:
        raise RuntimeError(
            f"{label}: the floor does not answer what the gateway answers: "
            f"{str(gateway)[:400]} != {str(floor)[:400]}"
        )


def check_same_answers(api_url: str, floor_url: str, found: list[Scenario]) -> None:
    """Each read answered alike by both, field by field; a like and an unlike too."""
    for scenario in found:
        if scenario.path == "/like":
            continue
        body, token = scenario.cycles[0][0]
        gateway: Any = _answer(api_url, body, token)
        floor: Any = _answer(floor_url + scenario.path, body, token)
        if scenario.path == "/gallery":
            page, plain = gateway["publicModels"], floor["publicModels"]
            assert len(page["edges"]) == 20
            assert page["pageInfo"]["hasNextPage"] == plain["pageInfo"]["hasNextPage"]
            gateway = [_urls_as_paths(e["node"]) for e in page["edges"]]
            floor = [_urls_as_paths(e["node"]) for e in plain["edges"]]
        else:
            gateway, floor = _urls_as_paths(gateway["model"]), _urls_as_paths(floor["model"])
        _compare(scenario.label, gateway, floor)
    toggles = found[-1].cycles[0]
    (like, token), (unlike, _) = toggles[0], toggles[1]
    liked = _answer(api_url, like, token)
    unliked = _answer(floor_url + "/like", unlike, token)
    _compare("likeModel", liked, _answer(floor_url + "/like", like, token))
    _compare("unlikeModel", _answer(api_url, unlike, token), unliked)


def _load(
    opts: Options, scenario: Scenario, port: int, path: str, pid: int, which: str
) -> dict[str, Any]:
    requests = [
        [post_request("127.0.0.1", port, path, body, _headers(token)) for body, token in cycle]
        for cycle in scenario.cycles
    ]
    meter = CpuMeter({"server": [pid], **backend_pids()})
    label = f"{scenario.label} {which}"
    with profiled(opts, pid, "gallery-" + label.replace(" ", "-").replace("/", "-")):
        meter.start()
        result = run_load(
            "127.0.0.1",
            port,
            requests,
            concurrency=CONCURRENCY,
            warmup=opts.size(3.0, 1.0),
            duration=opts.size(15.0, 4.0),
        )
        cpu = meter.stop()
    result["cpu_cores"] = cpu
    # CPU per answer over the whole load (warm-up included, idle seconds cost nothing)
    result["server_cpu_ms_per_request"] = round(
        1000 * cpu["server"] * cpu["wall_seconds"] / result["requests_with_warmup"], 3
    )
    log(f"{label}: {result}")
    if result["failures"]:
        raise RuntimeError(
            f"{label}: {result['failures']} failed answers: {result['failure_sample']}"
        )
    return result


def invalidation_latency(api_url: str, token: str, model_ids: list[str]) -> dict[str, Any]:
    """From sending a like (or an unlike) to the first anonymous gallery read (LATEST,
    the model on its first page) that shows the new count, ms; five times each."""
    model = global_id("Model", model_ids[0])
    read = _body(GALLERY, "Gallery", sort="LATEST")
    samples, reads = [], []
    with httpx.Client(timeout=30) as client:

        def count() -> int:
            page = client.post(api_url, content=read, headers=_headers(None)).json()
            nodes = [e["node"] for e in page["data"]["publicModels"]["edges"]]
            return int(next(n["likeCount"] for n in nodes if n["id"] == model))

        client.post(api_url, content=_body(UNLIKE, "Unlike", id=model), headers=_headers(token))
        for turn in range(10):
            on = turn % 2 == 0
            expected = count() + (1 if on else -1)
            mutation = _body(LIKE, "Like", id=model) if on else _body(UNLIKE, "Unlike", id=model)
            started = time.perf_counter()
            client.post(api_url, content=mutation, headers=_headers(token)).raise_for_status()
            polls = 0
            while count() != expected:
                polls += 1
                if time.perf_counter() - started > 10:
                    raise RuntimeError("a like did not show in the gallery within 10 s")
            samples.append((time.perf_counter() - started) * 1000)
            reads.append(polls)
    return {
        "median_ms": percentile(samples, 50),
        "max_ms": max(samples),
        "samples_ms": [round(s, 2) for s in samples],
        "stale_reads": reads,
    }


def run(opts: Options) -> list[Row]:
    with production_env(opts, "gallery") as env, Tracked() as tracked:
        viewer_subject, toggler_subjects, model_ids = seed(env["LUMI_DATABASE_URL"])
        viewer, *togglers = tokens_for([viewer_subject, *toggler_subjects])
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
        found = scenarios(viewer, togglers, model_ids)
        check_same_answers(api.graphql, floor_url, found)

        api_port = int(api.url.rsplit(":", 1)[1])
        results = []
        for scenario in found:
            before = cache_counters(api.url)
            gateway = _load(opts, scenario, api_port, "/graphql", api.process.pid, "gateway")
            gateway["cache_hit_rate"] = hit_rate(before, cache_counters(api.url))
            plain = _load(opts, scenario, port, scenario.path, floor.pid, "floor")
            results.append((scenario, gateway, plain))
        invalidation = invalidation_latency(api.graphql, togglers[0], model_ids)
        log(f"invalidation: {invalidation}")
        metrics = sorted(cache_counters(api.url))
    rows = [row for result in results for row in _rows(*result)]
    rows.append(
        Row(
            "3 gallery",
            "like → next anonymous gallery read shows it, max of 10",
            invalidation["max_ms"],
            "ms",
            notes={**invalidation, "response_cache_series": metrics},
        )
    )
    return rows


def _rows(scenario: Scenario, gateway: dict[str, Any], plain: dict[str, Any]) -> list[Row]:
    notes = {"gateway": gateway, "floor": plain}
    ratio = gateway["rps"] / plain["rps"]
    cpu, floor_cpu = gateway["server_cpu_ms_per_request"], plain["server_cpu_ms_per_request"]
    rows = [
        Row(
            "3 gallery",
            f"{scenario.label} req/s, {CONCURRENCY} conns",
            gateway["rps"],
            "req/s",
            floor=plain["rps"],
            floor_label="plain Starlette",
            target=f"≥{scenario.target}x floor" if scenario.target else "-",
            met=ratio >= scenario.target if scenario.target else None,
            notes=notes,
        ),
        Row(
            "3 gallery",
            f"{scenario.label} p99",
            gateway["p99_ms"],
            "ms",
            floor=plain["p99_ms"],
            floor_label="plain Starlette",
        ),
        Row(
            "3 gallery",
            f"{scenario.label} server CPU per call",
            cpu,
            "ms",
            floor=floor_cpu,
            floor_label="plain Starlette",
            target=f"≤{scenario.cpu_target_ms} ms" if scenario.cpu_target_ms else "-",
            met=cpu <= scenario.cpu_target_ms if scenario.cpu_target_ms else None,
        ),
    ]
    if scenario.cached:
        rate = gateway["cache_hit_rate"]
        rows.append(
            Row(
                "3 gallery",
                f"{scenario.label} response cache hit rate",
                None if rate is None else 100 * rate,
                "%",
            )
        )
    return rows
