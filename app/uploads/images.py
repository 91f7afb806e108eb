"""What an uploaded file must be to become a request's image, and what is kept of it.

Pure (no I/O): bytes in, a clean image or BadUserInput out. The order matters:
the format is told from the bytes (never the name or the claimed type), the pixel count
from the header before anything is decoded (a 50 KB PNG can claim 100,000 x 100,000
pixels), then the whole image is decoded (a truncated or corrupt file fails here, not in
a vendor), turned upright by its EXIF orientation, and encoded afresh: what is stored
carries no EXIF (GPS position, camera serial), XMP or comments.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import BadUserInput

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# The longest side kept: past it the image is scaled down. 3D vendors take at most about
# 5000 pixels a side, and nothing of a larger image survives into a mesh.
MAX_SIDE = 4096
# The largest file kept: Hunyuan 3D takes at most 8 MB of base64, which is 6 MB of image.
MAX_STORED_BYTES = 6 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CleanImage:
    data: bytes
    content_type: str
    width: int
    height: int


def normalise(data: bytes, *, max_bytes: int, max_pixels: int) -> CleanImage:
    """The image in `data`, upright and without metadata; BadUserInput saying why not."""
    if not data:
        raise _refused("the file is empty")
    if len(data) > max_bytes:
        raise _refused(f"the file is larger than {max_bytes} bytes")
    image = _open(data, max_pixels)
    try:
        return _clean(image)
    finally:
        image.close()


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The decoded image, once its format and size allow it."""
    with warnings.catch_warnings():
        # Pillow warns (not raises) between its threshold and twice it: refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except UnidentifiedImageError as exc:
            raise _refused("the file is not a PNG, JPEG or WebP image") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _refused(f"the image has more than {max_pixels} pixels") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise _refused("the image's header is damaged") from exc
        width, height = image.size
        if width * height > max_pixels:  # from the header: nothing is decoded yet
            image.close()
            raise _refused(f"the image is {width}x{height}, more than {max_pixels} pixels")
        if getattr(image, "n_frames", 1) > 1:
            image.close()
            raise _refused("animated images are not accepted: send a single frame")
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            image.close()
            raise _refused(f"the image has more than {max_pixels} pixels") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            image.close()
            raise _refused("the image data is truncated or damaged") from exc
    return image


def _clean(image: Image.Image) -> CleanImage:
    """Upright, in a plain mode, at most MAX_SIDE a side, encoded afresh in its format
    (JPEG when that is too large to store), with its colour profile and nothing else."""
    source_format = str(image.format)
    profile = image.info.get("icc_profile")
    upright = ImageOps.exif_transpose(image)
    alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
    plain = upright.convert("RGBA" if alpha else "RGB")
    if max(plain.size) > MAX_SIDE:
        plain.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    kept = source_format if source_format in FORMATS else "PNG"
    data = _encode(plain, kept, profile)
    while len(data) > MAX_STORED_BYTES:
        if kept == "PNG" and not alpha:
            kept = "JPEG"  # a photo saved as PNG: the same picture in a fraction
        else:
            plain = plain.resize(
                (max(1, plain.width * 3 // 4), max(1, plain.height * 3 // 4)),
                Image.Resampling.LANCZOS,
            )
        data = _encode(plain, kept, profile)
    return CleanImage(data, FORMATS[kept], plain.width, plain.height)


def _encode(image: Image.Image, image_format: str, profile: object) -> bytes:
    """`image` in `image_format`; only the colour profile is carried over (it changes
    how the pixels look), never EXIF, XMP or comments."""
    options: dict[str, object] = {}
    if isinstance(profile, bytes):
        options["icc_profile"] = profile
    if image_format == "JPEG" or image_format == "WEBP":
        options["quality"] = 92
    clean = image.copy()
    clean.info = {}  # what a save would otherwise copy from the source
    buffer = io.BytesIO()
    clean.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _refused(reason: str) -> BadUserInput:
    return BadUserInput(f"the image was refused: {reason}", field="file")
