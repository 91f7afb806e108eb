"""Who may do what: every root field of the schema, as three actors, in one table.

`MATRIX` below has an entry for each field of Query, Mutation and Subscription (a test
walks the schema, so a new field without an entry fails). An entry is one or more
`Case`s: an operation aimed at one of the owner's objects (`on`), and the outcome
expected for each actor:

- anonymous: no token;
- owner: the user who owns the object the operation targets;
- other: a valid token of another user, who owns nothing of the owner's.

Outcomes:

- "ok": it succeeds and shows the target (its global id is in the result).
- "public": it succeeds and shows the public side of the target only: none of the
  owner's private data (private models, requests, prompts, images, source links).
- "empty": it succeeds but shows nothing of the owner's: an empty list, false flags,
  the caller's own profile; for a subscription, no event arrives.
- an error code ("UNAUTHENTICATED", "NOT_FOUND", "FORBIDDEN"): the operation fails with
  `errors[0].extensions.code` equal to it. The gateway answers NOT_FOUND for what
  belongs to someone else, so it never reveals that the object exists.

Whatever a non-owner gets, no private datum of the owner's may appear in it, errors
included; and a refused attempt leaves the owner's data exactly as it was. Each case
runs anonymous, then other, then owner: the owner's success last proves the target
was valid, so the refusals before it were about who asked, not what.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlmodel import col, select
from starlette.datastructures import UploadFile

from app.auth import Viewer
from app.config import Settings
from app.deps import Deps
from app.graphql.context import Context
from app.graphql.relay import global_id
from app.models import service as models
from app.requests import repository, service
from app.requests.stages import Status
from app.schema import schema
from app.tables import GeneratedImage, GenerationJob, Model, WebhookDelivery
from app.uploads import service as uploads
from app.webhooks import service as webhooks
from tests.conftest import RecordingQueue, make_settings
from tests.graphql.client import execute, http_request
from tests.workers.test_pipeline import a_viewer, deliver
from workers.webhooks import feed as feed_webhooks

OK, PUBLIC, EMPTY = "ok", "public", "empty"
UNAUTHENTICATED, NOT_FOUND, FORBIDDEN = "UNAUTHENTICATED", "NOT_FOUND", "FORBIDDEN"
ACTORS = ("anonymous", "other", "owner")  # the order each case runs in

MODEL = """id name description visibility likeCount favoriteCount downloadCount
  likedByMe favoritedByMe owner { id displayName } files { name url } fileUrl previewUrl
  sourceRequest { id prompt } sourceImage { id prompt url }"""
REQUEST = """id prompt status optimizedPrompts selectedImageId
  images { id prompt url } jobs { id } model { id name }"""
EVENT = "requestId seq userSeq status step message request { id prompt }"


def by_id(name: str) -> str:
    return f"mutation M($id: ID!) {{ {name}(id: $id) {{ {MODEL} }} }}"


def request_by_id(name: str) -> str:
    return f"mutation M($id: ID!) {{ {name}(id: $id) {{ {REQUEST} }} }}"


def page(name: str, node: str) -> str:
    return f"{{ {name}(first: 50) {{ edges {{ node {{ {node} }} }} }} }}"


# The GraphQL type of each target: its global id is what clients name it by.
TYPES = {
    "done": "GenerationRequest",
    "private": "Model",
    "public": "Model",
    "published-request": "GenerationRequest",
    "awaiting": "GenerationRequest",
    "image": "GeneratedImage",
    "running": "GenerationRequest",
    "failed": "GenerationRequest",
    "me": "Me",
    "upload": "UploadedImage",
    "webhook": "Webhook",
    "delivery": "WebhookDelivery",  # named by its own id (`msg_...`), not a global id
}


@dataclass(frozen=True)
class State:
    """What the owner has, built afresh for each case."""

    owner: Viewer
    other: Viewer
    ids: dict[str, str]  # the targets a case may name in `on`, by row id
    secrets: frozenset[str]  # what only the owner may ever see

    def target(self, on: str | None) -> str | None:
        return self.gid(on) if on else None

    def gid(self, on: str) -> str:
        return global_id(TYPES[on], self.ids[on])

    @property
    def gids(self) -> list[str]:
        return [self.gid(on) for on in self.ids]


@dataclass(frozen=True)
class Case:
    """One operation, the owner's object it targets, and the outcome for each actor."""

    document: str
    on: str | None  # a key of State.ids, or None when it targets nothing
    anonymous: str
    owner: str
    other: str
    variables: Callable[[State], dict[str, Any]] | None = None  # default: {"id": target}
    evidence: Callable[[State], list[str]] | None = None  # default: the target's global id
    subscription: bool = False

    def variables_for(self, state: State) -> dict[str, Any]:
        if self.variables is not None:
            return self.variables(state)
        return {"id": state.target(self.on)} if self.on else {}

    def evidence_for(self, state: State) -> list[str]:
        """JSON fragments that appear in a result only when it shows the target."""
        if self.evidence is not None:
            return self.evidence(state)
        target = state.target(self.on)
        return [json.dumps(target)] if target else []


