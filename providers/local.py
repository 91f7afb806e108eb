"""Offline providers that really produce output: no keys, no network.

- `LocalPromptOptimizer` rewrites a prompt into distinct variants, deterministically.
- `LocalImageGenerator` renders a PNG from the prompt and seed with Pillow.
- `LocalModelGenerator` turns an image into a textured relief mesh, a glTF 2.0 binary.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import re
import struct
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from providers.base import ImageResult, JobState, ModelFile, ModelJobStatus, ProviderRejected

_STYLES = (
    "studio lighting, matte clay material",
    "soft daylight, painted resin finish",
    "three-quarter view, smooth PLA surface",
    "front view, polished ceramic glaze",
    "low-poly stylised, crisp edges",
    "toy figurine look, bright vinyl colours",
    "museum plinth, bronze patina",
    "isometric view, carved wood texture",
)
_PRINTABLE = "single object, centered, plain background, clean silhouette, printable base"


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()


class LocalPromptOptimizer:
    """An LLM stand-in: one prompt becomes `count` distinct variants tuned for 3D printing."""

    name = "local"

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency

    async def optimize(self, prompt: str, count: int) -> list[str]:
        await asyncio.sleep(self.latency)
        text = " ".join(prompt.split())
        if not text:
            raise ProviderRejected("the prompt is empty", provider=self.name)
        if not 1 <= count <= len(_STYLES):
            raise ProviderRejected(f"count must be 1-{len(_STYLES)}", provider=self.name)
        start = _digest(text)[0] % len(_STYLES)
        styles = [_STYLES[(start + i) % len(_STYLES)] for i in range(count)]
        return [f"{text}, {style}, {_PRINTABLE}" for style in styles]


def _colour(seed: bytes, offset: int) -> tuple[int, int, int]:
    return seed[offset], seed[offset + 1], seed[offset + 2]


def render_png(prompt: str, seed: int, width: int, height: int) -> bytes:
    """A gradient background, one bold shape with a clear silhouette, and the prompt."""
    digest = _digest(prompt, seed)
    top, bottom = _colour(digest, 0), _colour(digest, 3)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(height - 1, 1)
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    fill = tuple(255 - c for c in _colour(digest, 6))
    cx, cy, radius = width / 2, height * 0.45, min(width, height) * (0.22 + digest[9] / 1275)
    sides = 3 + digest[10] % 6
    if digest[11] % 3 == 0:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        draw.regular_polygon((cx, cy, radius), sides, rotation=digest[12], fill=fill)
    font = ImageFont.load_default()
    draw.text((max(4, width * 0.05), height * 0.85), prompt[:40], fill=(255, 255, 255), font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class LocalImageGenerator:
    name = "local"

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency

    async def generate(self, prompt: str, *, seed: int, width: int, height: int) -> ImageResult:
        await asyncio.sleep(self.latency)
        if not (64 <= width <= 2048 and 64 <= height <= 2048):
            raise ProviderRejected("image size must be 64-2048 pixels", provider=self.name)
        data = await asyncio.to_thread(render_png, prompt, seed, width, height)
        return ImageResult(content_type="image/png", width=width, height=height, data=data)


# -- the relief mesh ---------------------------------------------------------------------

_FLOAT, _UINT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def _heights(image: Image.Image, grid: int) -> list[float]:
    """Brightness away from the border colour becomes height: the subject stands out."""
    small = ImageOps.grayscale(image.convert("RGB")).resize((grid, grid))
    pixels = [float(p) for p in small.get_flattened_data() if isinstance(p, int | float)]
    border = sum(pixels[:grid]) / grid
    return [0.05 + 0.3 * abs(p - border) / 255 for p in pixels]


def _relief(heights: list[float], grid: int) -> tuple[list[float], list[float], list[int]]:
    """Top surface vertices (x, y, z), UVs and triangles, plus a base and four walls."""
    positions: list[float] = []
    uvs: list[float] = []
    for row in range(grid):
        for col in range(grid):
            u, v = col / (grid - 1), row / (grid - 1)
            positions += [u - 0.5, heights[row * grid + col], v - 0.5]
            uvs += [u, v]
    # the same ring at height 0: the bottom of the walls and the base
    for row in range(grid):
        for col in range(grid):
            u, v = col / (grid - 1), row / (grid - 1)
            positions += [u - 0.5, 0.0, v - 0.5]
            uvs += [u, v]
    top, low = 0, grid * grid
    indices: list[int] = []
    for row in range(grid - 1):
        for col in range(grid - 1):
            a = row * grid + col
            b, c, d = a + 1, a + grid, a + grid + 1
            indices += [top + a, top + c, top + b, top + b, top + c, top + d]
            indices += [low + a, low + b, low + c, low + b, low + d, low + c]
    edge = [(0, i) for i in range(grid)] + [(i, grid - 1) for i in range(grid)]
    edge += [(grid - 1, i) for i in reversed(range(grid))] + [(i, 0) for i in reversed(range(grid))]
    ring = [r * grid + c for r, c in edge]
    for a, b in itertools.pairwise(ring):
        if a != b:
            indices += [top + a, top + b, low + a, top + b, low + b, low + a]
    return positions, uvs, indices


def _pad(data: bytes, filler: bytes) -> bytes:
    return data + filler * (-len(data) % 4)


def _pack_glb(positions: list[float], uvs: list[float], indices: list[int], png: bytes) -> bytes:
    chunks = [
        struct.pack(f"<{len(positions)}f", *positions),
        struct.pack(f"<{len(uvs)}f", *uvs),
        struct.pack(f"<{len(indices)}I", *indices),
        png,
    ]
    views, blob = [], b""
    for index, chunk in enumerate(chunks):
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(chunk)}
        if index < 3:
            view["target"] = _ELEMENT_ARRAY_BUFFER if index == 2 else _ARRAY_BUFFER
        views.append(view)
        blob += _pad(chunk, b"\0")
    xs, ys, zs = positions[0::3], positions[1::3], positions[2::3]
    count = len(positions) // 3
    gltf = {
        "asset": {"version": "2.0", "generator": "lumi-local"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "relief"}],
        "meshes": [
            {
                "primitives": [
                    {"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}
                ]
            }
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": _FLOAT,
                "count": count,
                "type": "VEC3",
                "min": [min(xs), min(ys), min(zs)],
                "max": [max(xs), max(ys), max(zs)],
            },
            {"bufferView": 1, "componentType": _FLOAT, "count": count, "type": "VEC2"},
            {"bufferView": 2, "componentType": _UINT, "count": len(indices), "type": "SCALAR"},
        ],
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
        "images": [{"bufferView": 3, "mimeType": "image/png"}],
        "samplers": [{"magFilter": 9729, "minFilter": 9729}],
        "textures": [{"source": 0, "sampler": 0}],
        "materials": [
            {
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0},
                    "metallicFactor": 0.0,
                    "roughnessFactor": 0.8,
                }
            }
        ],
    }
    body = _pad(json.dumps(gltf, separators=(",", ":")).encode(), b" ")
    total = 12 + 8 + len(body) + 8 + len(blob)
    return b"".join(
        [
            struct.pack("<4sII", b"glTF", 2, total),
            struct.pack("<I4s", len(body), b"JSON"),
            body,
            struct.pack("<I4s", len(blob), b"BIN\0"),
            blob,
        ]
    )


def _png(image: Image.Image, size: int) -> bytes:
    buffer = io.BytesIO()
    ImageOps.contain(image.convert("RGB"), (size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


def build_relief_glb(image_bytes: bytes, grid: int = 48) -> bytes:
    """A textured relief of the image: a printable slab whose height follows the picture."""
    image = Image.open(io.BytesIO(image_bytes))
    positions, uvs, indices = _relief(_heights(image, grid), grid)
    return _pack_glb(positions, uvs, indices, _png(image, 512))


def _groups(values: list[Any], size: int) -> Iterator[tuple[Any, ...]]:
    return zip(*[iter(values)] * size, strict=True)


def build_relief_obj_zip(image_bytes: bytes, grid: int = 48) -> bytes:
    """The same relief as an OBJ with its MTL and texture, zipped as vendors deliver it."""
    image = Image.open(io.BytesIO(image_bytes))
    positions, uvs, indices = _relief(_heights(image, grid), grid)
    lines = ["# Lumi offline relief", "mtllib material.mtl", "o relief"]
    lines += [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in _groups(positions, 3)]
    lines += [f"vt {u:.5f} {1 - v:.5f}" for u, v in _groups(uvs, 2)]
    lines.append("usemtl relief")
    lines += [
        f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in _groups(indices, 3)
    ]
    material = "newmtl relief\nKa 1 1 1\nKd 1 1 1\nmap_Kd texture.png\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.obj", "\n".join(lines) + "\n")
        archive.writestr("material.mtl", material)
        archive.writestr("texture.png", _png(image, 512))
    return buffer.getvalue()


class LocalModelGenerator:
    """A 3D vendor stand-in: jobs are files in `work_dir`, done after `latency` seconds."""

    name = "local"
    _JOB = re.compile(r"^local-[0-9a-f]{32}$")

    def __init__(self, *, work_dir: Path, latency: float = 0.0, grid: int = 48) -> None:
        self.work_dir = work_dir
        self.latency = latency
        self.grid = grid
        self.typical_seconds = latency or 1.0

    async def submit(
        self, image: bytes, content_type: str, *, prompt: str, format: str = "glb"
    ) -> str:
        try:
            Image.open(io.BytesIO(image)).verify()
        except (UnidentifiedImageError, OSError) as exc:
            raise ProviderRejected("invalid image", provider=self.name) from exc
        if format not in ("glb", "obj"):
            raise ProviderRejected(f"format {format!r} is not offered", provider=self.name)
        job_id = f"local-{uuid.uuid4().hex}"
        meta = json.dumps({"submitted_at": time.time(), "prompt": prompt, "format": format})
        await asyncio.to_thread(self._save, job_id, image, meta)
        return job_id

    def _save(self, job_id: str, image: bytes, meta: str) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / f"{job_id}.img").write_bytes(image)
        (self.work_dir / f"{job_id}.json").write_text(meta)

    async def poll(self, vendor_job_id: str) -> ModelJobStatus:
        meta_path = self.work_dir / f"{vendor_job_id}.json"
        if not self._JOB.match(vendor_job_id) or not meta_path.is_file():
            return ModelJobStatus(
                JobState.FAILED, error_code="JOB_NOT_FOUND", error_message="unknown job"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("cancelled"):
            return ModelJobStatus(
                JobState.FAILED, error_code="JOB_CANCELLED", error_message="cancelled"
            )
        elapsed = time.time() - float(meta["submitted_at"])
        if elapsed < self.latency:
            return ModelJobStatus(
                JobState.RUNNING, progress=min(99.0, 100 * elapsed / self.latency)
            )
        obj = meta.get("format") == "obj"
        model, preview = await asyncio.to_thread(self._result, vendor_job_id, obj)
        file = (
            ModelFile("zip", "application/zip", data=model)
            if obj
            else ModelFile("glb", "model/gltf-binary", data=model)
        )
        return ModelJobStatus(
            JobState.SUCCEEDED,
            progress=100.0,
            files=[file],
            preview=ModelFile("png", "image/png", data=preview),
        )

    async def cancel(self, vendor_job_id: str) -> None:
        """Stops a job: its polls answer FAILED from now on and no model is built."""
        meta_path = self.work_dir / f"{vendor_job_id}.json"
        if not self._JOB.match(vendor_job_id) or not meta_path.is_file():
            return
        meta = json.loads(meta_path.read_text())
        meta["cancelled"] = True
        await asyncio.to_thread(meta_path.write_text, json.dumps(meta))

    def _result(self, job_id: str, obj: bool = False) -> tuple[bytes, bytes]:
        """Built once and kept beside the job, so polling a finished job again is cheap."""
        path = self.work_dir / f"{job_id}.{'zip' if obj else 'glb'}"
        image = (self.work_dir / f"{job_id}.img").read_bytes()
        if not path.is_file():
            build = build_relief_obj_zip if obj else build_relief_glb
            # Written whole or not at all: a process killed mid-write must not leave a
            # truncated model that the next poll, from another process, would hand out.
            partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
            partial.write_bytes(build(image, self.grid))
            partial.replace(path)
        return path.read_bytes(), _png(Image.open(io.BytesIO(image)), 256)
