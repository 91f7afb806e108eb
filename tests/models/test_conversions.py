"""Conversions in-process: what the live tests cannot time, such as another process
recording the same conversion first, or the model deleted while it converts."""

from __future__ import annotations

import pytest

from app.deps import Deps
from app.errors import BadUserInput
from app.graphql.relay import global_id
from app.models import conversions, repository
from app.models.conversions import Conversions
from app.models.errors import ModelNotFound
from providers.local import build_relief_glb, render_png
from tests.graphql.client import code, data, execute
from tests.models.test_library import make_model, user

DOWNLOAD = """mutation D($id: ID!, $format: DownloadFormat) {
  downloadModel(id: $id, format: $format) { format model { downloadCount } }
}"""


async def glb_model(deps: Deps, *, public: bool = False) -> str:
    """A model whose stored file is a real GLB mesh, in a folder as the pipeline keeps it."""
    owner = await user(deps)
    model = await make_model(deps, owner, public=public)
    key = f"models/{model.id}/model.glb"
    await deps.storage.put(key, build_relief_glb(render_png("a cube", 1, 64, 64)), "model/gltf")
    async with deps.db.write() as session:
        row = await repository.get(session, model.id, for_update=True)
        assert row is not None
        row.file_key = key
    return model.id


async def test_a_conversion_recorded_by_another_process_first_is_the_one_kept(
    deps: Deps,
) -> None:
    model_id = await glb_model(deps)
    entry = {"name": "model.stl", "key": "k", "content_type": "model/stl", "size": 1}
    first = {**entry, "key": f"models/{model_id}/model.stl", "converted": True}
    async with deps.unit() as unit:
        assert await conversions.record(unit, model_id, "stl", first) == first
    async with deps.unit() as unit:  # the slower process's record finds the first
        assert await conversions.record(unit, model_id, "stl", {**first, "size": 2}) == first
    async with deps.db.read() as session:
        row = await repository.get(session, model_id)
    assert row is not None
    assert row.files is not None
    assert [f["name"] for f in row.files] == ["model.glb", "model.stl"]


async def test_a_model_deleted_while_it_converts_leaves_no_converted_file(deps: Deps) -> None:
    model_id = await glb_model(deps)
    async with deps.db.read() as session:
        model = await repository.get(session, model_id)
    assert model is not None
    async with deps.unit() as unit:  # deleted after the download read it
        await repository.delete_model(unit.session, model_id)
    with pytest.raises(ModelNotFound):
        await deps.conversions.file(model, "ply", storage=deps.storage, unit=deps.unit)
    assert not await deps.storage.exists(f"models/{model_id}/model.ply")


async def test_a_model_that_is_not_a_mesh_cannot_be_converted_nor_counted(deps: Deps) -> None:
    owner = await user(deps)
    model = await make_model(deps, owner, public=True)  # its "GLB" is ten bytes of text
    ids = {"id": global_id("Model", model.id)}
    who = (await user(deps)).external_id
    failed = await execute(deps, DOWNLOAD, {**ids, "format": "STL"}, user=who)
    assert code(failed) == "BAD_USER_INPUT"
    assert failed["errors"][0]["extensions"]["field"] == "format"
    own = await data(deps, DOWNLOAD, ids, user=who)
    assert own["downloadModel"] == {"format": "GLB", "model": {"downloadCount": 1}}


async def test_a_conversion_that_takes_too_long_answers_bad_user_input(deps: Deps) -> None:
    model_id = await glb_model(deps)
    async with deps.db.read() as session:
        model = await repository.get(session, model_id)
    assert model is not None
    hurried = Conversions(concurrency=1, timeout=0.000001)
    with pytest.raises(BadUserInput, match="took too long"):
        await hurried.file(model, "stl", storage=deps.storage, unit=deps.unit)
    # nothing recorded; a patient one converts it
    patient = Conversions(concurrency=1)
    done = await patient.file(model, "stl", storage=deps.storage, unit=deps.unit)
    assert done["name"] == "model.stl"
    assert await deps.storage.exists(done["key"])