def model_case(name: str, on: str, other: str, *, document: str | None = None) -> Case:
    """A model mutation: anonymous callers are refused, the owner may."""
    return Case(document or by_id(name), on, UNAUTHENTICATED, OK, other)


REQUEST_QUERY = f"query Q($id: ID!) {{ request(id: $id) {{ {REQUEST} }} }}"
MODEL_QUERY = f"query Q($id: ID!) {{ model(id: $id) {{ {MODEL} }} }}"
DELETE_REQUEST = "mutation M($id: ID!) { deleteRequest(id: $id) }"
UPDATE_MODEL = f"""mutation M($id: ID!, $input: UpdateModelInput!) {{
  updateModel(id: $id, input: $input) {{ {MODEL} }} }}"""
DELETE_MODEL = "mutation M($id: ID!) { deleteModel(id: $id) }"
DOWNLOAD_MODEL = f"""mutation M($id: ID!) {{
  downloadModel(id: $id) {{ url expiresAt model {{ {MODEL} }} }} }}"""
CREATE_REQUEST = f"""mutation M($input: CreateRequestInput!) {{
  createRequest(input: $input) {{ {REQUEST} }} }}"""
SELECT_IMAGE = f"""mutation M($requestId: ID!, $imageId: ID!) {{
  selectImage(requestId: $requestId, imageId: $imageId) {{ {REQUEST} }} }}"""
ME = """{ me { id displayName role credits
  ledger(first: 50) { edges { node { id kind reason amount requestId } } } } }"""
UPDATE_ME = """mutation M($input: UpdateMeInput!) {
  updateMe(input: $input) { id displayName role credits } }"""


UPLOAD_IMAGE = """mutation M($file: Upload!) { uploadImage(file: $file) { id status url } }"""
CREATE_IMAGE_UPLOAD = """mutation M($input: CreateImageUploadInput!) {
  createImageUpload(input: $input) { url upload { id status } } }"""
COMPLETE_IMAGE_UPLOAD = """mutation M($id: ID!) {
  completeImageUpload(id: $id) { id status url } }"""


