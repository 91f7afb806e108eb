"""The 3D-model library: who may see, change, publish, download and like a model.

A private model exists only for its owner: everyone else gets NOT_FOUND, as if it did
not exist. Anonymous visitors may browse public models but not act on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Viewer
from app.errors import BadUserInput
from app.models import repository
from app.models.changes import PublicChange
from app.models.errors import ModelNotFound
from app.models.repository import ModelRow
from app.models.views import ViewCounter
from app.requests.service import check_id
from app.tables import GenerationRequest, Model, utcnow
from app.unit import Unit
from app.users import repository as users
from providers.conversion import TARGETS

MAX_NAME = 200
MAX_DESCRIPTION = 2000
PUBLIC, PRIVATE = "PUBLIC", "PRIVATE"


def model_name(prompt: str) -> str:
    """A readable default name: the prompt's first words."""
    name = " ".join(prompt.split()[:8])
    return (name[:77] + "...") if len(name) > 80 else name or "Untitled model"


def can_see(model: ModelRow, viewer_id: str | None) -> bool:
    """Whether the user `viewer_id` (None: anonymous) may see the model."""
    return model.visibility == PUBLIC or (viewer_id is not None and viewer_id == model.owner_id)


async def visible(
    session: AsyncSession, viewer_id: str | None, model_id: str, *, for_update: bool = False
) -> Model:
    check_id(model_id, "id")
    model = await repository.get(session, model_id, for_update=for_update)
    if model is None or not can_see(model, viewer_id):
        raise ModelNotFound()
    return model


async def owned(session: AsyncSession, viewer: Viewer, model_id: str) -> Model:
    model = await visible(session, viewer.id, model_id, for_update=True)
    if model.owner_id != viewer.id:
        raise ModelNotFound()  # public, but not theirs to change: as good as absent
    return model


