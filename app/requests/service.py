"""What may happen to a generation request, and who may make it happen.

Services take a Unit (the open transaction) and never commit. Every status, step or
progress change goes through `transition`, which asks the state machine in stages.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from app.auth import Viewer
from app.config import Settings
from app.credits import service as credits
from app.errors import BadUserInput, Forbidden, InsufficientCredits
from app.metrics import PHASE_DURATION
from app.models import repository as models
from app.queue import DEFAULT_QUEUE, QUEUE_RANK, StageMessage
from app.requests import repository
from app.requests.errors import (
    IdempotencyKeyReused,
    ImageNotFound,
    ImageNotSelectable,
    RequestNotAwaitingSelection,
    RequestNotCancellable,
    RequestNotFound,
    RequestNotRetryable,
)
from app.requests.stages import RESTING, Phase, RequestState, Status, advance, initial_state
from app.tables import (
    GeneratedImage,
    GenerationJob,
    GenerationRequest,
    RequestEvent,
    User,
    utcnow,
)
from app.unit import Unit
from app.uploads import repository as uploads
from app.uploads.service import UploadNotFound
from app.users import repository as users

MAX_PROMPT = 2000
MAX_IMAGES = 4
_ID = re.compile(r"^[0-9a-f]{32}$")
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
PRIORITIES = ("high", "default", "low")
MODEL_FORMATS = ("glb", "obj")
_FAILURES = frozenset({Status.IMAGE_FAILED, Status.MODEL_FAILED, Status.FAILED})

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
    CANCEL_MODEL = "cancel_model"  # stop the vendor job of a deleted request


@dataclass(frozen=True, slots=True)
class Policy:
    """What the settings decide about requests: prices and who may jump the queue."""

    image_price: int = 1
    model_price: int = 5
    high_priority_roles: frozenset[str] = frozenset({"admin"})
    image_providers: tuple[str, ...] = ("local",)
    model_providers: tuple[str, ...] = ("local",)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            image_price=settings.image_credit_cost,
            model_price=settings.model_credit_cost,
            high_priority_roles=settings.high_priority_role_set,
            image_providers=tuple(settings.chain("image")),
            model_providers=tuple(settings.chain("model")),
        )

    def check_providers(self, new: NewRequest) -> None:
        """An unknown or unconfigured vendor is BAD_USER_INPUT naming the configured ones."""
        for name, known, field in (
            (new.image_provider, self.image_providers, "imageProvider"),
            (new.model_provider, self.model_providers, "modelProvider"),
        ):
            if name is not None and name not in known:
                raise BadUserInput(
                    f"{field} {name!r} is not configured; configured: {', '.join(known)}",
                    field=field,
                )


@dataclass(frozen=True, slots=True)
class NewRequest:
    prompt: str
    image_count: int = 4
    optimize_prompt: bool = True
    auto_model: bool = False
    image_size: int = 512
    idempotency_key: str | None = None
    priority: str = "default"
    image_provider: str | None = None
    model_provider: str | None = None
    model_format: str = "glb"

    def same_as(self, request: GenerationRequest) -> bool:
        """Whether `request` was created from this very input."""
        return (
            request.prompt,
            request.image_count,
            request.optimize_prompt,
            request.auto_model,
            request.priority,
            request.image_provider,
            request.model_provider,
            request.model_format,
        ) == (
            self.prompt,
            self.image_count,
            self.optimize_prompt,
            self.auto_model,
            self.priority,
            self.image_provider,
            self.model_provider,
            self.model_format,
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
    if new.priority not in PRIORITIES:
        raise BadUserInput("priority must be high, default or low", field="priority")
    if new.model_format not in MODEL_FORMATS:
        raise BadUserInput("modelFormat must be glb or obj", field="modelFormat")
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


def _append_event(
    unit: Unit, request: GenerationRequest, state: RequestState, **detail: Any
) -> RequestEvent:
    """The event of a change, stored with the others when the unit commits (its
    `user_seq` is given then: `Unit.store_events`)."""
    event = RequestEvent(
        request_id=request.id,
        seq=state.seq,
        user_id=request.user_id,
        user_seq=0,
        status=state.status,
        phase=state.phase,
        step=state.step,
        progress=state.progress,
        progress_estimated=state.progress_estimated,
        **detail,
    )
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
    job: JobNote | None = None,
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
    if error_code is not None and target in _FAILURES:
        request.error_code, request.error_message = error_code, (message or "")[:1000]
    return _append_event(
        unit,
        request,
        state,
        message=message[:500] if message else None,
        error_code=error_code,
        image_id=image_id,
        model_id=model_id,
        **(job.detail() if job else {}),
    )


@dataclass(frozen=True, slots=True)
class JobNote:
    """The job an event is about, as the event shows it (a retry shows RETRYING)."""

    job_id: str
    status: str
    attempt: int
    next_attempt_at: datetime | None = None

    def detail(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "job_status": self.status,
            "attempt": self.attempt,
            "next_attempt_at": self.next_attempt_at,
        }


def stage_message(
    request: GenerationRequest, stage: str, *args: Any, delay: float = 0.0
) -> StageMessage:
    """A message for `stage`, on the queue of the request's priority."""
    return StageMessage(stage, args, delay_seconds=delay, queue=request.priority)


