"""Other mesh formats made from a stored model: STL and PLY, through trimesh.

A model is stored as the vendor made it (a GLB, or an OBJ with its material and
textures); a download in another format converts its geometry. STL and PLY carry the
mesh only (no materials, no textures), so an OBJ's material and textures are not read.
The input is bounded in bytes and faces, since a mesh's memory and time grow with both;
the caller bounds the wait too, but a thread cannot be stopped: the size bounds are what
keep a conversion short.
USDZ is not offered: trimesh does not write it, and usd-core (Pixar's USD, the PyPI
package that does) is a large native dependency for one format.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

MAX_SOURCE_BYTES = 64 * 1024 * 1024
MAX_FACES = 2_000_000


@dataclass(frozen=True, slots=True)
class Target:
    """A format a model can be converted to: its file name and MIME type as stored."""

    format: str
    name: str
    content_type: str


# model/stl is registered with IANA; PLY has no registered type.
TARGETS = {
    "stl": Target("stl", "model.stl", "model/stl"),
    "ply": Target("ply", "model.ply", "application/octet-stream"),
}
SOURCES = ("glb", "obj")


class ConversionFailed(Exception):
    """The stored model cannot be converted (too large, or not a mesh trimesh reads)."""


def convert(data: bytes, source: str, target: str) -> bytes:
    """The mesh in `data` (a GLB, or an OBJ's main file) as `target` (stl or ply); every
    mesh of a scene joined into one, its transforms applied. Blocking and CPU-bound:
    run it in a thread."""
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
    exported = mesh.export(file_type=target)
    return exported if isinstance(exported, bytes) else str(exported).encode()