@dataclass(frozen=True, slots=True)
class StoredFile:
    name: str
    key: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A finished model's files as stored: the main one first (GLB, or an OBJ with its
    material and textures), and its preview image."""

    format: str
    files: list[StoredFile]
    preview_key: str | None


async def add_to_library(
    unit: Unit, request: GenerationRequest, stored: StoredModel, *, provider: str
) -> Model:
    # The owner's row first: the model's foreign key takes a shared lock on it, and two
    # transactions that each hold one and then number their events (an exclusive lock
    # on the same row) would deadlock.
    await users.get(unit.session, request.user_id, for_update=True)
    main = stored.files[0]
    model = Model(
        owner_id=request.user_id,
        request_id=request.id,
        source_image_id=request.selected_image_id,
        name=model_name(request.prompt),
        format=stored.format,
        file_key=main.key,
        content_type=main.content_type,
        preview_key=stored.preview_key,
        file_size=sum(file.size for file in stored.files),
        files=[
            {"name": f.name, "key": f.key, "content_type": f.content_type, "size": f.size}
            for f in stored.files
        ],
        provider=provider,
    )
    unit.session.add(model)
    await unit.session.flush()
    return model


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise BadUserInput("name must not be empty", field="name")
    if len(cleaned) > MAX_NAME:
        raise BadUserInput(f"name must be at most {MAX_NAME} characters", field="name")
    return cleaned


def _clean_description(description: str) -> str | None:
    if len(description) > MAX_DESCRIPTION:
        raise BadUserInput(
            f"description must be at most {MAX_DESCRIPTION} characters", field="description"
        )
    return description.strip() or None


async def update_model(
    unit: Unit, viewer: Viewer, model_id: str, *, name: str | None, description: str | None
) -> Model:
    if name is None and description is None:
        raise BadUserInput("give a name, a description or both", field="input")
    new_name = _clean_name(name) if name is not None else None
    new_description = _clean_description(description) if description is not None else None
    model = await owned(unit.session, viewer, model_id)
    if new_name is not None:
        model.name = new_name
    if description is not None:
        model.description = new_description
    model.updated_at = utcnow()
    if model.visibility == PUBLIC:
        unit.public_changes.append(PublicChange(model_ids=(model.id,)))
    return model


async def set_visibility(unit: Unit, viewer: Viewer, model_id: str, visibility: str) -> Model:
    """Publishing (or unpublishing) twice is the same as once."""
    model = await owned(unit.session, viewer, model_id)
    if model.visibility != visibility:
        model.visibility = visibility
        model.published_at = utcnow() if visibility == PUBLIC else None
        model.updated_at = utcnow()
        unit.public_changes.append(PublicChange(model_ids=(model.id,), listings=True))
    return model


async def delete_model(unit: Unit, viewer: Viewer, model_id: str) -> None:
    """Removes the model and its likes and favorites; its files go once the transaction
    has committed."""
    model = await owned(unit.session, viewer, model_id)
    unit.discarded.extend(stored_keys(model))
    await repository.delete_model(unit.session, model.id)
    if model.visibility == PUBLIC:
        unit.public_changes.append(PublicChange(model_ids=(model.id,), listings=True))


def stored_keys(model: Model) -> list[str]:
    """Every storage key of the model, once each: all its files (an OBJ's material and
    textures are not `file_key`, and their signed links would outlive the model) and its
    preview."""
    keys = [model.file_key, *(file["key"] for file in model.files or []), model.preview_key]
    return list(dict.fromkeys(key for key in keys if key))


def download_kind(model: ModelRow, file_format: str | None) -> str | None:
    """What a download of the model in `file_format` (None: as stored) hands out: None
    for its own main file, else the format to convert it to. BAD_USER_INPUT for a stored
    format it is not in (a GLB is not converted to OBJ, nor an OBJ to GLB)."""
    if file_format is None or file_format == model.format:
        return None
    if file_format in TARGETS:
        return file_format
    offered = ", ".join(sorted({model.format, *TARGETS})).upper()
    raise BadUserInput(
        f"this model is stored as {model.format.upper()}; it downloads as {offered}",
        field="format",
    )


async def count_download(unit: Unit, viewer_id: str, model_id: str) -> Model:
    model = await visible(unit.session, viewer_id, model_id, for_update=True)
    await repository.count(unit.session, model, "DOWNLOAD", +1)
    _counted(unit, model, "DOWNLOAD")
    return model


def count_view(views: ViewCounter, viewer_id: str | None, model: ModelRow) -> bool:
    """A view of a model the viewer may see: counted (later, in a batch) when the model
    is public and the viewer is not its owner (an owner looking at their own model is
    not interest from others). Whether it counted."""
    if model.visibility != PUBLIC or (viewer_id is not None and viewer_id == model.owner_id):
        return False
    views.add(model.id)
    return True


async def set_interaction(
    unit: Unit, viewer_id: str, model_id: str, kind: str, *, on: bool
) -> Model:
    """Like, unlike, favorite or unfavorite for the user `viewer_id`: idempotent, and
    counted exactly once. The model comes back with its counts as committed.

    The model row is locked first: on MySQL the interaction's foreign-key check takes a
    shared lock on it, and two likes upgrading shared locks to the counter's exclusive
    one would deadlock. Four statements in all: the lock, the insert (or delete), the
    count, the commit.
    """
    model = await visible(unit.session, viewer_id, model_id, for_update=True)
    if on:
        changed = await repository.add_interaction(unit.session, viewer_id, model.id, kind)
    else:
        changed = await repository.remove_interaction(unit.session, viewer_id, model.id, kind)
    if changed:
        await repository.count(unit.session, model, kind, +1 if on else -1)
        _counted(unit, model, kind, viewer_id)
    return model


# The gallery orders each counter weighs in (see repository.SORT_COLUMNS, WEIGHT).
_ORDERS = {
    "LIKE": ("POPULAR", "MOST_LIKED"),
    "FAVORITE": ("POPULAR",),
    "DOWNLOAD": ("POPULAR", "MOST_DOWNLOADED"),
}


def _counted(unit: Unit, model: Model, kind: str, viewer_id: str | None = None) -> None:
    """A counter of the model moved (`viewer_id`: by that user's like or favorite). A
    public model's own fields changed, and it may have moved in the gallery orders that
    weigh that counter (a private model's counters show to its owner alone; nothing
    cached holds them). The user's own flags changed whether the model is public or not
    (one published again shows them)."""
    public = model.visibility == PUBLIC
    if not public and viewer_id is None:
        return
    unit.public_changes.append(
        PublicChange(
            model_ids=(model.id,) if public else (),
            orders=_ORDERS[kind] if public else (),
            viewer_ids=(viewer_id,) if viewer_id is not None else (),
        )
    )
