"""What a vendor's output must look like before it goes into our storage.

An image must be the image type it claims; a model is a binary glTF, or an OBJ with its
material and textures (vendors deliver those zipped: the archive is unpacked here, with
its names flattened and its sizes bounded, so a hostile zip cannot escape or explode).
"""

from __future__ import annotations

import io
import math
import posixpath
import zipfile
from dataclasses import dataclass

from PIL import Image

from providers.base import ProviderUnavailable

MAX_MODEL_BYTES = 200 * 1024 * 1024
MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_ZIP_ENTRIES = 64
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
}
_TEXTURES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
_PARTS = {"obj": "model/obj", "mtl": "model/mtl", **_TEXTURES}


def image_type(data: bytes) -> str | None:
    """The MIME type of PNG, JPEG or WebP bytes; None for anything else."""
    for magic, content_type in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """A vendor image's real type and size, read from its bytes rather than its claims."""

    content_type: str
    width: int
    height: int


def checked_image(data: bytes, provider: str) -> CheckedImage:
    """The real type and size of a vendor's image; ProviderUnavailable when it is not a
    PNG, JPEG or WebP image that its header decodes as."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ProviderUnavailable(
            f"{provider} returned an image over {MAX_IMAGE_BYTES} bytes", provider=provider
        )
    content_type = image_type(data)
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        content_type = None
    if content_type is None:
        raise ProviderUnavailable(
            f"{provider} returned {len(data)} bytes that are not an image", provider=provider
        )
    return CheckedImage(content_type, width, height)


def fit_size(width: int, height: int, low: int, high: int) -> tuple[int, int]:
    """The size nearest `width` x `height` whose sides both lie in [low, high]: scaled up
    or down keeping the aspect ratio where the range allows it, each side then clamped
    and rounded to a multiple of 8 (what diffusion engines work in)."""
    scale = 1.0
    if min(width, height) < low:
        scale = low / min(width, height)
    if max(width, height) * scale > high:
        scale = high / max(width, height)

    def side(value: int) -> int:
        return max(low, min(high, round(value * scale / 8) * 8))

    return side(width), side(height)


def fit_pixels(width: int, height: int, fewest: int, most: int) -> tuple[int, int]:
    """The size nearest `width` x `height` whose area lies in [fewest, most] pixels, the
    aspect ratio kept, each side a multiple of 8 (rounded up when scaling up, so the
    area does not fall short of `fewest`)."""
    area = width * height
    if fewest <= area <= most:
        return width, height
    scale = math.sqrt((fewest if area < fewest else most) / area)
    rounding = math.ceil if area < fewest else math.floor
    return rounding(width * scale / 8) * 8, rounding(height * scale / 8) * 8


def nearest_size(width: int, height: int, sizes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """Of the fixed sizes an engine offers, the one whose aspect ratio is closest, then
    whose area is."""
    wanted = width / height
    return min(
        sizes,
        key=lambda size: (abs(size[0] / size[1] - wanted), abs(size[0] * size[1] - width * height)),
    )


@dataclass(frozen=True, slots=True)
class ModelPart:
    """One file of a model as stored: `format` is the main file's format for every part."""

    name: str
    format: str
    content_type: str
    data: bytes


def model_files(file_format: str, data: bytes, provider: str = "") -> list[ModelPart]:
    """The files to store for a vendor's model output, the main file first."""
    if len(data) > MAX_MODEL_BYTES:
        raise ProviderUnavailable(f"the model is larger than {MAX_MODEL_BYTES} bytes")
    if file_format == "glb":
        if data[:4] != b"glTF":
            raise ProviderUnavailable(f"{provider} returned a GLB that is not glTF binary")
        return [ModelPart("model.glb", "glb", "model/gltf-binary", data)]
    if file_format == "obj":
        _check_obj(data, provider)
        return [ModelPart("model.obj", "obj", "model/obj", data)]
    if file_format == "zip":
        return _unzip_obj(data, provider)
    raise ProviderUnavailable(f"{provider} returned a model in an unknown format {file_format!r}")


def _check_obj(data: bytes, provider: str) -> None:
    head = data[:65536].decode("utf-8", errors="replace")
    if not any(line.startswith("v ") for line in head.splitlines()):
        raise ProviderUnavailable(f"{provider} returned an OBJ without vertices")


def _unzip_obj(data: bytes, provider: str) -> list[ModelPart]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ProviderUnavailable(f"{provider} returned a broken zip") from None
    entries = [e for e in archive.infolist() if not e.is_dir()]
    if len(entries) > MAX_ZIP_ENTRIES:
        raise ProviderUnavailable(f"{provider} returned a zip of {len(entries)} files")
    if sum(e.file_size for e in entries) > MAX_MODEL_BYTES:
        raise ProviderUnavailable(f"{provider} returned a zip larger than allowed unpacked")
    parts: list[ModelPart] = []
    for entry in entries:
        name = posixpath.basename(entry.filename.replace("\\", "/"))
        extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if extension not in _PARTS or name.startswith("."):
            continue  # readme files, thumbnails in other formats, hidden files
        parts.append(ModelPart(name, "obj", _PARTS[extension], archive.read(entry)))
    objs = [part for part in parts if part.name.lower().endswith(".obj")]
    if len(objs) != 1:
        raise ProviderUnavailable(f"{provider} returned a zip with {len(objs)} OBJ files")
    _check_obj(objs[0].data, provider)
    names = [part.name for part in parts]
    if len(set(names)) != len(names):
        raise ProviderUnavailable(f"{provider} returned a zip with clashing file names")
    return [objs[0], *(part for part in parts if part is not objs[0])]
