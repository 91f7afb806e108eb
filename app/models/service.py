"""The 3D-model library: what a finished request leaves its owner."""

from __future__ import annotations

from app.tables import GenerationRequest, Model
from app.unit import Unit


def model_name(prompt: str) -> str:
    """A readable default name: the prompt's first words."""
    words = prompt.split()
    name = " ".join(words[:8])
    return (name[:77] + "...") if len(name) > 80 else name or "Untitled model"


async def add_to_library(
    unit: Unit,
    request: GenerationRequest,
    *,
    file_key: str,
    file_format: str,
    content_type: str,
    file_size: int,
    preview_key: str | None,
    provider: str,
) -> Model:
    model = Model(
        owner_id=request.user_id,
        request_id=request.id,
        source_image_id=request.selected_image_id,
        name=model_name(request.prompt),
        format=file_format,
        file_key=file_key,
        content_type=content_type,
        preview_key=preview_key,
        file_size=file_size,
        provider=provider,
    )
    unit.session.add(model)
    await unit.session.flush()
    return model
