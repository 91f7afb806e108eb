"""GraphQL types of the requests room."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import strawberry

from app.graphql.context import Info
from app.graphql.pagination import Edge, PageInfo
from app.graphql.relay import Node, global_id, global_id_or_none
from app.models.loaders import ModelLoaders
from app.models.types import ModelFormat, ModelType, model_nodes, signed_url
from app.requests import repository, stages
from app.requests.enums import (
    ImageStatus,
    JobKind,
    JobStatus,
    ProviderKind,
    RequestPhase,
    RequestPriority,
    RequestStatus,
)
from app.requests.loaders import RequestLoaders
from app.requests.queue_position import QueueEstimate
from app.tables import GeneratedImage, GenerationJob, GenerationRequest
from app.tables import RequestEvent as EventRow


@strawberry.type(name="GeneratedImage", description="One candidate image of a request.")
class GeneratedImageType(Node):
    row: strawberry.Private[GeneratedImage]

    @classmethod
    async def resolve_nodes(cls, info: Info, ids: Sequence[str]) -> list[GeneratedImageType | None]:
        """The images of the viewer's own requests."""
        loaders = RequestLoaders.of(info)
        rows = await loaders.image_by_id.load_many(ids)
        owned = await _owned(info, [row.request_id if row else None for row in rows])
        return [
            cls(row=row) if row and mine else None for row, mine in zip(rows, owned, strict=True)
        ]

    id: strawberry.ID = strawberry.field(
        resolver=lambda root: global_id("GeneratedImage", root.row.id),
        description="Global id of the image; pass it to `selectImage`.",
    )

    @strawberry.field(description="Position among the request's images, from 0.")
    def index(self) -> int:
        return self.row.index

    @strawberry.field(
        description="The prompt this image is generated from: the request's prompt while "
        "the image is PENDING before prompt optimization, then the image's own variant."
    )
    def prompt(self) -> str:
        return self.row.prompt

    @strawberry.field(description="Generation status of this image.")
    def status(self) -> ImageStatus:
        return ImageStatus(self.row.status)

    @strawberry.field(description="Signed, expiring URL of the image once it is COMPLETED.")
    def url(self, info: Info) -> str | None:
        return signed_url(info, self.row.storage_key) if self.row.storage_key else None

    @strawberry.field(description="Width in pixels, once generated.")
    def width(self) -> int | None:
        return self.row.width

    @strawberry.field(description="Height in pixels, once generated.")
    def height(self) -> int | None:
        return self.row.height

    @strawberry.field(description="MIME type of the image file, once generated.")
    def content_type(self) -> str | None:
        return self.row.content_type

    @strawberry.field(description="The vendor that made it, once generated.")
    def provider(self) -> str | None:
        return self.row.provider


@strawberry.type(name="Provider", description="A configured vendor, in failover order.")
class ProviderType:
    name: str = strawberry.field(description="Pass it as `imageProvider`/`modelProvider`.")
    kind: ProviderKind = strawberry.field(description="What it makes.")
    position: int = strawberry.field(
        description="Place in its kind's failover chain, from 0 (the first choice)."
    )
    formats: list[ModelFormat] = strawberry.field(
        description="3D formats it delivers (empty for LLM and image vendors)."
    )


