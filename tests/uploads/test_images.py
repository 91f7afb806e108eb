"""What an uploaded file must be to become a request's image (app/uploads/images.py)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from app.errors import BadUserInput
from app.uploads import images
from app.uploads.images import normalise

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def picture(width: int = 64, height: int = 32) -> Image.Image:
    """Left half red, right half blue: which way up it is shows."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


def refusal(data: bytes, **limits: int) -> str:
    with pytest.raises(BadUserInput) as raised:
        normalise(data, **{**LIMITS, **limits})
    assert raised.value.code == "BAD_USER_INPUT"
    return raised.value.message


@pytest.mark.parametrize(
    ("image_format", "content_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")],
)
def test_png_jpeg_and_webp_images_are_accepted_in_their_format(
    image_format: str, content_type: str
) -> None:
    clean = normalise(encoded(picture(), image_format), **LIMITS)
    assert (clean.content_type, clean.width, clean.height) == (content_type, 64, 32)
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert stored.format == image_format
        assert stored.size == (64, 32)


def test_a_text_file_named_png_is_refused() -> None:
    assert "not a PNG, JPEG or WebP" in refusal(b"hello, this is not an image\n" * 10)


def test_a_gif_is_refused_whatever_it_claims() -> None:
    assert "not a PNG, JPEG or WebP" in refusal(encoded(picture(), "GIF"))


def test_an_svg_is_refused() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'
    assert "not a PNG, JPEG or WebP" in refusal(svg)


def test_a_truncated_png_is_refused() -> None:
    data = encoded(Image.effect_noise((256, 256), 64).convert("RGB"), "PNG")
    assert "truncated or damaged" in refusal(data[: len(data) // 2])


def test_an_empty_file_is_refused() -> None:
    assert "empty" in refusal(b"")


def test_a_file_over_the_byte_limit_is_refused() -> None:
    assert "larger than 100 bytes" in refusal(encoded(picture(), "PNG"), max_bytes=100)


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` and whose data is a few bytes: no
    decoder could finish it without allocating width x height x 3 bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "side",
    [
        5_000,  # over our limit, under Pillow's own: our header check refuses it
        30_000,  # over Pillow's too (900 million pixels)
    ],
)
def test_a_decompression_bomb_is_refused_from_its_header_before_decoding(
    monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self))
    message = refusal(bomb_png(side, side))
    assert "more than 4000000 pixels" in message
    assert decoded == []  # refused from the header: nothing was decoded


def test_an_image_over_the_pixel_limit_is_refused() -> None:
    assert "100x50, more than 1024 pixels" in refusal(
        encoded(picture(100, 50), "PNG"), max_pixels=1024
    )


def test_an_animated_webp_is_refused() -> None:
    frames = [picture(), picture().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    assert "animated" in refusal(data)


def test_an_exif_rotated_jpeg_comes_out_upright_without_its_exif() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; rotate 90 degrees clockwise
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {0x0002: (48.0, 51.0, 24.0)}  # GPS latitude
    data = encoded(picture(64, 32), "JPEG", exif=exif, comment=b"taken at home")
    clean = normalise(data, **LIMITS)
    assert (clean.width, clean.height) == (32, 64)  # turned as the camera meant
    with Image.open(io.BytesIO(clean.data)) as stored:
        assert stored.size == (32, 64)
        # the red half, once the left, is now the top
        top = stored.convert("RGB").getpixel((16, 8))
        bottom = stored.convert("RGB").getpixel((16, 56))
        assert isinstance(top, tuple)
        assert isinstance(bottom, tuple)
        assert top[0] > 200
        assert top[2] < 60
        assert bottom[2] > 200
        assert bottom[0] < 60
        assert not stored.getexif()
        assert "exif" not in stored.info
        assert "comment" not in stored.info
    assert b"SecretCam" not in clean.data
    assert b"taken at home" not in clean.data


def test_png_text_metadata_is_stripped() -> None:
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Jane Doe, 12 Home Street")
    clean = normalise(encoded(picture(), "PNG", pnginfo=text), **LIMITS)
    assert b"Jane Doe" not in clean.data


def test_a_large_image_is_kept_within_what_3d_vendors_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(images, "MAX_SIDE", 100)
    monkeypatch.setattr(images, "MAX_STORED_BYTES", 8_000)
    noise = Image.effect_noise((400, 200), 90).convert("RGB")
    clean = normalise(encoded(noise, "PNG"), **LIMITS)
    assert max(clean.width, clean.height) <= 100
    assert len(clean.data) <= 8_000
    assert clean.width == 2 * clean.height  # scaled, not cropped


def test_the_largest_stored_image_fits_hunyuans_base64_limit() -> None:
    from providers.hunyuan import MAX_IMAGE_BASE64

    assert -(-images.MAX_STORED_BYTES // 3) * 4 <= MAX_IMAGE_BASE64
