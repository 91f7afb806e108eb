"""What one image stage costs the database: the pipeline's hot path, statement by
statement (issue 21: at most 8 per image task), with the stage's guarantees intact."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiomysql import connection as aiomysql_connection
from pymysql.constants import COMMAND
from sqlmodel import col, select

from app.auth import Claims, Viewer
from app.deps import Deps
from app.requests import service
from app.requests.service import Stage
from app.requests.stages import Status
from app.tables import GenerationRequest, RequestEvent
from app.users.service import viewer_for
from tests.conftest import RecordingQueue
from workers.actors import STAGES
from workers.claims import lock_job

IMAGES = 4


@pytest.fixture(params=["mariadb"])
def database_url(request: pytest.FixtureRequest, mariadb_url: str) -> str:
    from tests.conftest import empty_tables

    empty_tables(mariadb_url)
    return mariadb_url


class Statements:
    """Every statement the process sends to MariaDB (COMMIT and ROLLBACK included):
    what the server's counters, and the benchmark, count."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.prompt: list[str] = []

    @property
    def count(self) -> int:
        return len(self.sent)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Statements:
    seen = Statements()
    execute = aiomysql_connection.Connection._execute_command

    async def counted(self: Any, command: int, sql: Any) -> Any:
        if command == COMMAND.COM_QUERY:
            seen.sent.append(sql if isinstance(sql, str) else sql.decode(errors="replace"))
        return await execute(self, command, sql)

    monkeypatch.setattr(aiomysql_connection.Connection, "_execute_command", counted)
    return seen


async def a_viewer(deps: Deps) -> Viewer:
    async with deps.db.write() as session:
        return await viewer_for(session, Claims(subject="ada", name="Ada"), initial_credits=100)


async def images_waiting(
    deps: Deps, viewer: Viewer, statements: Statements | None = None
) -> tuple[str, list[str]]:
    """A request whose prompt stage has run: its image jobs wait for a worker. With
    `statements`, what the prompt stage sent is left in `statements.prompt`."""
    new = service.NewRequest(prompt="a small ceramic owl", image_count=IMAGES, image_size=64)
    async with deps.unit() as unit:
        request = await service.create_request(unit, viewer, new)
    queue = deps.queue
    assert isinstance(queue, RecordingQueue)
    (prompt,) = queue.take()
    await STAGES[Stage.GENERATE_IMAGE](deps, "0" * 32)  # no such job: connections warm up
    before = statements.count if statements else 0
    await STAGES[prompt.stage](deps, *prompt.args)
    if statements:
        statements.prompt = statements.sent[before:]
    images = [m for m in queue.take() if m.stage == Stage.GENERATE_IMAGE]
    assert len(images) == IMAGES
    return request.id, [str(message.args[0]) for message in images]


async def test_an_image_task_costs_at_most_eight_statements_and_its_prompt_eighteen(
    deps: Deps, statements: Statements
) -> None:
    deps.settings.stall_seconds = 3600.0  # no heartbeat inside the measurement
    viewer = await a_viewer(deps)
    request_id, job_ids = await images_waiting(deps, viewer, statements)

    costs = []
    for job_id in job_ids:  # the last one also closes the phase
        before = statements.count
        await STAGES[Stage.GENERATE_IMAGE](deps, job_id)
        costs.append(statements.sent[before:])

    assert all(len(sent) <= 8 for sent in costs), [len(sent) for sent in costs]
    # the prompt stage, shared by the request's images: claim, then fan out four jobs
    assert len(statements.prompt) <= 18, "\n".join(s[:70] for s in statements.prompt)
    async with deps.db.read() as session:
        request = await session.get(GenerationRequest, request_id)
        events = (
            await session.execute(
                select(RequestEvent)
                .where(col(RequestEvent.request_id) == request_id)
                .order_by(col(RequestEvent.seq))
            )
        ).scalars()
        user_seqs = [event.user_seq for event in events]
    assert request is not None
    assert request.status == Status.IMAGE_COMPLETED
    assert (request.images_completed, request.images_failed) == (IMAGES, 0)
    assert user_seqs == list(range(1, len(user_seqs) + 1))  # one user sequence, no gap


async def test_a_repeated_image_message_costs_one_read_and_changes_nothing(
    deps: Deps, statements: Statements
) -> None:
    deps.settings.stall_seconds = 3600.0
    viewer = await a_viewer(deps)
    request_id, job_ids = await images_waiting(deps, viewer)
    await STAGES[Stage.GENERATE_IMAGE](deps, job_ids[0])

    before = statements.count
    await STAGES[Stage.GENERATE_IMAGE](deps, job_ids[0])  # delivered again

    assert statements.count - before <= 2  # the read that finds it taken, and its claim
    async with deps.db.read() as session:
        request = await session.get(GenerationRequest, request_id)
    assert request is not None
    assert request.images_completed == 1


async def test_a_users_stages_do_not_wait_for_each_other(deps: Deps) -> None:
    """One request of a user in the middle of a stage's transaction (its request locked,
    its event not yet numbered) does not hold up the images of the user's other request:
    the owner's row is locked only to number events, just before a commit."""
    deps.settings.stall_seconds = 3600.0
    viewer = await a_viewer(deps)
    _, first_jobs = await images_waiting(deps, viewer)
    second_id, second_jobs = await images_waiting(deps, viewer)
    started, release = asyncio.Event(), asyncio.Event()

    async def a_stage_midway() -> None:
        async with deps.unit() as unit:
            assert await lock_job(unit, first_jobs[0]) is not None
            started.set()
            await release.wait()

    holder = asyncio.create_task(a_stage_midway())
    try:
        await started.wait()
        async with asyncio.timeout(20):  # innodb_lock_wait_timeout is 50 s
            for job_id in second_jobs:
                await STAGES[Stage.GENERATE_IMAGE](deps, job_id)
    finally:
        release.set()
        await holder

    async with deps.db.read() as session:
        second = await session.get(GenerationRequest, second_id)
    assert second is not None
    assert second.status == Status.IMAGE_COMPLETED