def an_image_file() -> UploadFile:
    """What the multipart parser hands `uploadImage`: a fresh file each time."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(buffer, "PNG")
    buffer.seek(0)
    return UploadFile(buffer, filename="mine.png")


WEBHOOK_DELIVERIES = """query Q($id: ID) {
  webhookDeliveries(webhookId: $id) { edges { node { id webhookId payload } } } }"""
CREATE_WEBHOOK = """mutation M($input: CreateWebhookInput!) {
  createWebhook(input: $input) { id url secret } }"""
DELETE_WEBHOOK = "mutation M($id: ID!) { deleteWebhook(id: $id) }"
ROTATE_WEBHOOK = "mutation M($id: ID!) { rotateWebhookSecret(id: $id) { id secret } }"
REDELIVER = "mutation M($id: ID!) { redeliverWebhookDelivery(id: $id) { id status } }"


NODE = """query Q($id: ID!) { node(id: $id) { id
  ... on GenerationRequest { prompt images { id prompt } }
  ... on GeneratedImage { prompt url }
  ... on Model { name sourceRequest { id prompt } sourceImage { id prompt } }
  ... on Me { displayName credits } } }"""
NODES = """query Q($ids: [ID!]!) { nodes(ids: $ids) { id
  ... on GenerationRequest { prompt } ... on Model { name sourceRequest { id prompt } } } }"""


def row_ids(on: str) -> Callable[[State], dict[str, Any]]:
    """Variables naming the target by its row id, as clients did before global ids."""
    return lambda s: {"id": s.ids[on]}


def rename(state: State, on: str) -> dict[str, Any]:
    return {"id": state.ids[on], "input": {"name": "renamed by the caller"}}


MATRIX: dict[str, tuple[Case, ...]] = {
    # ---- Query
    "node": (
        Case(NODE, "done", NOT_FOUND, OK, NOT_FOUND),
        Case(NODE, "upload", NOT_FOUND, OK, NOT_FOUND),
        Case(NODE, "image", NOT_FOUND, OK, NOT_FOUND),
        Case(NODE, "private", NOT_FOUND, OK, NOT_FOUND),
        Case(NODE, "public", PUBLIC, OK, PUBLIC),
        Case(NODE, "published-request", NOT_FOUND, OK, NOT_FOUND),
        Case(NODE, "me", NOT_FOUND, OK, NOT_FOUND),
    ),
    "nodes": (
        Case(NODES, "done", NOT_FOUND, OK, NOT_FOUND, variables=lambda s: {"ids": [s.gid("done")]}),
        Case(NODES, "public", PUBLIC, OK, PUBLIC, variables=lambda s: {"ids": [s.gid("public")]}),
    ),
    "request": (
        Case(REQUEST_QUERY, "done", UNAUTHENTICATED, OK, NOT_FOUND),
        # a public model's request stays as private as any other
        Case(REQUEST_QUERY, "published-request", UNAUTHENTICATED, OK, NOT_FOUND),
        # the row id clients kept from before global ids names it as well, and no better
        Case(REQUEST_QUERY, "done", UNAUTHENTICATED, OK, NOT_FOUND, variables=row_ids("done")),
    ),
    "requests": (Case(page("requests", REQUEST), "done", UNAUTHENTICATED, OK, EMPTY),),
    "myModels": (Case(page("myModels", MODEL), "private", UNAUTHENTICATED, OK, EMPTY),),
    "publicModels": (Case(page("publicModels", MODEL), "public", PUBLIC, OK, PUBLIC),),
    "model": (
        Case(MODEL_QUERY, "private", NOT_FOUND, OK, NOT_FOUND),
        Case(MODEL_QUERY, "public", PUBLIC, OK, PUBLIC),
    ),
    "likedModels": (Case(page("likedModels", MODEL), "private", UNAUTHENTICATED, OK, EMPTY),),
    "favoritedModels": (
        Case(page("favoritedModels", MODEL), "private", UNAUTHENTICATED, OK, EMPTY),
    ),
    "interactionStatus": (
        Case(
            "query Q($ids: [ID!]!) { interactionStatus(modelIds: $ids) { liked favorited } }",
            None,
            EMPTY,
            OK,
            EMPTY,
            variables=lambda s: {"ids": [s.ids["private"], s.ids["public"]]},
            evidence=lambda s: ['"liked": true', '"favorited": true'],
        ),
    ),
    "availableProviders": (
        Case("{ availableProviders { name kind position formats } }", None, OK, OK, OK),
    ),
    "me": (Case(ME, "me", UNAUTHENTICATED, OK, EMPTY),),
    # ---- Mutation
    "updateMe": (
        Case(
            UPDATE_ME,
            "me",
            UNAUTHENTICATED,
            OK,
            EMPTY,  # renames the caller, never the owner
            variables=lambda s: {"input": {"displayName": "renamed by the caller"}},
        ),
    ),
    "createRequest": (
        Case(  # from the owner's uploaded image: theirs alone to use
            CREATE_REQUEST,
            "upload",
            UNAUTHENTICATED,
            OK,
            NOT_FOUND,
            variables=lambda s: {"input": {"sourceImage": s.gid("upload")}},
            evidence=lambda s: ['"MODEL_PENDING"'],
        ),
        Case(
            CREATE_REQUEST,
            None,
            UNAUTHENTICATED,
            OK,
            OK,  # a request of their own
            variables=lambda s: {"input": {"prompt": "a fresh lamp", "imageCount": 1}},
        ),
        Case(
            CREATE_REQUEST,
            None,
            UNAUTHENTICATED,
            FORBIDDEN,  # HIGH needs a role neither has
            FORBIDDEN,
            variables=lambda s: {"input": {"prompt": "a fresh lamp", "priority": "HIGH"}},
        ),
    ),
    "uploadImage": (
        Case(
            UPLOAD_IMAGE,
            None,
            UNAUTHENTICATED,
            OK,
            OK,  # an upload of their own
            variables=lambda s: {"file": an_image_file()},
            evidence=lambda s: ['"READY"'],
        ),
    ),
    "createImageUpload": (
        Case(
            CREATE_IMAGE_UPLOAD,
            None,
            UNAUTHENTICATED,
            OK,
            OK,  # an upload of their own
            variables=lambda s: {"input": {"contentType": "image/png"}},
            evidence=lambda s: ['"PENDING"'],
        ),
    ),
    "completeImageUpload": (Case(COMPLETE_IMAGE_UPLOAD, "upload", UNAUTHENTICATED, OK, NOT_FOUND),),
    "selectImage": (
        Case(
            SELECT_IMAGE,
            "awaiting",
            UNAUTHENTICATED,
            OK,
            NOT_FOUND,
            variables=lambda s: {"requestId": s.ids["awaiting"], "imageId": s.ids["image"]},
        ),
    ),
    "retryRequest": (
        Case(request_by_id("retryRequest"), "failed", UNAUTHENTICATED, OK, NOT_FOUND),
    ),
    "cancelRequest": (
        Case(request_by_id("cancelRequest"), "running", UNAUTHENTICATED, OK, NOT_FOUND),
    ),
    "deleteRequest": (
        Case(DELETE_REQUEST, "running", UNAUTHENTICATED, OK, NOT_FOUND),
        Case(DELETE_REQUEST, "done", UNAUTHENTICATED, OK, NOT_FOUND),
    ),
    "updateModel": (
        Case(
            UPDATE_MODEL,
            "private",
            UNAUTHENTICATED,
            OK,
            NOT_FOUND,
            variables=lambda s: rename(s, "private"),
        ),
        # public, but not theirs to change: as good as absent
        Case(
            UPDATE_MODEL,
            "public",
            UNAUTHENTICATED,
            OK,
            NOT_FOUND,
            variables=lambda s: rename(s, "public"),
        ),
    ),
    "publishModel": (
        model_case("publishModel", "private", NOT_FOUND),
        model_case("publishModel", "public", NOT_FOUND),
    ),
    "unpublishModel": (
        model_case("unpublishModel", "private", NOT_FOUND),
        model_case("unpublishModel", "public", NOT_FOUND),
    ),
    "deleteModel": (
        model_case("deleteModel", "private", NOT_FOUND, document=DELETE_MODEL),
        model_case("deleteModel", "public", NOT_FOUND, document=DELETE_MODEL),
    ),
    "downloadModel": (
        model_case("downloadModel", "private", NOT_FOUND, document=DOWNLOAD_MODEL),
        model_case("downloadModel", "public", PUBLIC, document=DOWNLOAD_MODEL),
    ),
    # Anyone may count a view of a public model; a private one is not there for others.
    "viewModel": (
        Case(by_id("viewModel"), "private", NOT_FOUND, OK, NOT_FOUND),
        Case(by_id("viewModel"), "public", PUBLIC, OK, PUBLIC),
    ),
    "likeModel": (
        model_case("likeModel", "private", NOT_FOUND),
        model_case("likeModel", "public", PUBLIC),
        Case(by_id("likeModel"), "private", UNAUTHENTICATED, OK, NOT_FOUND, row_ids("private")),
    ),
    "unlikeModel": (
        model_case("unlikeModel", "private", NOT_FOUND),
        model_case("unlikeModel", "public", PUBLIC),
    ),
    "favoriteModel": (
        model_case("favoriteModel", "private", NOT_FOUND),
        model_case("favoriteModel", "public", PUBLIC),
    ),
    "unfavoriteModel": (
        model_case("unfavoriteModel", "private", NOT_FOUND),
        model_case("unfavoriteModel", "public", PUBLIC),
    ),
    # ---- Webhooks (app/webhooks)
    "webhooks": (
        Case(page("webhooks", "id url events secret"), "webhook", UNAUTHENTICATED, OK, EMPTY),
    ),
    "webhookDeliveries": (
        Case(WEBHOOK_DELIVERIES, "webhook", UNAUTHENTICATED, OK, NOT_FOUND),
        Case(
            page("webhookDeliveries", "id requestId payload"),
            "delivery",
            UNAUTHENTICATED,
            OK,
            EMPTY,
            evidence=lambda s: [json.dumps(s.ids["delivery"])],
        ),
    ),
    "defaultWebhookSecret": (
        Case(
            "{ defaultWebhookSecret }",
            None,
            UNAUTHENTICATED,
            OK,
            OK,
            evidence=lambda s: ['"whsec_'],
        ),
    ),
    "createWebhook": (
        Case(
            CREATE_WEBHOOK,
            None,
            UNAUTHENTICATED,
            OK,
            OK,  # a webhook of their own
            variables=lambda s: {"input": {"url": "https://93.184.216.34/hook"}},
            evidence=lambda s: ['"https://93.184.216.34/hook"'],
        ),
    ),
    "deleteWebhook": (Case(DELETE_WEBHOOK, "webhook", UNAUTHENTICATED, OK, NOT_FOUND),),
    "rotateWebhookSecret": (Case(ROTATE_WEBHOOK, "webhook", UNAUTHENTICATED, OK, NOT_FOUND),),
    "rotateDefaultWebhookSecret": (
        Case(
            "mutation { rotateDefaultWebhookSecret }",
            None,
            UNAUTHENTICATED,
            OK,
            OK,  # their own default secret
            evidence=lambda s: ['"whsec_'],
        ),
    ),
    "redeliverWebhookDelivery": (
        Case(
            REDELIVER,
            "delivery",
            UNAUTHENTICATED,
            OK,
            NOT_FOUND,
            variables=lambda s: {"id": s.ids["delivery"]},
            evidence=lambda s: [json.dumps(s.ids["delivery"])],
        ),
    ),
    # ---- Subscription: the first result (or, for "empty", none within a while)
    "requestUpdates": (
        Case(
            f"subscription S($id: ID!) {{ requestUpdates(id: $id) {{ {EVENT} }} }}",
            "done",
            UNAUTHENTICATED,
            OK,
            NOT_FOUND,
            subscription=True,
        ),
        Case(
            f"subscription S($id: ID!) {{ requestUpdates(id: $id) {{ {EVENT} }} }}",
            "done",
            UNAUTHENTICATED,
            OK,
            NOT_FOUND,
            variables=row_ids("done"),
            subscription=True,
        ),
    ),
    "requestQueue": (
        Case(
            "subscription S($id: ID!) { requestQueue(id: $id) { requestId queuePosition } }",
            "done",  # a finished request: its one value (not waiting), then the end
            UNAUTHENTICATED,
            OK,
            NOT_FOUND,
            subscription=True,
        ),
    ),
    "myRequestUpdates": (
        Case(
            f"subscription {{ myRequestUpdates(afterSeq: 0) {{ {EVENT} }} }}",
            "done",  # the owner's first request: its first event replays first
            UNAUTHENTICATED,
            OK,
            EMPTY,
            subscription=True,
        ),
    ),
}

CASES = [
    pytest.param(name, case, id=f"{name}-{case.on or 'none'}-{index}")
    for name, cases in MATRIX.items()
    for index, case in enumerate(cases)
]


def test_every_root_field_has_an_entry() -> None:
    graphql_schema = schema._schema
    roots = [graphql_schema.query_type, graphql_schema.mutation_type]
    roots += [graphql_schema.subscription_type]
    fields = {name for root in roots if root is not None for name in root.fields}
    assert len(fields) > 20, fields  # the walk found the schema
    missing, stale = sorted(fields - MATRIX.keys()), sorted(MATRIX.keys() - fields)
    assert not missing, (
        f"root fields without an entry in MATRIX: {missing}. Every new Query, Mutation or "
        "Subscription field needs its authorization outcomes written down here."
    )
    assert not stale, f"MATRIX entries for fields the schema no longer has: {stale}"
    assert all(MATRIX.values()), "every entry needs at least one case"


# ---- the owner's world


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shared settings with instant local providers: each case builds its own state.

    SQLite only: who may see what is decided by the same repository queries, which the
    rest of the suite runs on SQLite and MariaDB alike; here they would only double the
    time of the largest test in the suite."""
    return make_settings(
        tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'lumi.db'}",
        local_latency_seconds=0,
        local_model_latency_seconds=0,
        model_poll_interval_seconds=0.01,
    )


