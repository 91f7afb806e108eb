"""The subscription algorithm: every event once, in order, whatever the bus does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.bus import request_channel
from app.deps import Deps
from app.requests import repository
from app.requests.stages import RESTING, Status
from app.requests.stream import Follow, Rechecks, follow
from app.tables import RequestEvent
from app.unit import event_payload
from tests.requests.test_cancel_and_idempotency import deliver_one
from tests.workers.test_pipeline import a_viewer, deliver, submit


def spec_for(request_id: str) -> Follow:
    return Follow(
        request_channel(request_id),
        repository.events_after,
        "seq",
        lambda e: e.status in RESTING,
        key=request_id,
        latest=repository.latest_seqs,
    )


@pytest.fixture
async def rechecks(deps: Deps) -> AsyncIterator[Callable[[float], Rechecks]]:
    """Makes a stream's Rechecks with a given interval, each closed (as the app's Deps
    closes its own) before the database goes."""
    made: list[Rechecks] = []

    def make(interval: float) -> Rechecks:
        made.append(Rechecks(deps.db, interval))
        return made[-1]

    yield make
    for each in made:
        await each.aclose()


async def take(stream: AsyncIterator[RequestEvent], count: int) -> list[int]:
    seqs = []
    async for event in stream:
        seqs.append(event.seq)
        if len(seqs) == count:
            break
    return seqs


class SilentBus:
    """A bus that loses every message while it looks healthy (a publisher's Redis
    blip that the subscriber's connection never noticed)."""

    connected = True

    def __init__(self, inner: object) -> None:
        self.inner = inner

    async def publish(self, channel: str, payload: dict[str, object]) -> None:
        return None

    def subscribe(self, channels: list[str]):  # type: ignore[no-untyped-def]
        return self.inner.subscribe(channels)  # type: ignore[attr-defined]


async def test_replay_then_end_after_the_resting_status(
    deps: Deps, rechecks: Callable[[float], Rechecks]
) -> None:
    request_id = await submit(deps, await a_viewer(deps), image_count=1, auto_model=True)
    await deliver(deps)
    stream = follow(deps.db, deps.bus, spec_for(request_id), after=0, rechecks=rechecks(0.1))
    events = [e async for e in stream]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].status == Status.COMPLETED


async def test_after_seq_skips_what_the_client_already_has(
    deps: Deps, rechecks: Callable[[float], Rechecks]
) -> None:
    request_id = await submit(deps, await a_viewer(deps), image_count=1, auto_model=True)
    await deliver(deps)
    stream = follow(deps.db, deps.bus, spec_for(request_id), after=4, rechecks=rechecks(0.1))
    seqs = [e.seq async for e in stream]
    assert seqs[0] == 5
    assert seqs == list(range(5, 5 + len(seqs)))


async def test_live_duplicates_and_stale_messages_are_delivered_once_in_order(
    deps: Deps, rechecks: Callable[[float], Rechecks]
) -> None:
    request_id = await submit(deps, await a_viewer(deps), image_count=2, auto_model=True)
    bus = deps.bus
    stream = follow(deps.db, bus, spec_for(request_id), after=0, rechecks=rechecks(30))
    assert await take(stream, 1) == [1]  # replayed; the table holds nothing more yet
    deps.bus = SilentBus(bus)  # type: ignore[assignment]
    await deliver(deps)  # the run's own publishes are lost: the test publishes instead
    deps.bus = bus
    async with deps.db.read() as session:
        history = await repository.events_after(session, request_id, 0)
    channel = request_channel(request_id)
    for event in history[1:]:
        for copy in (event, event, history[0]):  # a duplicate and a stale one each time
            await bus.publish(channel, event_payload(copy))
    rest = await asyncio.wait_for(_drain(stream), 5)  # recheck is 30 s: these came live
    assert rest == list(range(2, len(history) + 1))


async def _drain(stream: AsyncIterator[RequestEvent]) -> list[int]:
    return [e.seq async for e in stream]


