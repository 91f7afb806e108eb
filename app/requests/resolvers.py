"""Queries, mutations and subscriptions of the requests room."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry

from app.bus import request_channel, user_channel
from app.errors import BadUserInput
from app.graphql import live
from app.graphql.context import Context, Info
from app.graphql.pagination import (
    DEFAULT_PAGE,
    After,
    First,
    check_first,
    decode_cursor,
    encode_cursor,
    paginate,
)
from app.graphql.permissions import IsAuthenticated
from app.graphql.relay import global_id
from app.metrics import ACTIVE_SUBSCRIPTIONS, EVENTS_DELIVERED
from app.models.types import ModelFormat
from app.requests import repository, service
from app.requests.enums import ProviderKind, RequestStatus
from app.requests.errors import RequestNotFound
from app.requests.stages import RESTING, Status
from app.requests.stream import Follow, LiveSink, follow
from app.requests.types import (
    CreateRequestInput,
    GenerationRequestConnection,
    GenerationRequestType,
    ProviderType,
    QueueStatusType,
    RequestEvent,
)
from app.tables import RequestEvent as EventRow
from app.uploads import service as uploads
from app.uploads.resolvers import upload_row_id
from app.users import repository as users
from app.webhooks import service as webhooks
from app.webhooks.ssrf import guard_for

RequestId = Annotated[
    strawberry.ID,
    strawberry.argument(description="The request's global id (its row id is accepted too)."),
]


def to_event(row: EventRow) -> RequestEvent:
    return RequestEvent.of(row)


def _policy(info: Info) -> service.Policy:
    return service.Policy.from_settings(info.context.deps.settings)


# The subscriptions' first reads live in functions of their own, so that their sessions
# and rows are gone when they return: a subscription's frame lives as long as it does.


async def _request_state(info: Info, request_id: str, user_id: str) -> tuple[int, Status]:
    """The request's last event number and status; NOT_FOUND when it is not theirs."""
    async with info.context.deps.db.read() as session:
        row = await repository.get_owned(session, request_id, user_id)
    if row is None:
        raise RequestNotFound()
    return row.seq, Status(row.status)


async def _user_seq(info: Info, user_id: str) -> int:
    """The user's last event number: a subscription from it sees only new events."""
    async with info.context.deps.db.read() as session:
        user = await users.get(session, user_id)
    return user.event_seq if user else 0


def _check_cursor(after: int, last: int) -> None:
    """A cursor names an event that happened: one past the last can only be a mistake
    (a cursor of another request, or a client's off-by-one), and waiting on it would
    skip the next events."""
    if after > last:
        raise BadUserInput(f"afterSeq {after} is after the last event ({last})", field="afterSeq")


def _delivered(row: EventRow) -> RequestEvent:
    EVENTS_DELIVERED.inc()
    return to_event(row)


async def _follow(info: Info, spec: Follow, after: int) -> AsyncGenerator[RequestEvent, None]:
    deps = info.context.deps
    viewer = await info.context.require_viewer()
    await info.context.end_reads()  # over HTTP, hold no session for the stream's life
    release = _Slot(info.context, viewer.id)
    # Over graphql-transport-ws the live phase goes on without this generator, and takes
    # the slot with it (app/graphql/live.py).
    handoff = live.offered()
    taken = None

    def hand_off(last: int) -> LiveSink | None:
        nonlocal taken
        assert handoff is not None
        taken = handoff.take(_delivered, release)
        return taken

    try:
        stream = follow(
            deps.db,
            deps.bus,
            spec,
            after=max(after, 0),
            rechecks=deps.rechecks,
            live=hand_off if handoff is not None else None,
        )
        async for row in stream:
            info.context.event_cursor = getattr(row, spec.cursor_field)  # an SSE `id:`
            yield _delivered(row)
    finally:
        if taken is None:
            release()


def _is_final(event: EventRow) -> bool:
    return Status(event.status) in RESTING


def _never(event: EventRow) -> bool:
    return False  # a user's stream has no last event


class _Slot:
    """One of the viewer's subscription slots, taken (LIMIT_EXCEEDED when none is
    left), and the subscription counted live; calling it gives both back."""

    __slots__ = ("connection", "slots", "user_id")

    def __init__(self, context: Context, user_id: str) -> None:
        self.slots, self.connection, self.user_id = (
            context.deps.subscription_slots,
            context,
            user_id,
        )
        if self.slots is not None:
            self.slots.acquire(context, user_id)
        ACTIVE_SUBSCRIPTIONS.inc()

    def __call__(self) -> None:
        ACTIVE_SUBSCRIPTIONS.dec()
        if self.slots is not None:
            self.slots.release(self.connection, self.user_id)


