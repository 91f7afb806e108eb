"""The offline providers produce real, decodable output."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import trimesh
from PIL import Image

from providers.base import JobState, ProviderRejected
from providers.local import (
    LocalImageGenerator,
    LocalModelGenerator,
    LocalPromptOptimizer,
    render_png,
)


async def test_the_optimizer_writes_distinct_deterministic_variants() -> None:
    optimizer = LocalPromptOptimizer()
    variants = await optimizer.optimize("a wooden fox", 4)
    assert len(set(variants)) == 4
    assert all("a wooden fox" in v for v in variants)
    assert await optimizer.optimize("a wooden fox", 4) == variants


async def test_the_optimizer_rejects_a_blank_prompt() -> None:
    with pytest.raises(ProviderRejected):
        await LocalPromptOptimizer().optimize("   ", 2)


async def test_images_decode_at_the_asked_size_and_differ_by_seed() -> None:
    generator = LocalImageGenerator()
    first = await generator.generate("a teapot", seed=1, width=160, height=96)
    same = await generator.generate("a teapot", seed=1, width=160, height=96)
    other = await generator.generate("a teapot", seed=2, width=160, height=96)
    assert first.content_type == "image/png"
    assert first.data is not None
    assert Image.open(io.BytesIO(first.data)).size == (160, 96)
    assert first.data == same.data
    assert first.data != other.data


async def test_an_impossible_image_size_is_rejected() -> None:
    with pytest.raises(ProviderRejected):
        await LocalImageGenerator().generate("x", seed=1, width=8, height=8)


def load_mesh(glb: bytes) -> trimesh.Trimesh:
    return trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")


async def test_a_3d_job_runs_then_yields_a_textured_mesh_shaped_by_the_image(
    tmp_path: Path,
) -> None:
    generator = LocalModelGenerator(work_dir=tmp_path, latency=0.3, grid=24)
    job = await generator.submit(render_png("a cat", 1, 128, 128), "image/png", prompt="a cat")
    running = await generator.poll(job)
    assert running.state is JobState.RUNNING
    assert running.progress is not None
    assert 0 <= running.progress < 100
    await asyncio.sleep(0.35)
    done = await generator.poll(job)
    assert done.state is JobState.SUCCEEDED
    glb = done.files[0].data
    assert glb is not None
    assert glb[:4] == b"glTF"
    mesh = load_mesh(glb)
    assert len(mesh.vertices) > 0
    assert len(mesh.faces) > 0
    assert mesh.visual.uv is not None
    assert len(mesh.visual.uv) == len(mesh.vertices)
    assert done.preview is not None

    other_job = await generator.submit(render_png("a dog", 9, 128, 128), "image/png", prompt="")
    await asyncio.sleep(0.35)
    other = (await generator.poll(other_job)).files[0].data
    assert other is not None
    assert sorted(map(tuple, load_mesh(other).vertices)) != sorted(map(tuple, mesh.vertices))


async def test_a_process_killed_while_writing_a_model_leaves_no_truncated_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = LocalModelGenerator(work_dir=tmp_path, grid=24)
    job = await generator.submit(render_png("a cat", 1, 128, 128), "image/png", prompt="")
    write_bytes = Path.write_bytes

    def dies_halfway(path: Path, data: bytes) -> int:  # the process ends mid-write
        write_bytes(path, data[: len(data) // 2])
        raise SystemExit("killed")

    with monkeypatch.context() as patched:
        patched.setattr(Path, "write_bytes", dies_halfway)
        with pytest.raises(SystemExit):
            await generator.poll(job)
    # The next worker polls the same job: it gets a whole model, never the half.
    done = await LocalModelGenerator(work_dir=tmp_path, grid=24).poll(job)
    assert done.state is JobState.SUCCEEDED
    glb = done.files[0].data
    assert glb is not None
    assert len(load_mesh(glb).faces) > 0


@pytest.mark.parametrize("job_id", ["local-" + "0" * 32, "../../etc/passwd", "nope"])
async def test_unknown_or_crafted_job_ids_fail_cleanly(tmp_path: Path, job_id: str) -> None:
    status = await LocalModelGenerator(work_dir=tmp_path).poll(job_id)
    assert status.state is JobState.FAILED
    assert status.error_code == "JOB_NOT_FOUND"


async def test_submit_rejects_bytes_that_are_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ProviderRejected):
        await LocalModelGenerator(work_dir=tmp_path).submit(b"not an image", "image/png", prompt="")
