"""Vendor outputs are checked before they are stored; zipped OBJs are unpacked safely."""

from __future__ import annotations

import io
import zipfile

import pytest

from providers.base import ProviderUnavailable
from providers.formats import checked_image, fit_size, model_files, nearest_size
from providers.local import build_relief_glb, build_relief_obj_zip, render_png

PNG = render_png("a cube", 1, 64, 64)


def zipped(**files: bytes | str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name.replace("__", "/"), content)
    return buffer.getvalue()


def test_images_are_recognised_by_their_bytes_with_their_real_size() -> None:
    checked = checked_image(render_png("a cube", 1, 96, 64), "v")
    assert (checked.content_type, checked.width, checked.height) == ("image/png", 96, 64)
    with pytest.raises(ProviderUnavailable, match="not an image"):
        checked_image(b"<html>rate limited</html>", "v")
    with pytest.raises(ProviderUnavailable, match="not an image"):
        checked_image(PNG[:20], "v")  # a PNG signature and no header behind it


@pytest.mark.parametrize(
    ("asked", "fitted"),
    [
        ((128, 128), (512, 512)),
        ((1024, 768), (1024, 768)),
        ((256, 128), (1024, 512)),
        ((3000, 1500), (1440, 720)),
        ((4000, 200), (1440, 512)),  # no size in range keeps 20:1; the nearest one
    ],
)
def test_a_size_is_fitted_into_a_vendors_range(
    asked: tuple[int, int], fitted: tuple[int, int]
) -> None:
    assert fit_size(*asked, 512, 1440) == fitted


def test_a_fixed_size_engine_gets_the_closest_aspect_ratio() -> None:
    sizes = ((1024, 1024), (1536, 1024), (1024, 1536))
    assert nearest_size(128, 128, sizes) == (1024, 1024)
    assert nearest_size(768, 512, sizes) == (1536, 1024)
    assert nearest_size(300, 900, sizes) == (1024, 1536)


def test_a_glb_must_be_binary_gltf() -> None:
    [part] = model_files("glb", build_relief_glb(PNG))
    assert (part.name, part.content_type) == ("model.glb", "model/gltf-binary")
    with pytest.raises(ProviderUnavailable):
        model_files("glb", b"not a model")


def test_a_zipped_obj_is_unpacked_main_file_first() -> None:
    parts = model_files("zip", build_relief_obj_zip(PNG))
    assert [p.name for p in parts] == ["model.obj", "material.mtl", "texture.png"]
    assert {p.format for p in parts} == {"obj"}


def test_folders_in_a_zip_are_flattened_and_cannot_escape() -> None:
    archive = zipped(
        **{"out__deep__mesh.obj": "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"},
        **{"..__..__etc__tex.png": PNG, "readme.txt": "hello"},
    )
    assert [p.name for p in model_files("zip", archive)] == ["mesh.obj", "tex.png"]


@pytest.mark.parametrize(
    "archive",
    [
        b"not a zip",
        zipped(**{"texture.png": PNG}),  # no OBJ
        zipped(**{"a.obj": "v 0 0 0\n", "b.obj": "v 0 0 0\n"}),  # which one?
        zipped(**{"a.obj": "no vertices here\n"}),
    ],
)
def test_a_zip_without_exactly_one_real_obj_is_refused(archive: bytes) -> None:
    with pytest.raises(ProviderUnavailable):
        model_files("zip", archive)