def _new_job(request: GenerationRequest, kind: str, image_id: str | None = None) -> GenerationJob:
    """A job waiting at the back of its request's priority queue."""
    return GenerationJob(
        request_id=request.id,
        kind=kind,
        image_id=image_id,
        queue_rank=QUEUE_RANK.get(request.priority, QUEUE_RANK[DEFAULT_QUEUE]),
    )


async def _owner_of_new(
    unit: Unit, viewer: Viewer, new: NewRequest, policy: Policy
) -> tuple[User, GenerationRequest | None]:
    """Checks what a new request may ask for, locks its owner, and finds the request an
    earlier call made with the same idempotency key, if any.

    The owner is locked before rows that refer to it go in (see workers.claims.lock_job);
    the lock also makes concurrent creations with one idempotency key take turns."""
    policy.check_providers(new)
    if new.priority == "high" and viewer.role not in policy.high_priority_roles:
        raise Forbidden("priority high is reserved to some roles", field="priority")
    user = await users.get(unit.session, viewer.id, for_update=True)
    assert user is not None, "a viewer is a user"
    if new.idempotency_key is None:
        return user, None
    earlier = await repository.by_idempotency_key(unit.session, viewer.id, new.idempotency_key)
    return user, earlier


async def create_request(
    unit: Unit, viewer: Viewer, new: NewRequest, policy: Policy = Policy()
) -> GenerationRequest:
    """Creates the request and pays for its images (and its model, in auto mode).

    INSUFFICIENT_CREDITS, and nothing written, when the balance is short.
    """
    new = validate(new)
    user, earlier = await _owner_of_new(unit, viewer, new, policy)
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
        priority=new.priority,
        image_provider=new.image_provider,
        model_provider=new.model_provider,
        model_format=new.model_format,
    )
    unit.session.add(request)
    await unit.session.flush()  # the job, the event and the ledger refer to the request row
    await _pay(unit, user, request, policy, images=new.image_count, model=new.auto_model)
    job = _new_job(request, "PROMPT")
    unit.session.add_all([job, *_image_slots(request)])
    _append_event(unit, request, state, message="request received")
    unit.messages.append(stage_message(request, Stage.OPTIMIZE_PROMPT, job.id))
    return request


async def _pay(
    unit: Unit,
    user: User,
    request: GenerationRequest,
    policy: Policy,
    *,
    images: int = 0,
    model: bool = False,
) -> None:
    """Debits the images and the model about to be made, in one go (both or neither)."""
    key = f"debit:{request.id}:{request.seq}"
    total = images * policy.image_price + (policy.model_price if model else 0)
    if total > user.credits:
        raise InsufficientCredits(required=total, balance=user.credits)
    if images:
        await credits.debit(
            unit.session,
            user,
            images * policy.image_price,
            reason=credits.IMAGES,
            quantity=images,
            request_id=request.id,
            key=f"{key}:{credits.IMAGES}",
        )
    if model:
        await credits.debit(
            unit.session,
            user,
            policy.model_price,
            reason=credits.MODEL,
            quantity=1,
            request_id=request.id,
            key=f"{key}:{credits.MODEL}",
        )