@strawberry.type(
    name="GenerationJob",
    description="One unit of provider work of a request: optimizing the prompt, one image, "
    "one 3D model. A transient failure shows RETRYING with the time of the next attempt.",
)
class GenerationJobType(Node):
    row: strawberry.Private[GenerationJob]

    @classmethod
    async def resolve_nodes(cls, info: Info, ids: Sequence[str]) -> list[GenerationJobType | None]:
        """The jobs of the viewer's own requests."""
        rows = await RequestLoaders.of(info).job_by_id.load_many(ids)
        owned = await _owned(info, [row.request_id if row else None for row in rows])
        return [
            cls(row=row) if row and mine else None for row, mine in zip(rows, owned, strict=True)
        ]

    id: strawberry.ID = strawberry.field(
        resolver=lambda root: global_id("GenerationJob", root.row.id),
        description="Global id of the job.",
    )

    @strawberry.field(description="PROMPT, IMAGE or MODEL.")
    def kind(self) -> JobKind:
        return JobKind(self.row.kind)

    @strawberry.field(description="Where the job is.")
    def status(self) -> JobStatus:
        return JobStatus(self.row.status)

    @strawberry.field(description="Attempts started so far, from 1 once it ran.")
    def attempt(self) -> int:
        return self.row.attempt

    @strawberry.field(description="When a RETRYING job runs again (UTC).")
    def next_attempt_at(self) -> datetime | None:
        return self.row.next_attempt_at if self.row.status == "RETRYING" else None

    @strawberry.field(description="Why the last attempt failed, for machines.")
    def error_code(self) -> str | None:
        return self.row.error_code

    @strawberry.field(description="Why the last attempt failed, for people.")
    def error_message(self) -> str | None:
        return self.row.error_message

    @strawberry.field(description="Global id of the image this job makes, or turns into a model.")
    def image_id(self) -> strawberry.ID | None:
        return global_id_or_none("GeneratedImage", self.row.image_id)

    @strawberry.field(description="The provider that ran it, once known.")
    def provider(self) -> str | None:
        return self.row.provider

    @strawberry.field(description="When its latest attempt started (UTC); null before one did.")
    def started_at(self) -> datetime | None:
        return self.row.started_at

    @strawberry.field(description="When it ended (UTC); null while it is not over.")
    def finished_at(self) -> datetime | None:
        return self.row.finished_at

    @strawberry.field(
        description="Jobs ahead of this one in line (its queue, and the higher-priority "
        "queues, which run first); 0 is next. Null when it does not wait (running, done, or "
        "a retry not due yet)."
    )
    async def queue_position(self, info: Info) -> int | None:
        return (await RequestLoaders.of(info).queue_by_job.load(self.row)).position

    @strawberry.field(
        description="When this waiting job should start (UTC), from measured stage "
        "durations; null when it does not wait or nothing has been measured yet."
    )
    async def estimated_start_at(self, info: Info) -> datetime | None:
        return (await RequestLoaders.of(info).queue_by_job.load(self.row)).start

    @strawberry.field(
        description="When this waiting job should be done (UTC); null as `estimatedStartAt`."
    )
    async def estimated_completion_at(self, info: Info) -> datetime | None:
        return (await RequestLoaders.of(info).queue_by_job.load(self.row)).completion

    @strawberry.field(description="When it was created (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at


@strawberry.type(name="GenerationRequest", description="A prompt on its way to a 3D model.")
class GenerationRequestType(Node):
    row: strawberry.Private[GenerationRequest]

    @classmethod
    async def resolve_nodes(
        cls, info: Info, ids: Sequence[str]
    ) -> list[GenerationRequestType | None]:
        """The viewer's own requests."""
        viewer = await info.context.viewer()
        rows = await RequestLoaders.of(info).request_by_id.load_many(ids)
        return [
            cls(row=row) if row and viewer and row.user_id == viewer.id else None for row in rows
        ]

    id: strawberry.ID = strawberry.field(
        resolver=lambda root: global_id("GenerationRequest", root.row.id),
        description="Global id of the request.",
    )

    @strawberry.field(description="The prompt as the user wrote it.")
    def prompt(self) -> str:
        return self.row.prompt

    @strawberry.field(description="One optimized prompt per image, once optimization ran.")
    def optimized_prompts(self) -> list[str] | None:
        return self.row.optimized_prompts

    @strawberry.field(description="How many candidate images are generated (1-4).")
    def image_count(self) -> int:
        return self.row.image_count

    @strawberry.field(description="Whether an LLM rewrites the prompt before generation.")
    def optimize_prompt(self) -> bool:
        return self.row.optimize_prompt

    @strawberry.field(description="Whether the first finished image goes to 3D unasked.")
    def auto_model(self) -> bool:
        return self.row.auto_model

    @strawberry.field(description="The image vendor asked for; null: the configured chain.")
    def image_provider(self) -> str | None:
        return self.row.image_provider

    @strawberry.field(description="The 3D vendor asked for; null: the configured chain.")
    def model_provider(self) -> str | None:
        return self.row.model_provider

    @strawberry.field(description="The 3D format asked for.")
    def model_format(self) -> ModelFormat:
        return ModelFormat(self.row.model_format)

    @strawberry.field(description="Queue its work waits in.")
    def priority(self) -> RequestPriority:
        return RequestPriority(self.row.priority)

    @strawberry.field(description="Current status.")
    def status(self) -> RequestStatus:  # type: ignore[valid-type]
        return stages.Status(self.row.status)

    @strawberry.field(description="Current phase.")
    def phase(self) -> RequestPhase:  # type: ignore[valid-type]
        return stages.Phase(self.row.phase)

    @strawberry.field(description="What is happening now, in words.")
    def step(self) -> str:
        return self.row.step

    @strawberry.field(description="Progress of the whole request, 0-100, never decreasing.")
    def progress(self) -> float:
        return self.row.progress

    @strawberry.field(description="True when `progress` is estimated, not vendor-reported.")
    def progress_is_estimate(self) -> bool:
        return self.row.progress_estimated

    @strawberry.field(description="Number of the latest event; resume subscriptions from it.")
    def seq(self) -> int:
        return self.row.seq

    @strawberry.field(description="Machine-readable reason of a failure.")
    def error_code(self) -> str | None:
        return self.row.error_code

    @strawberry.field(description="Human-readable reason of a failure.")
    def error_message(self) -> str | None:
        return self.row.error_message

    @strawberry.field(description="Global id of the image chosen for 3D generation, if any.")
    def selected_image_id(self) -> strawberry.ID | None:
        return global_id_or_none("GeneratedImage", self.row.selected_image_id)

    @strawberry.field(description="When the request was created (UTC).")
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="When the request last changed (UTC).")
    def updated_at(self) -> datetime:
        return self.row.updated_at

    @strawberry.field(description="When the request reached a final status (UTC).")
    def completed_at(self) -> datetime | None:
        return self.row.completed_at

    @strawberry.field(
        description="Candidate images, in index order: one per `imageCount` from the moment "
        "the request is created (PENDING until each is made), so a client can draw them."
    )
    async def images(self, info: Info) -> list[GeneratedImageType]:
        rows = await RequestLoaders.of(info).images_by_request.load(self.row.id)
        return [GeneratedImageType(row=row) for row in rows]

    @strawberry.field(
        description="Jobs ahead of its next waiting job in line (its queue, and the "
        "higher-priority queues, which run first); 0 is next. Null when it does not wait."
    )
    async def queue_position(self, info: Info) -> int | None:
        return (await RequestLoaders.of(info).queue_by_request.load(self.row.id)).position

    @strawberry.field(
        description="When its next waiting job should start (UTC), from measured stage "
        "durations; null when it does not wait or nothing has been measured yet."
    )
    async def estimated_start_at(self, info: Info) -> datetime | None:
        return (await RequestLoaders.of(info).queue_by_request.load(self.row.id)).start

    @strawberry.field(
        description="When the last of its waiting jobs should be done (UTC); null as "
        "`estimatedStartAt`."
    )
    async def estimated_completion_at(self, info: Info) -> datetime | None:
        return (await RequestLoaders.of(info).queue_by_request.load(self.row.id)).completion

    @strawberry.field(description="Its units of provider work, oldest first, retries included.")
    async def jobs(self, info: Info) -> list[GenerationJobType]:
        rows = await RequestLoaders.of(info).jobs_by_request.load(self.row.id)
        return [GenerationJobType(row=row) for row in rows]

    @strawberry.field(description="The 3D model this request produced, once COMPLETED.")
    async def model(self, info: Info) -> ModelType | None:
        row = await ModelLoaders.of(info).model_by_request.load(self.row.id)
        return (await model_nodes(info, [row]))[0] if row else None