async def submit(deps: Deps, viewer: Viewer, prompt: str, **options: Any) -> str:
    new = service.NewRequest(prompt=prompt, image_size=deps.settings.image_size, **options)
    async with deps.unit() as unit:
        policy = service.Policy.from_settings(deps.settings)
        return (await service.create_request(unit, viewer, new, policy)).id


async def build_state(deps: Deps) -> State:
    """The owner has: a completed request and its private model ("done", "private"), a
    published model from another request ("public", "published-request"), a request
    awaiting an image selection ("awaiting", "image"), one still running ("running") and
    one FAILED ("failed"). The owner likes and favorites both models; the other user
    has nothing."""
    marker = f"secret{uuid.uuid4().hex[:12]}"  # in every prompt: prompts are private
    owner, other = await a_viewer(deps, "owner"), await a_viewer(deps, "other")
    async with deps.db.write() as session:  # before the requests: it gets their events
        hook = await webhooks.create_endpoint(
            session,
            owner.id,
            "https://93.184.216.34/owner",
            [webhooks.WebhookEvent.REQUEST_UPDATED],
            None,
        )
        account = await webhooks.ensure_account(session, owner.id)
    done = await submit(deps, owner, f"{marker} brass owl", image_count=1, auto_model=True)
    published = await submit(deps, owner, f"{marker} tin fox", image_count=1, auto_model=True)
    awaiting = await submit(deps, owner, f"{marker} clay cat", image_count=1)
    await deliver(deps)
    failed = await submit(deps, owner, f"{marker} wax bee", image_count=1)
    running = await submit(deps, owner, f"{marker} oak elk", image_count=1)
    assert isinstance(deps.queue, RecordingQueue)
    deps.queue.take()  # these two never run
    async with deps.unit() as unit:
        row = await repository.get(unit.session, failed, for_update=True)
        assert row is not None
        await service.fail_request(
            unit, row, Status.IMAGE_FAILED, code="TEST", message="made to fail"
        )

    request_ids = [done, published, awaiting, failed, running]
    async with deps.db.read() as session:
        by_request = {
            m.request_id: m
            for m in (await session.execute(select(Model))).scalars()
            if m.request_id is not None
        }
        images = list(
            (
                await session.execute(
                    select(GeneratedImage).where(col(GeneratedImage.request_id).in_(request_ids))
                )
            ).scalars()
        )
        jobs = list(
            (
                await session.execute(
                    select(GenerationJob.id).where(col(GenerationJob.request_id).in_(request_ids))
                )
            ).scalars()
        )
    private, public = by_request[done], by_request[published]
    async with deps.unit() as unit:
        await models.update_model(unit, owner, public.id, name="Gallery fox", description=None)
        await models.set_visibility(unit, owner, public.id, models.PUBLIC)
        for model_id in (private.id, public.id):
            for kind in ("LIKE", "FAVORITE"):
                await models.set_interaction(unit, owner.id, model_id, kind, on=True)

    # The published model's request, images and jobs are secrets too: its file URLs
    # show storage keys, and those are random (providers.storage.new_key). So are their
    # global ids.
    secrets = frozenset(
        {
            marker,
            private.id,
            global_id("Model", private.id),
            *request_ids,
            *(global_id("GenerationRequest", i) for i in request_ids),
            *(i.id for i in images),
            *(global_id("GeneratedImage", i.id) for i in images),
            *jobs,
            *(global_id("GenerationJob", i) for i in jobs),
        }
    )
    image = next(i.id for i in images if i.request_id == awaiting)
    upload = await uploads.receive(deps, owner, an_image_file().file.read(), "mine.png")
    secrets |= {upload.id, global_id("UploadedImage", upload.id), upload.storage_key}
    await feed_webhooks(deps)
    async with deps.db.read() as session:
        delivery = (await session.execute(select(WebhookDelivery.id).limit(1))).scalar_one()
    secrets |= {hook.secret, account.secret, hook.url, delivery}
    return State(
        owner=owner,
        other=other,
        ids={
            "done": done,
            "private": private.id,
            "public": public.id,
            "published-request": published,
            "awaiting": awaiting,
            "image": image,
            "running": running,
            "failed": failed,
            "me": owner.id,
            "upload": upload.id,
            "webhook": hook.id,
            "delivery": delivery,
        },
        secrets=secrets,
    )