async def _refund(
    unit: Unit,
    request: GenerationRequest,
    *,
    reasons: tuple[str, ...] = (credits.IMAGES, credits.MODEL),
) -> None:
    """Gives back what the request paid for and did not deliver; keyed by its event number."""
    user = await users.get(unit.session, request.user_id, for_update=True)
    assert user is not None
    await credits.refund_undelivered(
        unit.session,
        user,
        request.id,
        key=f"refund:{request.id}:{request.seq}",
        model_delivered=request.status == Status.COMPLETED,
        reasons=reasons,
    )


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


def _image_slots(request: GenerationRequest) -> list[GeneratedImage]:
    """One PENDING image per `image_count`, made with the request so that its first answer
    shows them; each takes its prompt variant when optimization wrote them."""
    return [
        GeneratedImage(
            request_id=request.id,
            index=index,
            prompt=request.prompt,
            seed=image_seed(request.id, index),
        )
        for index in range(request.image_count)
    ]


async def begin_images(unit: Unit, request: GenerationRequest, prompts: list[str]) -> None:
    """Stores the prompt variants, gives each image slot its variant and fans out one
    image job per slot. A slot the variants fall short of keeps the prompt itself; a
    request created before slots were made with it gets its images here."""
    slots = {image.index: image for image in await repository.images_of(unit.session, [request.id])}
    variants = {index: prompt for index, prompt in enumerate(prompts)}
    if slots:
        await repository.set_image_prompts(
            unit.session,
            {image.id: variants[index] for index, image in slots.items() if index in variants},
        )
    else:
        slots = {image.index: image for image in _image_slots(request)}
        for index, image in slots.items():
            image.prompt = variants.get(index, image.prompt)
        unit.session.add_all(slots.values())
    for _, image in sorted(slots.items()):
        job = _new_job(request, "IMAGE", image.id)
        unit.session.add(job)
        unit.messages.append(stage_message(request, Stage.GENERATE_IMAGE, job.id))
    # After the statements above: set earlier, autoflush would write the request twice.
    request.optimized_prompts = prompts
    await transition(
        unit,
        request,
        Status.IMAGE_GENERATING,
        step=f"generating images (0 of {len(slots)} ready)",
        progress=PROGRESS_IMAGES_START,
    )


async def settle_images(
    unit: Unit,
    request: GenerationRequest,
    image_id: str,
    index: int,
    *,
    ok: bool,
    failure: tuple[str, str] | None = None,
) -> None:
    """After image `index` finished (`ok`) or failed for good: report it, and close the
    phase when all are done. The caller has just moved the image to its final status.

    The request keeps the tally of its finished images, so the last one is known
    without counting them. Images that failed for good are refunded when the phase
    closes; when none succeeded the request fails (and everything it paid for is
    refunded).
    """
    if ok:
        request.images_completed += 1
    else:
        request.images_failed += 1
    total = request.image_count
    done = request.images_completed
    finished = done + request.images_failed
    span = PROGRESS_IMAGES_END - PROGRESS_IMAGES_START
    await transition(
        unit,
        request,
        Status.IMAGE_GENERATING,
        step=f"generating images ({done} of {total} ready)",
        progress=PROGRESS_IMAGES_START + span * finished / max(total, 1),
        message=f"image {index + 1} of {total} {'ready' if ok else 'failed'}",
        image_id=image_id,
    )
    if finished < total:
        return
    if done == 0:
        code, reason = failure or ("IMAGE_GENERATION_FAILED", "unknown")
        message = f"no image could be generated: {reason}"
        await fail_request(unit, request, Status.IMAGE_FAILED, code=code, message=message)
        return
    if done < total:
        await _refund(unit, request, reasons=(credits.IMAGES,))
    step = "images ready" if request.auto_model else "awaiting image selection"
    await transition(unit, request, Status.IMAGE_COMPLETED, step=step, progress=PROGRESS_IMAGES_END)
    if request.auto_model:
        chosen = await repository.first_completed_image(unit.session, request.id)
        assert chosen is not None, "at least one image completed"
        await start_model_phase(unit, request, chosen, step="image selected automatically")


