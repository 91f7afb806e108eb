"""Credits: debited when work starts, refunded once for what was not delivered, never
below zero. On SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from sqlmodel import col, select

from app.auth import Viewer
from app.deps import Deps
from app.errors import InsufficientCredits
from app.graphql.relay import row_id
from app.requests import service
from app.requests.errors import RequestNotCancellable
from app.requests.stages import Status
from app.tables import CreditEntry
from app.users import repository as users
from tests.graphql.client import code, data, execute
from tests.requests.test_cancel_and_idempotency import deliver_one
from tests.workers.test_pipeline import a_viewer, deliver, request_row, submit

POLICY = service.Policy(image_price=2, model_price=7, high_priority_roles=frozenset({"admin"}))


async def balance(deps: Deps, viewer: Viewer) -> int:
    async with deps.db.read() as session:
        user = await users.get(session, viewer.id)
    assert user is not None
    return user.credits


async def ledger(deps: Deps, request_id: str) -> list[tuple[str, str, int]]:
    async with deps.db.read() as session:
        rows = await session.execute(
            select(CreditEntry.kind, CreditEntry.reason, CreditEntry.amount)
            .where(col(CreditEntry.request_id) == request_id)
            .order_by(col(CreditEntry.created_at), col(CreditEntry.id))
        )
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def create(deps: Deps, viewer: Viewer, **options: Any) -> str:
    new = service.NewRequest(prompt="a brass gear", image_size=128, **options)
    async with deps.unit() as unit:
        return (await service.create_request(unit, viewer, new, POLICY)).id


async def set_balance(deps: Deps, viewer: Viewer, credits: int) -> None:
    async with deps.db.write() as session:
        user = await users.get(session, viewer.id, for_update=True)
        assert user is not None
        user.credits = credits


async def test_creation_pays_for_the_images_and_auto_mode_for_the_model_too(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    start = await balance(deps, viewer)
    manual = await create(deps, viewer, image_count=3)
    assert await ledger(deps, manual) == [("DEBIT", "IMAGES", -6)]
    auto = await create(deps, viewer, image_count=1, auto_model=True)
    assert sorted(await ledger(deps, auto)) == [("DEBIT", "IMAGES", -2), ("DEBIT", "MODEL", -7)]
    assert await balance(deps, viewer) == start - 6 - 9


async def test_a_short_balance_is_insufficient_credits_and_writes_nothing(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    await set_balance(deps, viewer, 5)
    with pytest.raises(InsufficientCredits) as raised:
        await create(deps, viewer, image_count=1, auto_model=True)  # needs 2 + 7
    assert raised.value.extensions == {"required": 9, "balance": 5}
    assert await balance(deps, viewer) == 5
    page = await data(deps, "{ requests(first: 5) { edges { node { id } } } }", user="alice")
    assert page["requests"]["edges"] == []


async def test_selecting_an_image_pays_for_the_model(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    request_id = await create(deps, viewer, image_count=1)
    await deliver(deps)
    row = await request_row(deps, request_id)
    assert row.status == Status.IMAGE_COMPLETED
    images = await data(
        deps,
        "query($id: ID!) { request(id: $id) { images { id } } }",
        {"id": request_id},
        user="alice",
    )
    image_id = row_id(images["request"]["images"][0]["id"])
    await set_balance(deps, viewer, 6)
    async with deps.unit() as unit:
        with pytest.raises(InsufficientCredits):
            await service.select_image(unit, viewer, request_id, image_id, POLICY)
    assert (await request_row(deps, request_id)).status == Status.IMAGE_COMPLETED
    await set_balance(deps, viewer, 7)
    async with deps.unit() as unit:
        await service.select_image(unit, viewer, request_id, image_id, POLICY)
    await deliver(deps)
    assert (await request_row(deps, request_id)).status == Status.COMPLETED
    assert await balance(deps, viewer) == 0
    assert [kind for kind, *_ in await ledger(deps, request_id)] == ["DEBIT", "DEBIT"]


async def test_cancel_refunds_what_was_not_delivered_exactly_once(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    start = await balance(deps, viewer)
    request_id = await create(deps, viewer, image_count=2, auto_model=True)
    async with deps.unit() as unit:
        await service.cancel_request(unit, viewer, request_id)
    async with deps.unit() as unit:
        with pytest.raises(RequestNotCancellable):
            await service.cancel_request(unit, viewer, request_id)
    await deliver(deps)  # the stage messages sent before the cancel change nothing
    assert await balance(deps, viewer) == start
    entries = await ledger(deps, request_id)
    assert sorted(entries) == sorted(
        [
            ("DEBIT", "IMAGES", -4),
            ("DEBIT", "MODEL", -7),
            ("REFUND", "IMAGES", 4),
            ("REFUND", "MODEL", 7),
        ]
    )


async def test_cancel_after_the_images_refunds_only_the_model(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    start = await balance(deps, viewer)
    request_id = await create(deps, viewer, image_count=2, auto_model=True)
    queue = deps.queue
    while (await request_row(deps, request_id)).status != Status.MODEL_PENDING:
        await deliver_one(deps)
    queue.take()  # type: ignore[attr-defined]
    async with deps.unit() as unit:
        await service.cancel_request(unit, viewer, request_id)
    assert await balance(deps, viewer) == start - 4
    assert ("REFUND", "MODEL", 7) in await ledger(deps, request_id)


async def test_concurrent_requests_never_take_the_balance_below_zero(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    await set_balance(deps, viewer, 10)  # enough for five requests of one image at 2

    async def attempt() -> bool:
        try:
            await create(deps, viewer, image_count=1)
        except InsufficientCredits:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt() for _ in range(12)))
    assert outcomes.count(True) == 5
    assert await balance(deps, viewer) == 0


async def test_me_shows_the_balance_and_the_ledger(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    await submit(deps, viewer, image_count=2)
    query = """{ me { credits ledger(first: 10) { edges { node {
        kind reason amount quantity balanceAfter requestId } } } } }"""
    me = (await data(deps, query, user="alice"))["me"]
    initial = deps.settings.initial_credits
    assert me["credits"] == initial - 2
    kinds = [
        (e["node"]["kind"], e["node"]["amount"], e["node"]["balanceAfter"])
        for e in me["ledger"]["edges"]
    ]
    assert kinds == [("DEBIT", -2, initial - 2), ("GRANT", initial, initial)]


async def test_insufficient_credits_reaches_clients_with_its_code(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    await set_balance(deps, viewer, 0)
    result = await execute(
        deps,
        'mutation { createRequest(input: {prompt: "a cup", imageCount: 1}) { id } }',
        user="alice",
    )
    assert code(result) == "INSUFFICIENT_CREDITS"
    assert result["errors"][0]["extensions"]["required"] == 1


async def test_high_priority_is_reserved_and_sets_the_queue(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    result = await execute(
        deps,
        'mutation { createRequest(input: {prompt: "a cup", priority: HIGH}) { id } }',
        user="alice",
    )
    assert code(result) == "FORBIDDEN"
    admin = dataclasses.replace(viewer, role="admin")
    request_id = await create(deps, admin, priority="high")
    queue = deps.queue
    assert [m.queue for m in queue.sent] == ["high"]  # type: ignore[attr-defined]
    await deliver(deps)
    row = await request_row(deps, request_id)
    assert row.priority == "high"
    assert row.status == Status.IMAGE_COMPLETED
    low = await create(deps, viewer, priority="low")
    assert [m.queue for m in queue.sent] == ["low"]  # type: ignore[attr-defined]
    assert (await request_row(deps, low)).priority == "low"
