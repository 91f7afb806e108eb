"""Vendors in the pipeline: failover, per-request choice, concurrency slots, formats."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trimesh
from sqlmodel import col, select

from app.bus import InProcessBus
from app.deps import Deps, build_deps
from app.migrate import upgrade_async
from app.requests.stages import Status
from app.tables import GeneratedImage, GenerationJob, Model
from tests.conftest import SILICONFLOW_KEY, RecordingQueue, make_settings
from tests.graphql.client import code, data, execute
from tests.requests.test_cancel_and_idempotency import deliver_one
from tests.workers.test_pipeline import a_viewer, deliver, request_row, submit
from tests.workers.test_reliability import recorded


@pytest.fixture
async def vendor_deps(tmp_path: Path, siliconflow: str) -> AsyncIterator[Deps]:
    """SiliconFlow first, the offline vendor second, and a breaker quick to open."""
    async with httpx.AsyncClient() as client:
        await client.post(f"{siliconflow}/_fake/reset")
    settings = make_settings(
        tmp_path,
        image_providers="siliconflow,local",
        siliconflow_api_key=SILICONFLOW_KEY,
        siliconflow_base_url=siliconflow,
        breaker_threshold=2,
        breaker_cooldown_seconds=0.5,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade_async(settings.resolved_database_url)
    deps = build_deps(settings, bus=InProcessBus(), queue=RecordingQueue())
    yield deps
    await deps.aclose()


async def image_providers(deps: Deps, request_id: str) -> list[str | None]:
    async with deps.db.read() as session:
        rows = await session.execute(
            select(GeneratedImage.provider)
            .where(col(GeneratedImage.request_id) == request_id)
            .order_by(col(GeneratedImage.index))
        )
    return list(rows.scalars())


async def vendor_calls(base: str) -> list[int]:
    async with httpx.AsyncClient() as client:
        calls = (await client.get(f"{base}/_fake/calls")).json()["calls"]
    return [call["status"] for call in calls]


async def test_failover_serves_from_the_secondary_and_a_probe_closes_the_circuit(
    vendor_deps: Deps, siliconflow: str
) -> None:
    # The breaker's clock moves only when the test says: a busy machine's slow stages
    # must not end the cool-down early.
    now = [0.0]
    for breaker in vendor_deps.providers.image.breakers.values():
        breaker.clock = lambda: now[0]
    async with httpx.AsyncClient() as client:
        await client.post(
            f"{siliconflow}/_fake/script", json={"responses": [{"status": 503, "repeat": True}]}
        )
    viewer = await a_viewer(vendor_deps)
    first = await submit(vendor_deps, viewer, image_count=4, optimize_prompt=False)
    await deliver(vendor_deps)
    assert (await request_row(vendor_deps, first)).status == Status.IMAGE_COMPLETED
    assert await image_providers(vendor_deps, first) == ["local"] * 4
    assert await vendor_calls(siliconflow) == [503, 503]  # then its circuit opened
    assert vendor_deps.providers.image.breakers["siliconflow"].state == "OPEN"

    async with httpx.AsyncClient() as client:
        await client.post(f"{siliconflow}/_fake/reset")  # the vendor is back
    now[0] += 0.6  # the cool-down is over: the next call probes it
    second = await submit(vendor_deps, viewer, image_count=2, optimize_prompt=False)
    await deliver(vendor_deps)
    assert await image_providers(vendor_deps, second) == ["siliconflow"] * 2
    assert vendor_deps.providers.image.breakers["siliconflow"].state == "CLOSED"


async def test_a_chosen_vendor_is_used_without_failover(
    vendor_deps: Deps, siliconflow: str
) -> None:
    async with httpx.AsyncClient() as client:
        await client.post(f"{siliconflow}/_fake/script", json={"responses": [{"status": 503}]})
    viewer = await a_viewer(vendor_deps)
    request_id = await submit(
        vendor_deps, viewer, image_count=1, optimize_prompt=False, image_provider="siliconflow"
    )
    await deliver(vendor_deps)  # 503, a retry later, then success: never the offline one
    assert await image_providers(vendor_deps, request_id) == ["siliconflow"]
    assert await vendor_calls(siliconflow) == [503, 200]


async def test_unknown_or_unconfigured_vendors_are_bad_input_naming_the_configured(
    vendor_deps: Deps,
) -> None:
    await a_viewer(vendor_deps)
    for field, name in (("imageProvider", "dashscope"), ("modelProvider", "hunyuan")):
        result = await execute(
            vendor_deps,
            f'mutation {{ createRequest(input: {{prompt: "a cup", {field}: "{name}"}}) {{ id }} }}',
            user="alice",
        )
        assert code(result) == "BAD_USER_INPUT"
        assert result["errors"][0]["extensions"]["field"] == field
        configured = "siliconflow, local" if field == "imageProvider" else "local"
        assert f"configured: {configured}" in result["errors"][0]["message"]
    providers = await data(
        vendor_deps, "{ availableProviders { name kind position formats } }", user="alice"
    )
    assert {(p["kind"], p["name"], p["position"]) for p in providers["availableProviders"]} == {
        ("LLM", "local", 0),
        ("IMAGE", "siliconflow", 0),
        ("IMAGE", "local", 1),
        ("MODEL", "local", 0),
    }


async def test_a_3d_job_waits_queued_for_a_free_vendor_slot(deps: Deps) -> None:
    deps.providers.limits["local"] = 1
    viewer = await a_viewer(deps)
    first = await submit(deps, viewer, image_count=1, auto_model=True)
    second = await submit(deps, viewer, image_count=1, auto_model=True)
    # Run both until their 3D jobs are submitted or waiting, holding back the polls.
    held = []
    for _ in range(30):
        queue = recorded(deps)
        if not queue.sent:
            break
        message = queue.sent[0]
        if message.stage == "poll_model":
            held.append(queue.sent.pop(0))
            continue
        if message.delay_seconds and message.stage == "start_model":
            break
        await deliver_one(deps)
    rows = {rid: await request_row(deps, rid) for rid in (first, second)}
    statuses = sorted(row.step for row in rows.values())
    assert statuses == ["generating 3D model (local)", "waiting for a free slot at local"]
    waiting = next(rid for rid, row in rows.items() if row.step.startswith("waiting"))
    async with deps.db.read() as session:
        job = (
            await session.execute(
                select(GenerationJob).where(
                    col(GenerationJob.request_id) == waiting, col(GenerationJob.kind) == "MODEL"
                )
            )
        ).scalar_one()
    assert (job.status, job.attempt) == ("PENDING", 0)  # queued, not running nor stalled
    recorded(deps).sent.extend(held)
    await deliver(deps)  # the first finishes and frees the slot; the second gets it
    assert {(await request_row(deps, rid)).status for rid in (first, second)} == {Status.COMPLETED}
    assert await deps.providers.limiter.in_use("local") == 0


async def test_obj_models_are_stored_with_their_material_and_texture(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True, model_format="obj")
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.COMPLETED
    async with deps.db.read() as session:
        model = (
            await session.execute(select(Model).where(col(Model.request_id) == request_id))
        ).scalar_one()
    assert model.format == "obj"
    names = [file["name"] for file in model.files or []]
    assert names[0] == "model.obj"
    assert sorted(names[1:]) == ["material.mtl", "texture.png"]
    stored = {
        name: await deps.storage.get(f["key"])
        for name, f in zip(names, model.files or [], strict=True)
    }
    assert "map_Kd texture.png" in stored["material.mtl"].decode()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, content in stored.items():
            bundle.writestr(name, content)
    mesh: Any = trimesh.load(
        io.BytesIO(stored["model.obj"]),
        file_type="obj",
        resolver=trimesh.resolvers.ZipResolver(io.BytesIO(archive.getvalue())),
    )
    assert len(mesh.vertices) > 0
    query = """query M($id: ID!) { model(id: $id) { format fileUrl
        files { name contentType size url } } }"""
    found = (await data(deps, query, {"id": model.id}, user="alice"))["model"]
    assert found["format"] == "OBJ"
    assert [f["name"] for f in found["files"]] == names
    assert all(f["url"] for f in found["files"])
