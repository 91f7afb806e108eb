"""What may happen to a generation request, and who may make it happen.

Services take a Unit (the open transaction) and never commit. Every status, step or
progress change goes through `transition`, which asks the state machine in stages.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any

from app.auth import Viewer
from app.errors import BadUserInput
from app.metrics import PHASE_DURATION
from app.queue import StageMessage
from app.requests import repository
from app.requests.errors import (
    IdempotencyKeyReused,
    ImageNotFound,
    ImageNotSelectable,
    RequestNotAwaitingSelection,
    RequestNotCancellable,
    RequestNotFound,
)
from app.requests.stages import RESTING, Phase, RequestState, Status, advance, initial_state
from app.tables import GeneratedImage, GenerationJob, GenerationRequest, RequestEvent, utcnow
from app.unit import Unit
from app.users import repository as users

MAX_PROMPT = 2000
MAX_IMAGES = 4
_ID = re.compile(r"^[0-9a-f]{32}$")
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Where each stage sits on the request's one 0-100 progress figure.
PROGRESS_OPTIMIZING = 2.0
PROGRESS_IMAGES_START = 10.0
PROGRESS_IMAGES_END = 50.0
PROGRESS_MODEL_START = 52.0
PROGRESS_MODEL_END = 95.0
PROGRESS_STORING = 97.0


class Stage:
    """Names of the pipeline actors: messages are sent to them by name."""

    OPTIMIZE_PROMPT = "optimize_prompt"
    GENERATE_IMAGE = "generate_image"
    START_MODEL = "start_model"
    POLL_MODEL = "poll_model"


@dataclass(frozen=True, slots=True)
class NewRequest:
    prompt: str
    image_count: int = 4
    optimize_prompt: bool = True
    auto_model: bool = False
    image_size: int = 512
    idempotency_key: str | None = None

    def same_as(self, request: GenerationRequest) -> bool:
        """Whether `request` was created from this very input."""
        return (
            request.prompt,
            request.image_count,
            request.optimize_prompt,
            request.auto_model,
        ) == (
            self.prompt,
            self.image_count,
            self.optimize_prompt,
            self.auto_model,
        )


def check_id(value: str, field: str) -> str:
    if not _ID.match(value):
        raise BadUserInput(f"{field} is not a valid id", field=field)
    return value


def validate(new: NewRequest) -> NewRequest:
    prompt = new.prompt.strip()
    if not prompt:
        raise BadUserInput("prompt must not be empty", field="prompt")
    if len(prompt) > MAX_PROMPT:
        raise BadUserInput(f"prompt must be at most {MAX_PROMPT} characters", field="prompt")
    if not 1 <= new.image_count <= MAX_IMAGES:
        raise BadUserInput(f"imageCount must be between 1 and {MAX_IMAGES}", field="imageCount")
    key = new.idempotency_key
    if key is not None and not _KEY.match(key):
        raise BadUserInput(
            "idempotencyKey must be 1-128 letters, digits or . _ : -", field="idempotencyKey"
        )
    return replace(new, prompt=prompt)


def state_of(request: GenerationRequest) -> RequestState:
    return RequestState(
        status=Status(request.status),
        phase=Phase(request.phase),
        step=request.step,
        progress=request.progress,
        progress_estimated=request.progress_estimated,
        seq=request.seq,
        auto_model=request.auto_model,
    )


async def _append_event(
    unit: Unit, request: GenerationRequest, state: RequestState, **detail: Any
) -> RequestEvent:
    user = await users.get(unit.session, request.user_id, for_update=True)
    assert user is not None, "a request's owner exists (foreign key)"
    user.event_seq += 1
    event = RequestEvent(
        request_id=request.id,
        seq=state.seq,
        user_id=request.user_id,
        user_seq=user.event_seq,
        status=state.status,
        phase=state.phase,
        step=state.step,
        progress=state.progress,
        progress_estimated=state.progress_estimated,
        **detail,
    )
    unit.session.add(event)
    unit.events.append(event)
    return event


async def transition(
    unit: Unit,
    request: GenerationRequest,
    target: Status,
    *,
    step: str,
    progress: float | None = None,
    estimated: bool = False,
    message: str | None = None,
    error_code: str | None = None,
    image_id: str | None = None,
    model_id: str | None = None,
) -> RequestEvent:
    """The one place a request's status, step or progress changes; writes its event row.

    The caller holds the request row locked (loaded `for_update`), so `seq` numbers
    are handed out one at a time.
    """
    state = advance(state_of(request), target, step=step, progress=progress, estimated=estimated)
    now = utcnow()
    if state.phase != request.phase or target in RESTING:
        started = request.phase_started_at or request.created_at
        PHASE_DURATION.labels(request.phase).observe((now - started).total_seconds())
        request.phase_started_at = now
    request.status, request.phase, request.step = state.status, state.phase, state.step
    request.progress, request.progress_estimated = state.progress, state.progress_estimated
    request.seq = state.seq
    request.updated_at = now
    if target in RESTING:
        request.completed_at = request.updated_at
    if error_code is not None:
        request.error_code, request.error_message = error_code, (message or "")[:1000]
    return await _append_event(
        unit,
        request,
        state,
        message=message[:500] if message else None,
        error_code=error_code,
        image_id=image_id,
        model_id=model_id,
    )


def _new_job(request_id: str, kind: str, image_id: str | None = None) -> GenerationJob:
    return GenerationJob(request_id=request_id, kind=kind, image_id=image_id)


async def create_request(unit: Unit, viewer: Viewer, new: NewRequest) -> GenerationRequest:
    new = validate(new)
    # Lock the owner before inserting rows that refer to it (see workers.requests._locked);
    # the lock also makes concurrent creations with one idempotency key take turns.
    await users.get(unit.session, viewer.id, for_update=True)
    if new.idempotency_key is not None:
        earlier = await repository.by_idempotency_key(unit.session, viewer.id, new.idempotency_key)
        if earlier is not None:
            if not new.same_as(earlier):
                raise IdempotencyKeyReused()
            return earlier
    state = initial_state(auto_model=new.auto_model)
    request = GenerationRequest(
        user_id=viewer.id,
        prompt=new.prompt,
        image_count=new.image_count,
        image_width=new.image_size,
        image_height=new.image_size,
        optimize_prompt=new.optimize_prompt,
        auto_model=new.auto_model,
        status=state.status,
        phase=state.phase,
        step=state.step,
        progress=state.progress,
        seq=state.seq,
        idempotency_key=new.idempotency_key,
    )
    unit.session.add(request)
    await unit.session.flush()  # the job and the event refer to the request row
    job = _new_job(request.id, "PROMPT")
    unit.session.add(job)
    await _append_event(unit, request, state, message="request received")
    unit.messages.append(StageMessage(Stage.OPTIMIZE_PROMPT, (job.id,)))
    return request


async def get_request(unit_or_session: Unit, viewer: Viewer, request_id: str) -> GenerationRequest:
    check_id(request_id, "id")
    request = await repository.get_owned(unit_or_session.session, request_id, viewer.id)
    if request is None:
        raise RequestNotFound()
    return request


def image_seed(request_id: str, index: int) -> int:
    """A stable seed per image, so a regenerated image is the same image."""
    digest = hashlib.sha256(f"{request_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


async def begin_images(unit: Unit, request: GenerationRequest, prompts: list[str]) -> None:
    """Stores the prompt variants and fans out one image job per variant."""
    request.optimized_prompts = prompts
    for index, prompt in enumerate(prompts):
        image = GeneratedImage(
            request_id=request.id, index=index, prompt=prompt, seed=image_seed(request.id, index)
        )
        job = _new_job(request.id, "IMAGE", image.id)
        unit.session.add_all([image, job])
        unit.messages.append(StageMessage(Stage.GENERATE_IMAGE, (job.id,)))
    await transition(
        unit,
        request,
        Status.IMAGE_GENERATING,
        step=f"generating images (0 of {len(prompts)} ready)",
        progress=PROGRESS_IMAGES_START,
    )


async def settle_images(unit: Unit, request: GenerationRequest, image: GeneratedImage) -> None:
    """After one image finished or failed: report it, and close the phase when all are done."""
    counts = await repository.image_job_counts(unit.session, request.id)
    total = sum(counts.values())
    done = counts.get("COMPLETED", 0)
    finished = done + counts.get("FAILED", 0) + counts.get("CANCELLED", 0)
    span = PROGRESS_IMAGES_END - PROGRESS_IMAGES_START
    ok = image.status == "COMPLETED"
    await transition(
        unit,
        request,
        Status.IMAGE_GENERATING,
        step=f"generating images ({done} of {total} ready)",
        progress=PROGRESS_IMAGES_START + span * finished / max(total, 1),
        message=f"image {image.index + 1} of {total} {'ready' if ok else 'failed'}",
        image_id=image.id,
    )
    if finished < total:
        return
    if done == 0:
        await transition(
            unit,
            request,
            Status.IMAGE_FAILED,
            step="image generation failed",
            error_code="IMAGE_GENERATION_FAILED",
            message="no image could be generated",
        )
        return
    step = "images ready" if request.auto_model else "awaiting image selection"
    await transition(unit, request, Status.IMAGE_COMPLETED, step=step, progress=PROGRESS_IMAGES_END)
    if request.auto_model:
        chosen = await repository.first_completed_image(unit.session, request.id)
        assert chosen is not None, "at least one image completed"
        await start_model_phase(unit, request, chosen, step="image selected automatically")


async def start_model_phase(
    unit: Unit, request: GenerationRequest, image: GeneratedImage, *, step: str
) -> None:
    request.selected_image_id = image.id
    request.error_code = request.error_message = None
    job = _new_job(request.id, "MODEL", image.id)
    unit.session.add(job)
    await transition(
        unit,
        request,
        Status.MODEL_PENDING,
        step=step,
        progress=PROGRESS_IMAGES_END,
        image_id=image.id,
    )
    unit.messages.append(StageMessage(Stage.START_MODEL, (job.id,)))


async def select_image(
    unit: Unit, viewer: Viewer, request_id: str, image_id: str
) -> GenerationRequest:
    check_id(request_id, "requestId")
    check_id(image_id, "imageId")
    request = await repository.get_owned(unit.session, request_id, viewer.id, for_update=True)
    if request is None:
        raise RequestNotFound()
    image = await repository.get_image(unit.session, image_id)
    if image is None or image.request_id != request.id:
        raise ImageNotFound()
    if request.status not in (Status.IMAGE_COMPLETED, Status.MODEL_FAILED):
        raise RequestNotAwaitingSelection(status=request.status)
    if image.status != "COMPLETED":
        raise ImageNotSelectable("only a completed image can be selected")
    await start_model_phase(unit, request, image, step="image selected")
    return request


async def cancel_request(unit: Unit, viewer: Viewer, request_id: str) -> GenerationRequest:
    """Stops a request at once: CANCELLED is committed and published now, and every stage
    still running finds it so when its provider call returns, and does nothing more."""
    check_id(request_id, "id")
    request = await repository.get_owned(unit.session, request_id, viewer.id, for_update=True)
    if request is None:
        raise RequestNotFound()
    if request.status in RESTING:
        raise RequestNotCancellable(status=request.status)
    await _cancel(unit, request, step="cancelled by its owner")
    return request


async def _cancel(unit: Unit, request: GenerationRequest, *, step: str) -> None:
    await transition(unit, request, Status.CANCELLED, step=step)
    await repository.cancel_open_jobs(unit.session, request.id)


async def delete_request(unit: Unit, viewer: Viewer, request_id: str) -> str:
    """Hides the request from its owner; a request still running is cancelled first."""
    check_id(request_id, "id")
    request = await repository.get_owned(unit.session, request_id, viewer.id, for_update=True)
    if request is None:
        raise RequestNotFound()
    if request.status not in RESTING:
        await _cancel(unit, request, step="deleted by its owner")
    request.deleted_at = utcnow()
    return request.id