@strawberry.type
class RequestQueries:
    @strawberry.field(
        description="One of the viewer's requests. Null, with NOT_FOUND in `errors`, when it "
        "is not theirs (the other fields of the query still answer).",
        permission_classes=[IsAuthenticated],
    )
    async def request(self, info: Info, id: RequestId) -> GenerationRequestType | None:
        viewer = await info.context.require_viewer()
        service.check_id(id, "id")
        async with info.context.read() as session:
            row = await repository.get_owned(session, id, viewer.id)
        if row is None:
            raise RequestNotFound()
        return GenerationRequestType(row=row)

    @strawberry.field(
        description="The viewer's requests, newest first, optionally of one status.",
        permission_classes=[IsAuthenticated],
    )
    async def requests(
        self,
        info: Info,
        first: First = DEFAULT_PAGE,
        after: After = None,
        status: Annotated[
            RequestStatus | None,  # type: ignore[valid-type]
            strawberry.argument(description="Only the requests in this status; null: all."),
        ] = None,
    ) -> GenerationRequestConnection:
        viewer = await info.context.require_viewer()
        limit = check_first(first)
        cursor = decode_cursor(after)
        position = (cursor.value, cursor.row_id) if cursor else None
        async with info.context.read() as session:
            rows = await repository.list_page(
                session, viewer.id, limit=limit + 1, after=position, status=status
            )
        edges, page = paginate(
            rows,
            limit=limit,
            after=after,
            cursor_of=lambda r: encode_cursor(r.created_at, r.id),
            node_of=lambda r: GenerationRequestType(row=r),
        )
        return GenerationRequestConnection(
            edges=edges, page_info=page, owner_id=viewer.id, status=status
        )


@strawberry.type
class ProviderQueries:
    @strawberry.field(
        description="The vendors this gateway is configured with, per kind, in failover order."
    )
    def available_providers(self, info: Info) -> list[ProviderType]:
        settings = info.context.deps.settings
        found = []
        for kind in ProviderKind:
            for position, name in enumerate(settings.chain(kind.value)):
                formats = [ModelFormat.GLB, ModelFormat.OBJ] if kind is ProviderKind.MODEL else []
                found.append(ProviderType(name=name, kind=kind, position=position, formats=formats))
        return found


async def _ready_upload(info: Info, source_image: str, idempotency_key: str | None) -> str:
    """The row id of the viewer's upload, READY (a PENDING one's file checked now). With
    an idempotency key a used upload is no error yet: the repeat of the request that used
    it answers with that request (service.create_from_upload)."""
    viewer = await info.context.require_viewer()
    upload_id = upload_row_id(source_image, "sourceImage")
    await info.context.end_reads()
    try:
        await uploads.ready(info.context.deps, viewer, upload_id)
    except uploads.UploadNotFound:
        if idempotency_key is None:
            raise
    return upload_id