OWNER_VIEW = """{
  requests(first: 50) { edges { node { id status phase selectedImageId seq } } }
  myModels(first: 50) { edges { node { id name description visibility likeCount
    favoriteCount downloadCount likedByMe favoritedByMe } } }
  likedModels(first: 50) { edges { node { id } } }
  favoritedModels(first: 50) { edges { node { id } } }
  me { credits }
}"""


async def owner_view(deps: Deps, state: State) -> dict[str, Any]:
    result = await execute(deps, OWNER_VIEW, user=state.owner.external_id)
    assert not result["errors"], result
    return dict(result["data"])


# ---- running a case


@dataclass
class Outcome:
    data: Any
    errors: list[dict[str, Any]]
    silent: bool = False  # a subscription that sent nothing within its wait
    text: str = field(init=False)

    def __post_init__(self) -> None:
        self.text = json.dumps({"data": self.data, "errors": self.errors})


SUBSCRIPTION_WAIT = 1.5  # the shared settings re-check the event table every 0.5 s


async def run(deps: Deps, case: Case, state: State, user: str | None) -> Outcome:
    variables = case.variables_for(state)
    if not case.subscription:
        result = await execute(deps, case.document, variables, user=user)
        return Outcome(result["data"], result["errors"])
    context = Context(deps, http_request(user), None)
    # Always a stream: a refusal is its first result.
    stream = await schema.subscribe(case.document, variable_values=variables, context_value=context)
    try:
        first = await asyncio.wait_for(anext(stream), SUBSCRIPTION_WAIT)
    except TimeoutError:
        return Outcome(None, [], silent=True)
    finally:
        await stream.aclose()
        await context.end_reads()
    return Outcome(first.data, [dict(e.formatted) for e in first.errors or []])