async def test_a_lost_publish_still_arrives_through_the_table(
    deps: Deps, rechecks: Callable[[float], Rechecks]
) -> None:
    viewer = await a_viewer(deps)
    request_id = await submit(deps, viewer, image_count=1, auto_model=True)
    silent = SilentBus(deps.bus)
    stream = follow(deps.db, silent, spec_for(request_id), after=0, rechecks=rechecks(0.1))

    async def consume() -> list[int]:
        return [e.seq async for e in stream]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    await deliver(deps)  # every publish of the run is lost
    seqs = await asyncio.wait_for(task, 10)
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) > 5


async def test_a_gap_in_live_messages_is_backfilled_from_the_table(
    deps: Deps, rechecks: Callable[[float], Rechecks]
) -> None:
    request_id = await submit(deps, await a_viewer(deps), image_count=1, auto_model=True)
    await deliver(deps)
    async with deps.db.read() as session:
        history = await repository.events_after(session, request_id, 0)
    stream = follow(deps.db, deps.bus, spec_for(request_id), after=0, rechecks=rechecks(30))
    assert await take(stream, 1) == [1]
    # Only the last event is published: everything between comes from the table.
    await deps.bus.publish(request_channel(request_id), event_payload(history[-1]))
    rest = [e.seq async for e in stream]
    assert rest == list(range(2, len(history) + 1))


def test_a_published_event_reads_back_as_the_same_row() -> None:
    from datetime import UTC, datetime

    from app.requests.stream import event_from_payload
    from app.unit import event_payload

    row = RequestEvent(
        request_id="a" * 32,
        seq=3,
        user_id="b" * 32,
        user_seq=9,
        status="IMAGE_GENERATING",
        phase="IMAGE_GENERATION",
        step="retrying image 1 of 1",
        job_id="c" * 32,
        job_status="RETRYING",
        attempt=1,
        next_attempt_at=datetime(2026, 11, 23, 3, 0, 1, 5000, tzinfo=UTC),
    )
    assert event_from_payload(event_payload(row)).model_dump() == row.model_dump()


async def test_a_recheck_asks_once_for_many_quiet_streams_and_wakes_only_the_one_behind(
    deps: Deps, rechecks: Callable[[float], Rechecks]
) -> None:
    from sqlalchemy import event as sa_event

    from app.requests.stream import _Follower

    viewer = await a_viewer(deps)
    requests = [await submit(deps, viewer, image_count=1) for _ in range(3)]
    recheck = rechecks(3600)
    recheck.CHUNK = 2  # three streams: two queries
    woken: list[str] = []
    followers = [_Follower(r, 1, lambda r=r: woken.append(r)) for r in requests]  # seq 1 sent
    statements: list[str] = []
    sa_event.listen(
        deps.db.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2])
    )
    with contextlib.ExitStack() as stack:
        for follower in followers:
            stack.enter_context(recheck.watching(repository.latest_seqs, follower))
        assert await recheck.check() == 0  # nobody is behind
        deps.bus = SilentBus(deps.bus)  # type: ignore[assignment]
        await deliver_one(deps)  # the first request moves on; its publish is lost
        statements.clear()
        assert await recheck.check() == 1
    assert woken == [requests[0]]
    assert len([s for s in statements if s.lstrip().startswith("SELECT")]) == 2


async def test_closing_lets_a_round_under_way_finish_and_hands_its_connection_back(
    deps: Deps,
) -> None:
    from app.requests.stream import _Follower

    recheck = Rechecks(deps.db, interval=0.01)
    reading, finish = asyncio.Event(), asyncio.Event()

    async def slow_latest(session: AsyncSession, keys: object) -> dict[str, int]:
        await repository.latest_seqs(session, ["-"])  # the round holds a connection
        reading.set()
        await finish.wait()
        return {}

    with recheck.watching(slow_latest, _Follower("r", 0, lambda: None)):
        await asyncio.wait_for(reading.wait(), 5)
        closing = asyncio.create_task(recheck.aclose())
        await asyncio.sleep(0.05)
        assert not closing.done()  # it waits for the round, it does not cut it short
        finish.set()
        await asyncio.wait_for(closing, 5)
    assert deps.db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
