"""USDZ made from a stored model, opened and checked by Pixar's own USD library: the
package AR Quick Look would get."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy
import pytest
import trimesh
from PIL import Image
from pxr import Usd, UsdGeom, UsdShade, UsdValidation
from trimesh.visual import TextureVisuals
from trimesh.visual.material import PBRMaterial

from providers.conversion import ConversionFailed, convert
from providers.formats import model_files
from providers.local import build_relief_glb, build_relief_obj_zip, render_png

PICTURE = render_png("a teapot", 7, 64, 64)


def opened(data: bytes, folder: Path) -> Usd.Stage:
    """The stage in a USDZ, after USD's every validator passed it (the package's layout,
    its file types, what it refers to, the material bindings, the stage's metadata)."""
    path = folder / "model.usdz"
    path.write_bytes(data)
    stage = Usd.Stage.Open(str(path))
    validators = UsdValidation.ValidationRegistry().GetOrLoadAllValidators()
    errors = UsdValidation.ValidationContext(validators).Validate(stage)
    assert [(e.GetName(), e.GetMessage()) for e in errors] == []
    return stage


def the_mesh(stage: Usd.Stage) -> UsdGeom.Mesh:
    [mesh] = [UsdGeom.Mesh(p) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]
    return mesh


def test_a_glb_becomes_a_usdz_with_its_mesh_texture_and_material(tmp_path: Path) -> None:
    glb = build_relief_glb(PICTURE)
    source = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")
    data = convert(glb, "glb", "usdz")

    stage = opened(data, tmp_path)
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y  # as glTF: Y up, metres
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    mesh = the_mesh(stage)
    points = numpy.array(mesh.GetPointsAttr().Get())
    indices = numpy.array(mesh.GetFaceVertexIndicesAttr().Get()).reshape(-1, 3)
    assert set(mesh.GetFaceVertexCountsAttr().Get()) == {3}
    assert numpy.allclose(points[indices], source.vertices[source.faces], atol=1e-6)
    normals = numpy.array(mesh.GetNormalsAttr().Get())
    assert numpy.allclose(numpy.linalg.norm(normals, axis=1), 1, atol=1e-5)
    # Smooth normals on the faces' side: lit, not black (but at sharp edges).
    agree = numpy.einsum("ij,ij->i", normals[indices].mean(axis=1), source.face_normals)
    assert numpy.mean(agree > 0) > 0.99
    uv = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st")
    assert numpy.allclose(numpy.array(uv.Get()), source.visual.uv, atol=1e-6)

    material, _ = UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()
    surface = material.ComputeSurfaceSource()[0]
    assert surface.GetIdAttr().Get() == "UsdPreviewSurface"
    texture = surface.GetInput("diffuseColor").GetConnectedSources()[0][0].source
    file = UsdShade.Shader(texture.GetPrim()).GetInput("file").Get()
    # The very image the GLB carries, inside the package.
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        assert package.namelist()[0].endswith(".usdc")  # the root layer first
        packed = Image.open(io.BytesIO(package.read(file.path)))
        assert numpy.array_equal(
            numpy.asarray(packed.convert("RGB")),
            numpy.asarray(source.visual.material.baseColorTexture.convert("RGB")),
        )


def test_an_obj_becomes_a_usdz_of_its_mesh_alone(tmp_path: Path) -> None:
    main = model_files("zip", build_relief_obj_zip(PICTURE))[0].data
    source = trimesh.load(io.BytesIO(main), file_type="obj", force="mesh")
    stage = opened(convert(main, "obj", "usdz"), tmp_path)
    mesh = the_mesh(stage)
    assert len(mesh.GetFaceVertexCountsAttr().Get()) == len(source.faces)
    assert numpy.allclose(mesh.GetExtentAttr().Get(), source.bounds, atol=1e-6)
    assert not UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()[0]


def test_what_is_not_a_mesh_is_refused() -> None:
    with pytest.raises(ConversionFailed, match=r"could not be read|holds no mesh"):
        convert(b"glTF not really", "glb", "usdz")


def test_an_untextured_glb_keeps_its_colour_and_finish(tmp_path: Path) -> None:
    box = trimesh.creation.box()
    red = PBRMaterial(baseColorFactor=[255, 0, 0, 255], metallicFactor=0.25, roughnessFactor=0.5)
    box.visual = TextureVisuals(material=red)
    data = convert(box.export(file_type="glb"), "glb", "usdz")

    stage = opened(data, tmp_path)  # held: its prims live as long as it does
    mesh = the_mesh(stage)
    assert len(mesh.GetFaceVertexCountsAttr().Get()) == 12
    material, _ = UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()
    surface = material.ComputeSurfaceSource()[0]
    assert tuple(surface.GetInput("diffuseColor").Get()) == (1.0, 0.0, 0.0)
    assert surface.GetInput("metallic").Get() == 0.25
    assert surface.GetInput("roughness").Get() == 0.5
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        assert [name.endswith(".usdc") for name in package.namelist()] == [True]