async def start_model_phase(
    unit: Unit,
    request: GenerationRequest,
    image: GeneratedImage,
    *,
    step: str,
    policy: Policy | None = None,
) -> None:
    """Queues the 3D job for `image`. With a `policy` the model is paid for first, unless
    a model already paid for is still owed (auto mode pays for it at creation)."""
    if policy is not None:
        user = await users.get(unit.session, request.user_id, for_update=True)
        assert user is not None
        owed = await credits.units_owed(unit.session, request.id, credits.MODEL)
        await _pay(unit, user, request, policy, model=owed < 1)
    request.selected_image_id = image.id
    request.error_code = request.error_message = None
    job = _new_job(request, "MODEL", image.id)
    unit.session.add(job)
    await transition(
        unit,
        request,
        Status.MODEL_PENDING,
        step=step,
        progress=PROGRESS_IMAGES_END,
        image_id=image.id,
    )
    unit.messages.append(stage_message(request, Stage.START_MODEL, job.id))


async def select_image(
    unit: Unit, viewer: Viewer, request_id: str, image_id: str, policy: Policy = Policy()
) -> GenerationRequest:
    """Starts the 3D model from the chosen image: after the images are ready, or after a
    3D attempt failed (then any completed image may be picked). Pays for the model."""
    check_id(request_id, "requestId")
    check_id(image_id, "imageId")
    request = await repository.get_owned(unit.session, request_id, viewer.id, for_update=True)
    if request is None:
        raise RequestNotFound()
    image = await repository.get_image(unit.session, image_id)
    if image is None or image.request_id != request.id:
        raise ImageNotFound()
    model_failed = request.status == Status.FAILED and request.phase == Phase.MODEL_GENERATION
    if request.status != Status.IMAGE_COMPLETED and not model_failed:
        raise RequestNotAwaitingSelection(status=request.status)
    if image.status != "COMPLETED":
        raise ImageNotSelectable("only a completed image can be selected")
    await start_model_phase(unit, request, image, step="image selected", policy=policy)
    await _clear_dead_letters(unit, request.id)
    return request


async def fail_request(
    unit: Unit, request: GenerationRequest, stage_failed: Status, *, code: str, message: str
) -> None:
    """A stage failed for good: say which (IMAGE_FAILED or MODEL_FAILED), then FAILED,
    refunding what the request paid for and did not deliver."""
    step = (
        "image generation failed" if stage_failed is Status.IMAGE_FAILED else "3D generation failed"
    )
    if request.status != stage_failed:
        await transition(unit, request, stage_failed, step=step, error_code=code, message=message)
    await transition(unit, request, Status.FAILED, step=step, error_code=code, message=message)
    await _refund(unit, request)


async def fail_stuck(unit: Unit, request: GenerationRequest) -> None:
    """A request no job can move on any more (found by the sweeper) fails, so its owner
    gets the refund and may retry it."""
    message = "the request stopped making progress"
    await transition(
        unit, request, Status.FAILED, step="stalled", error_code="STALLED", message=message
    )
    await _refund(unit, request)