async def _owned(info: Info, request_ids: Sequence[str | None]) -> list[bool]:
    """Whether each request is the viewer's (False for None, and for an anonymous viewer)."""
    viewer = await info.context.viewer()
    if viewer is None:
        return [False] * len(request_ids)
    wanted = [i for i in request_ids if i is not None]
    requests = await RequestLoaders.of(info).request_by_id.load_many(wanted)
    mine = {r.id for r in requests if r is not None and r.user_id == viewer.id}
    return [i in mine for i in request_ids]


@strawberry.type(
    name="QueueStatus",
    description="A request's place in line, as `requestQueue` pushes it: all null once it "
    "no longer waits.",
)
class QueueStatusType:
    request_id: strawberry.ID = strawberry.field(description="Global id of the request.")
    queue_position: int | None = strawberry.field(
        description="Jobs ahead of its next waiting job in line; 0 is next; null when it "
        "no longer waits."
    )
    estimated_start_at: datetime | None = strawberry.field(
        description="When its next waiting job should start (UTC); null when unknown."
    )
    estimated_completion_at: datetime | None = strawberry.field(
        description="When the last of its waiting jobs should be done (UTC); null when unknown."
    )

    @classmethod
    def of(cls, request_id: str, estimate: QueueEstimate) -> QueueStatusType:
        return cls(
            request_id=global_id("GenerationRequest", request_id),
            queue_position=estimate.position,
            estimated_start_at=estimate.start,
            estimated_completion_at=estimate.completion,
        )