def check(name: str, case: Case, state: State, actor: str, got: Outcome) -> None:
    expected: str = getattr(case, actor)
    where = f"{name} on {case.on} as {actor}: expected {expected}, got {got.text[:2000]}"
    if actor != "owner":
        leaked = sorted(s for s in state.secrets if s in got.text)
        assert not leaked, f"{where}\nthe owner's private data leaked: {leaked}"
    evidence = case.evidence_for(state)
    if expected in (OK, PUBLIC, EMPTY):
        assert not got.errors, where
        if case.subscription and expected == EMPTY:
            assert got.silent, where
            return
        assert not got.silent, where
        assert got.data is not None, where
        assert got.data.get(name) is not None, where
    if expected in (OK, PUBLIC):
        missing = [e for e in evidence if e not in got.text]
        assert not missing, f"{where}\nthe target is not in the result: {missing}"
    elif expected == EMPTY:
        theirs = [json.dumps(i) for i in [*state.ids.values(), *state.gids]] + evidence
        shown = [e for e in theirs if e in got.text]
        assert not shown, f"{where}\nshows the owner's data: {shown}"
    else:
        assert got.errors, where
        assert got.errors[0]["extensions"]["code"] == expected, where
        shown = None if got.data is None else got.data.get(name)
        assert shown is None or shown == [None] * len(shown), where  # `nodes`: one null each


@pytest.mark.parametrize(("name", "case"), CASES)
async def test_each_actor_gets_what_the_matrix_says(deps: Deps, name: str, case: Case) -> None:
    state = await build_state(deps)
    users = {"anonymous": None, "other": state.other.external_id}
    users["owner"] = state.owner.external_id
    before = await owner_view(deps, state)
    for actor in ACTORS:
        got = await run(deps, case, state, users[actor])
        check(name, case, state, actor, got)
        after = await owner_view(deps, state)
        if got.errors:
            assert after == before, f"{name} on {case.on}: a refused {actor} changed {after}"
        before = after