async def retry_request(
    unit: Unit, viewer: Viewer | None, request_id: str, policy: Policy = Policy()
) -> GenerationRequest:
    """Resumes a FAILED request from the step that failed; finished images are kept.

    `viewer` None is an operator (`lumi queue requeue`). Pays again for what will be
    made again: it was refunded when the request failed.
    """
    check_id(request_id, "id")
    if viewer is None:
        request = await repository.get(unit.session, request_id, for_update=True)
    else:
        request = await repository.get_owned(unit.session, request_id, viewer.id, for_update=True)
    if request is None:
        raise RequestNotFound()
    if request.status != Status.FAILED:
        raise RequestNotRetryable(status=request.status)
    user = await users.get(unit.session, request.user_id, for_update=True)
    assert user is not None
    if request.phase == Phase.MODEL_GENERATION and request.selected_image_id:
        image = await repository.get_image(unit.session, request.selected_image_id)
        assert image is not None
        await start_model_phase(unit, request, image, step="retrying 3D generation", policy=policy)
    elif request.phase == Phase.IMAGE_GENERATION and request.optimized_prompts is None:
        await _pay(
            unit, user, request, policy, images=request.image_count, model=request.auto_model
        )
        job = _new_job(request, "PROMPT")
        unit.session.add(job)
        request.error_code = request.error_message = None
        await transition(unit, request, Status.IMAGE_PENDING, step="retrying")
        unit.messages.append(stage_message(request, Stage.OPTIMIZE_PROMPT, job.id))
    elif request.phase == Phase.IMAGE_GENERATION:
        images = await repository.images_of(unit.session, [request.id])
        failed = [image for image in images if image.status == "FAILED"]
        if not failed:
            raise RequestNotRetryable(status=request.status)
        await _pay(unit, user, request, policy, images=len(failed), model=request.auto_model)
        request.error_code = request.error_message = None
        request.images_failed -= len(failed)
        for image in failed:
            image.status = "PENDING"
            job = _new_job(request, "IMAGE", image.id)
            unit.session.add(job)
            unit.messages.append(stage_message(request, Stage.GENERATE_IMAGE, job.id))
        await transition(
            unit,
            request,
            Status.IMAGE_GENERATING,
            step=f"retrying {len(failed)} image{'s' if len(failed) > 1 else ''}",
        )
    else:
        raise RequestNotRetryable(status=request.status)
    await _clear_dead_letters(unit, request.id)
    return request


async def _clear_dead_letters(unit: Unit, request_id: str) -> None:
    """The work of a request resumed is no longer dead: its letters go."""
    await repository.delete_dead_letters(unit.session, request_id)


async def cancel_request(unit: Unit, viewer: Viewer, request_id: str) -> GenerationRequest:
    """Stops a request at once: CANCELLED is committed and published now, and every stage
    still running finds it so when its provider call returns, and does nothing more.
    What was paid for and not delivered is refunded."""
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
    await _refund(unit, request)


async def delete_request(unit: Unit, viewer: Viewer, request_id: str) -> None:
    """Deletes the request and everything it made but its model, cancelling it first if
    it is still running (refunded as a cancel is); its images' files go once the
    transaction has committed.

    The model stays in its owner's library without its source request and image. The
    credit ledger keeps the request's entries: it is the user's account of credits."""
    check_id(request_id, "id")
    request = await repository.get_owned(unit.session, request_id, viewer.id, for_update=True)
    if request is None:
        raise RequestNotFound()
    if request.status not in RESTING:
        await _cancel(unit, request, step="deleted by its owner")
    images = await repository.images_of(unit.session, [request.id])
    await _cancel_vendor_jobs(unit, request)
    await unit.store_events()  # in the table, to go with the request's other events
    await models.detach_from_request(unit.session, request.id)
    await repository.delete_request(unit.session, request.id)
    unit.discarded.extend(image.storage_key for image in images if image.storage_key)


async def _cancel_vendor_jobs(unit: Unit, request: GenerationRequest) -> None:
    """A cancelled 3D job is stopped at its vendor by its next poll, which finds it
    CANCELLED; once its row is deleted no poll will, so a message asks for it instead."""
    for job in await repository.jobs_of(unit.session, [request.id]):
        if job.kind == "MODEL" and job.status == "CANCELLED" and job.vendor_job_id:
            args = (job.id, job.attempt, job.provider, job.vendor_job_id)
            unit.messages.append(stage_message(request, Stage.CANCEL_MODEL, *args))