@strawberry.type(name="GenerationRequestConnection", description="A page of requests.")
class GenerationRequestConnection:
    edges: list[Edge[GenerationRequestType]] = strawberry.field(description="This page's items.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    owner_id: strawberry.Private[str]
    status: strawberry.Private[str | None]

    @strawberry.field(description="How many requests the whole list holds, all pages.")
    async def total_count(self, info: Info) -> int:
        async with info.context.read() as session:
            return await repository.count_of(session, self.owner_id, status=self.status)


@strawberry.type(description="One stage or status change of a request, as it happened.")
class RequestEvent:
    request_id: strawberry.ID = strawberry.field(
        description="Global id of the request that changed."
    )
    seq: int = strawberry.field(description="Event number within the request, from 1.")
    user_seq: int = strawberry.field(
        description="Event number across all of the user's requests (`myRequestUpdates`)."
    )
    status: RequestStatus = strawberry.field(description="Status after this event.")  # type: ignore[valid-type]
    phase: RequestPhase = strawberry.field(description="Phase after this event.")  # type: ignore[valid-type]
    step: str = strawberry.field(description="What was happening, in words.")
    progress: float = strawberry.field(description="Request progress, 0-100.")
    progress_is_estimate: bool = strawberry.field(description="Whether progress is estimated.")
    message: str | None = strawberry.field(description="Detail for people.")
    error_code: str | None = strawberry.field(description="Failure reason, on failures.")
    image_id: strawberry.ID | None = strawberry.field(
        description="Global id of the image it concerns."
    )
    model_id: strawberry.ID | None = strawberry.field(
        description="Global id of the model it produced."
    )
    job_id: strawberry.ID | None = strawberry.field(
        description="Global id of the job it concerns, if one."
    )
    job_status: JobStatus | None = strawberry.field(
        description="That job's status: RETRYING when a transient failure will be retried."
    )
    attempt: int | None = strawberry.field(description="That job's attempt number.")
    next_attempt_at: datetime | None = strawberry.field(
        description="When a RETRYING job runs again (UTC)."
    )
    created_at: datetime = strawberry.field(description="When it happened (UTC).")
    row_request_id: strawberry.Private[str]

    @classmethod
    def of(cls, row: EventRow) -> RequestEvent:
        return cls(
            request_id=global_id("GenerationRequest", row.request_id),
            seq=row.seq,
            user_seq=row.user_seq,
            status=stages.Status(row.status),
            phase=stages.Phase(row.phase),
            step=row.step,
            progress=row.progress,
            progress_is_estimate=row.progress_estimated,
            message=row.message,
            error_code=row.error_code,
            image_id=global_id_or_none("GeneratedImage", row.image_id),
            model_id=global_id_or_none("Model", row.model_id),
            job_id=global_id_or_none("GenerationJob", row.job_id),
            job_status=JobStatus(row.job_status) if row.job_status else None,
            attempt=row.attempt,
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
            row_request_id=row.request_id,
        )

    @strawberry.field(description="The request as it is now (not as of this event).")
    async def request(self, info: Info) -> GenerationRequestType | None:
        row = await RequestLoaders.of(info).request_by_id.load(self.row_request_id)
        return GenerationRequestType(row=row) if row else None


@strawberry.input(description="What to generate.")
class CreateRequestInput:
    prompt: str | None = strawberry.field(
        default=None,
        description="What to make, 1-2000 characters. Optional with `sourceImage` (then it "
        "names the model; by default the file's name does).",
    )
    source_image: strawberry.ID | None = strawberry.field(
        default=None,
        description="A READY or PENDING `UploadedImage` of yours (its global id): no prompt "
        "optimization and no image generation, the upload is the request's one image and "
        "the 3D phase starts at once; only the model is paid for. `imageCount`, "
        "`optimizePrompt`, `autoModel` and `imageProvider` do not apply. The upload is used "
        "up; someone else's, expired or used is NOT_FOUND, a bad file BAD_USER_INPUT.",
    )
    image_count: int = strawberry.field(default=4, description="Candidate images, 1-4.")
    optimize_prompt: bool = strawberry.field(
        default=True, description="Let an LLM write one prompt variant per image."
    )
    auto_model: bool = strawberry.field(
        default=False, description="Build the 3D model from the first image without asking."
    )
    image_provider: str | None = strawberry.field(
        default=None,
        description="An image vendor from `availableProviders` (no failover to others); "
        "null: the configured chain.",
    )
    model_provider: str | None = strawberry.field(
        default=None,
        description="A 3D vendor from `availableProviders`; null: the configured chain.",
    )
    model_format: ModelFormat = strawberry.field(
        default=ModelFormat.GLB, description="GLB (one file) or OBJ (with MTL and texture)."
    )
    priority: RequestPriority = strawberry.field(
        default=RequestPriority.DEFAULT,
        description="Which queue its work waits in; HIGH is FORBIDDEN without a role for it.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description=(
            "Makes retries safe: the same key with the same input returns the request made "
            "the first time; with a different input it answers CONFLICT."
        ),
    )
    webhook_url: str | None = strawberry.field(
        default=None,
        description="Also POST this request's events to this URL, signed with your "
        "`defaultWebhookSecret` (see createWebhook for what URLs are accepted).",
    )