@strawberry.type
class RequestMutations:
    @strawberry.mutation(
        description="Submit a prompt. Progress arrives through `requestUpdates`.",
        permission_classes=[IsAuthenticated],
    )
    async def create_request(
        self,
        info: Info,
        input: Annotated[CreateRequestInput, strawberry.argument(description="What to make.")],
    ) -> GenerationRequestType:
        viewer = await info.context.require_viewer()
        deps = info.context.deps
        if input.prompt is None and input.source_image is None:
            raise BadUserInput("prompt is required (or a sourceImage)", field="prompt")
        new = service.NewRequest(
            prompt=input.prompt or "",
            image_count=input.image_count,
            optimize_prompt=input.optimize_prompt,
            auto_model=input.auto_model,
            image_size=deps.settings.image_size,
            idempotency_key=input.idempotency_key,
            priority=input.priority.value,
            image_provider=input.image_provider,
            model_provider=input.model_provider,
            model_format=input.model_format.value,
        )
        if input.webhook_url is not None:  # refused before anything is written
            await guard_for(deps.settings).vet(input.webhook_url)
        upload_id = None
        if input.source_image is not None:  # checked (decoded) before the transaction
            upload_id = await _ready_upload(info, input.source_image, new.idempotency_key)
        async with info.context.unit() as unit:
            if upload_id is not None:
                row = await service.create_from_upload(unit, viewer, new, upload_id, _policy(info))
            else:
                row = await service.create_request(unit, viewer, new, _policy(info))
            if input.webhook_url is not None:
                await webhooks.follow_request(unit.session, row, input.webhook_url)
        return GenerationRequestType(row=row)

    @strawberry.mutation(
        description=(
            "Pick the image to turn into a 3D model: when the images are ready, or after a "
            "3D attempt failed. Pays for the model (INSUFFICIENT_CREDITS when short)."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def select_image(
        self,
        info: Info,
        request_id: RequestId,
        image_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="Global id of one of its COMPLETED images (its row id is accepted too)."
            ),
        ],
    ) -> GenerationRequestType:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            row = await service.select_image(unit, viewer, request_id, image_id, _policy(info))
        return GenerationRequestType(row=row)

    @strawberry.mutation(
        description=(
            "Resume a FAILED request from the step that failed; images already made are "
            "kept. Pays again for what is made again (INSUFFICIENT_CREDITS when short)."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def retry_request(self, info: Info, id: RequestId) -> GenerationRequestType:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            row = await service.retry_request(unit, viewer, id, _policy(info))
        return GenerationRequestType(row=row)

    @strawberry.mutation(
        description=(
            "Cancel a running request: CANCELLED reaches subscribers at once; CONFLICT when "
            "it has already finished."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def cancel_request(self, info: Info, id: RequestId) -> GenerationRequestType:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            row = await service.cancel_request(unit, viewer, id)
        return GenerationRequestType(row=row)

    @strawberry.mutation(
        description=(
            "Delete a request, its images and its history (cancelling it first if it is "
            "still running); its model stays in the library. Returns its global id."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def delete_request(self, info: Info, id: RequestId) -> strawberry.ID:
        viewer = await info.context.require_viewer()
        async with info.context.unit() as unit:
            await service.delete_request(unit, viewer, id)
        return global_id("GenerationRequest", id)


@strawberry.type
class RequestSubscriptions:
    @strawberry.subscription(
        description=(
            "Every event of one request after `afterSeq`, in order, once; ends after a "
            "final status (COMPLETED, FAILED, CANCELLED), at once when `afterSeq` is "
            "already the last event of a finished request. An `afterSeq` past the last "
            "event is BAD_USER_INPUT."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def request_updates(
        self, info: Info, id: strawberry.ID, after_seq: int = 0
    ) -> AsyncGenerator[RequestEvent, None]:
        viewer = await info.context.require_viewer()
        after_seq = info.context.resume_after(after_seq)  # or an SSE Last-Event-ID
        service.check_id(id, "id")
        last, status = await _request_state(info, id, viewer.id)
        _check_cursor(after_seq, last)
        if after_seq >= last and status in RESTING:
            return  # the client has every event, the last one included: nothing follows

        spec = Follow(
            request_channel(id),
            repository.events_after,
            "seq",
            _is_final,
            key=id,
            latest=repository.latest_seqs,
        )
        async for event in _follow(info, spec, after_seq):
            yield event

    @strawberry.subscription(
        description=(
            "The request's place in line: its `queuePosition` and estimates at once, then "
            "each change (at most one a second); ends, after a value with a null position, "
            "once the request has no job waiting in line. Not events: nothing to resume."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def request_queue(
        self, info: Info, id: RequestId
    ) -> AsyncGenerator[QueueStatusType, None]:
        viewer = await info.context.require_viewer()
        service.check_id(id, "id")
        await _request_state(info, id, viewer.id)  # NOT_FOUND when it is not theirs
        await info.context.end_reads()  # over HTTP, hold no session for the stream's life
        watch = info.context.deps.queue_watch
        assert watch is not None, "build_deps makes the ticker"
        release = _Slot(info.context, viewer.id)
        try:
            async for estimate in watch.follow(id):
                yield QueueStatusType.of(id, estimate)
        finally:
            release()

    @strawberry.subscription(
        description=(
            "Every event of all the viewer's requests, in order. `afterSeq` is a `userSeq`: "
            "events after it are replayed first; without it only new events arrive. An "
            "`afterSeq` past the viewer's last event is BAD_USER_INPUT."
        ),
        permission_classes=[IsAuthenticated],
    )
    async def my_request_updates(
        self, info: Info, after_seq: int | None = None
    ) -> AsyncGenerator[RequestEvent, None]:
        viewer = await info.context.require_viewer()
        after_seq = info.context.resume_after(after_seq)  # or an SSE Last-Event-ID
        last = await _user_seq(info, viewer.id)
        if after_seq is None:
            after_seq = last
        _check_cursor(after_seq, last)

        spec = Follow(
            user_channel(viewer.id),
            repository.user_events_after,
            "user_seq",
            _never,
            key=viewer.id,
            latest=users.latest_event_seqs,
        )
        async for event in _follow(info, spec, after_seq):
            yield event