# A request made from the user's own image: its one image "came from" here, so the API
# shows where it came from, and retries never send it to an image vendor.
UPLOAD_PROVIDER = "upload"


async def create_from_upload(
    unit: Unit, viewer: Viewer, new: NewRequest, upload_id: str, policy: Policy = Policy()
) -> GenerationRequest:
    """A request whose one image is the viewer's READY upload: straight to the 3D phase,
    as if that image had been generated and selected. Pays for the model only; the
    upload is used up (its row goes, its file becomes the image's).

    NOT_FOUND when the upload is not the viewer's, not READY, expired or used, unless the
    idempotency key names the request that used it."""
    prompt = new.prompt.strip()
    if len(prompt) > MAX_PROMPT:
        raise BadUserInput(f"prompt must be at most {MAX_PROMPT} characters", field="prompt")
    new = validate(
        replace(
            new,
            prompt=prompt or "-",  # checked below with the upload's name
            image_count=1,
            optimize_prompt=False,
            auto_model=True,
            image_provider=None,
        )
    )
    user, earlier = await _owner_of_new(unit, viewer, new, policy)
    if earlier is not None:
        options = (new.priority, new.model_provider, new.model_format)
        same = (earlier.priority, earlier.model_provider, earlier.model_format) == options
        from_upload = earlier.image_provider == UPLOAD_PROVIDER
        if not (same and from_upload) or (prompt and earlier.prompt != prompt):
            raise IdempotencyKeyReused()
        return earlier
    upload = await uploads.get_owned(unit.session, upload_id, viewer.id, for_update=True)
    if upload is None or upload.status != "READY" or upload.expires_at < utcnow():
        raise UploadNotFound()
    named = replace(new, prompt=prompt or _named(upload.filename))
    request = _request_from_upload(viewer, named, upload.width or 0, upload.height or 0)
    unit.session.add(request)
    await unit.session.flush()  # the image, the job, the event and the ledger refer to it
    await _pay(unit, user, request, policy, model=True)
    image = GeneratedImage(
        request_id=request.id,
        index=0,
        prompt=request.prompt,
        seed=image_seed(request.id, 0),
        status="COMPLETED",
        storage_key=upload.storage_key,
        width=upload.width,
        height=upload.height,
        content_type=upload.content_type,
        provider=UPLOAD_PROVIDER,
    )
    request.selected_image_id = image.id
    job = _new_job(request, "MODEL", image.id)
    unit.session.add_all([image, job])
    await uploads.remove(unit.session, upload.id)
    _append_event(
        unit,
        request,
        state_of(request),
        message="request received with your image",
        image_id=image.id,
    )
    unit.messages.append(stage_message(request, Stage.START_MODEL, job.id))
    return request


def _named(filename: str | None) -> str:
    """A model's default name from its image's file name: `red chair.jpg`: red chair."""
    stem = filename.rsplit(".", 1)[0].strip() if filename else ""
    return stem[:MAX_PROMPT] or "Your image"


def _request_from_upload(
    viewer: Viewer, new: NewRequest, width: int, height: int
) -> GenerationRequest:
    """The request in the 3D phase from its first event: no image phase happens."""
    state = replace(
        initial_state(auto_model=True),
        status=Status.MODEL_PENDING,
        phase=Phase.MODEL_GENERATION,
        step="your image received; waiting for a 3D worker",
        progress=PROGRESS_IMAGES_END,
    )
    return GenerationRequest(
        user_id=viewer.id,
        prompt=new.prompt,
        image_count=1,
        images_completed=1,
        image_width=width,
        image_height=height,
        optimize_prompt=False,
        auto_model=True,
        status=state.status,
        phase=state.phase,
        step=state.step,
        progress=state.progress,
        seq=state.seq,
        idempotency_key=new.idempotency_key,
        priority=new.priority,
        image_provider=UPLOAD_PROVIDER,
        model_provider=new.model_provider,
        model_format=new.model_format,
    )
