"""Other mesh formats made from a stored model: STL and PLY through trimesh, USDZ through
Pixar's USD library (usd-core).

A model is stored as the vendor made it (a GLB, or an OBJ with its material and
textures); a download in another format converts it. STL and PLY carry the mesh only
(no materials, no textures). USDZ, what Apple's AR Quick Look opens, carries the mesh,
its UVs and normals, and a UsdPreviewSurface material with the GLB's base colour texture
packed beside it; an OBJ's material and textures are separate files, not read here, so
its USDZ is the mesh alone. The input is bounded in bytes and faces, since a mesh's
memory and time grow with both; the caller bounds the wait too, but a thread cannot be
stopped: the size bounds are what keep a conversion short.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_SOURCE_BYTES = 64 * 1024 * 1024
MAX_FACES = 2_000_000


@dataclass(frozen=True, slots=True)
class Target:
    """A format a model can be converted to: its file name and MIME type as stored."""

    format: str
    name: str
    content_type: str


# model/stl and model/vnd.usdz+zip are registered with IANA; PLY has no registered type.
TARGETS = {
    "stl": Target("stl", "model.stl", "model/stl"),
    "ply": Target("ply", "model.ply", "application/octet-stream"),
    "usdz": Target("usdz", "model.usdz", "model/vnd.usdz+zip"),
}
SOURCES = ("glb", "obj")


class ConversionFailed(Exception):
    """The stored model cannot be converted (too large, or not a mesh trimesh reads)."""


def convert(data: bytes, source: str, target: str) -> bytes:
    """The mesh in `data` (a GLB, or an OBJ's main file) as `target` (stl, ply or usdz);
    every mesh of a scene joined into one, its transforms applied. Blocking and
    CPU-bound: run it in a thread."""
    if source not in SOURCES or target not in TARGETS:
        raise ConversionFailed(f"cannot convert {source} to {target}")
    if len(data) > MAX_SOURCE_BYTES:
        raise ConversionFailed(f"the model is larger than {MAX_SOURCE_BYTES} bytes")
    # Imported here: trimesh and numpy take a third of a second to import, and every
    # `lumi` process that never converts (workers, CLI commands) would pay it.
    import trimesh

    try:
        mesh = trimesh.load(io.BytesIO(data), file_type=source, force="mesh")
    except Exception as error:  # trimesh raises many kinds for a broken file
        raise ConversionFailed(f"the {source} file could not be read: {error}") from error
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ConversionFailed(f"the {source} file holds no mesh")
    if len(mesh.faces) > MAX_FACES:
        raise ConversionFailed(f"the mesh has more than {MAX_FACES} faces")
    if target == "usdz":  # an OBJ's material is in files not read here
        return _usdz(mesh, material=source == "glb")
    exported = mesh.export(file_type=target)
    return exported if isinstance(exported, bytes) else str(exported).encode()


def _usdz(mesh: Any, *, material: bool) -> bytes:
    """`mesh` (a trimesh.Trimesh) as a USDZ package: one Y-up stage in metres, as glTF
    is, holding the mesh and, with `material`, its base colour (texture or factor),
    metallic and roughness."""
    # Imported here, as trimesh is: only a USDZ download pays for loading USD.
    import numpy
    from pxr import Sdf, Usd, UsdGeom, UsdShade, UsdUtils, Vt

    with tempfile.TemporaryDirectory(prefix="lumi-usdz-") as folder:
        layer = str(Path(folder) / "model.usdc")
        stage = Usd.Stage.CreateNew(layer)
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        root = UsdGeom.Xform.Define(stage, "/Model")
        stage.SetDefaultPrim(root.GetPrim())

        shape = UsdGeom.Mesh.Define(stage, "/Model/Mesh")
        vertices = numpy.asarray(mesh.vertices, dtype=numpy.float32)
        faces = numpy.asarray(mesh.faces, dtype=numpy.int32)
        shape.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(vertices))
        shape.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(numpy.full(len(faces), 3)))
        shape.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(faces.ravel()))
        shape.CreateExtentAttr(Vt.Vec3fArray.FromNumpy(numpy.asarray(mesh.bounds, "float32")))
        shape.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)  # a polygon mesh, as given
        shape.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(_vertex_normals(vertices, faces)))
        shape.SetNormalsInterpolation(UsdGeom.Tokens.vertex)

        source = getattr(mesh.visual, "material", None) if material else None
        if source is not None:
            texture = None
            image, uv = _texture(mesh)
            if image is not None:
                image.save(Path(folder) / "texture.png")
                texture = "texture.png"
                st = UsdGeom.PrimvarsAPI(shape).CreatePrimvar(
                    "st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex
                )
                st.Set(Vt.Vec2fArray.FromNumpy(numpy.asarray(uv, dtype=numpy.float32)))
            surface = _surface(stage, source, texture)
            UsdShade.MaterialBindingAPI.Apply(shape.GetPrim()).Bind(surface)
        stage.GetRootLayer().Save()
        package = str(Path(folder) / "model.usdz")
        if not UsdUtils.CreateNewARKitUsdzPackage(Sdf.AssetPath(layer), package):
            raise ConversionFailed("the USDZ package could not be written")
        return Path(package).read_bytes()


def _vertex_normals(vertices: Any, faces: Any) -> Any:
    """Each vertex's normal: the sum of its faces' normals, weighted by their area (what
    trimesh gives too, but through scipy, which is not installed)."""
    import numpy

    corners = vertices[faces]
    weighted = numpy.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = numpy.zeros_like(vertices)
    for corner in range(3):
        numpy.add.at(normals, faces[:, corner], weighted)
    lengths = numpy.linalg.norm(normals, axis=1, keepdims=True)
    return numpy.divide(normals, lengths, out=numpy.zeros_like(normals), where=lengths > 0)


def _texture(mesh: Any) -> tuple[Any, Any]:
    """The mesh's base colour image (RGB or RGBA) and its per-vertex UVs, or Nones."""
    visual = mesh.visual
    uv = getattr(visual, "uv", None)
    material = getattr(visual, "material", None)
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if image is None or uv is None or len(uv) != len(mesh.vertices):
        return None, None
    return image.convert("RGBA" if "A" in image.getbands() else "RGB"), uv


def _surface(stage: Any, source: Any, texture: str | None) -> Any:
    """A UsdPreviewSurface with the source material's metallic and roughness factors
    (glTF's default of 1 for one it does not give), and as diffuse colour `texture` read
    at the mesh's `st`, or without one the material's base colour factor."""
    from pxr import Gf, Sdf, UsdShade

    material = UsdShade.Material.Define(stage, "/Model/Material")
    surface = UsdShade.Shader.Define(stage, "/Model/Material/Surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    for name, field in (("roughness", "roughnessFactor"), ("metallic", "metallicFactor")):
        value = getattr(source, field, None)
        surface.CreateInput(name, Sdf.ValueTypeNames.Float).Set(1.0 if value is None else value)
    material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    diffuse = surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    base = getattr(source, "baseColorFactor", None)  # RGBA, 0-255, or None
    colour = None if base is None else [float(c) / 255 for c in base]
    if texture is None:
        if colour is not None:
            diffuse.Set(Gf.Vec3f(*colour[:3]))
        return material
    reader = UsdShade.Shader.Define(stage, "/Model/Material/UV")
    reader.CreateIdAttr("UsdPrimvarReader_float2")
    reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
    image = UsdShade.Shader.Define(stage, "/Model/Material/Texture")
    image.CreateIdAttr("UsdUVTexture")
    image.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(texture)
    image.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
    if colour is not None:  # glTF multiplies the texture by the factor
        image.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*colour))
    image.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
        reader.ConnectableAPI(), "result"
    )
    diffuse.ConnectToSource(image.CreateOutput("rgb", Sdf.ValueTypeNames.Float3))
    return material
