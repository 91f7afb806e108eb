"""The outbox: each event becomes one delivery per webhook, once, however many couriers
feed it at the same moment; the retry schedule ends in FAILED. SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update
from sqlmodel import col

from app.deps import Deps
from app.errors import BadUserInput
from app.metrics import API_REGISTRY
from app.requests import service as requests
from app.tables import WebhookAccount, WebhookDelivery, WebhookEndpoint, utcnow
from app.users import repository as users
from app.webhooks import service
from app.webhooks.ssrf import UrlGuard
from tests.webhooks.receiver import receiver
from tests.workers.test_pipeline import a_viewer
from workers import webhooks
from workers.webhooks import feed

NEW = requests.NewRequest(prompt="a chess knight", image_count=1)


async def test_couriers_feeding_one_user_at_once_put_each_event_in_the_outbox_once(
    deps: Deps,
) -> None:
    viewer = await a_viewer(deps)
    async with deps.db.write() as session:
        await service.create_endpoint(
            session,
            viewer.id,
            "https://hooks.example/",
            [service.WebhookEvent.REQUEST_UPDATED],
            None,
        )
    for _ in range(3):
        async with deps.unit() as unit:
            await requests.create_request(unit, viewer, NEW)  # type: ignore[arg-type]

    await asyncio.gather(*(feed(deps) for _ in range(5)))

    async with deps.db.read() as session:
        seqs = list(
            (
                await session.execute(
                    select(col(WebhookDelivery.user_seq)).order_by(col(WebhookDelivery.user_seq))
                )
            ).scalars()
        )
        cursor = (
            await session.execute(
                select(col(WebhookAccount.cursor)).where(col(WebhookAccount.user_id) == viewer.id)
            )
        ).scalar_one()
        last = (await users.latest_event_seqs(session, [viewer.id]))[viewer.id]
    assert seqs == list(range(1, last + 1))  # each event once
    assert cursor == last


async def test_a_second_courier_waits_for_the_first_and_adds_nothing(deps: Deps) -> None:
    """The first courier's transaction holds the user's cursor until it commits; the
    second then finds the cursor moved. (Given a second to get going, the second courier
    would, without that lock, read the old cursor and write every delivery again.)"""
    viewer = await a_viewer(deps)
    await register(deps, viewer.id)
    async with deps.unit() as unit:
        await requests.create_request(unit, viewer, NEW)  # type: ignore[arg-type]

    async def second() -> int:
        async with deps.db.write() as session:
            return await service.dispatch(session, viewer.id, 100)

    async with deps.db.write() as session:
        assert await service.dispatch(session, viewer.id, 100) == 1
        racing = asyncio.create_task(second())
        await asyncio.wait({racing}, timeout=1.0)  # how long it may run ahead: not a check
    assert await racing == 0
    assert await deliveries_of(deps) == [1]


async def test_events_before_a_webhook_was_registered_are_not_sent_to_it(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    first = await register(deps, viewer.id)
    async with deps.unit() as unit:
        await requests.create_request(unit, viewer, NEW)  # type: ignore[arg-type]
    second = await register(deps, viewer.id)
    async with deps.unit() as unit:
        await requests.create_request(unit, viewer, NEW)  # type: ignore[arg-type]
    await feed(deps)
    assert await deliveries_of(deps, first) == [1, 2]
    assert await deliveries_of(deps, second) == [2]


async def register(deps: Deps, user_id: str) -> str:
    async with deps.db.write() as session:
        endpoint = await service.create_endpoint(
            session, user_id, "https://hooks.example/", [service.WebhookEvent.REQUEST_UPDATED], None
        )
    return endpoint.id


async def deliveries_of(deps: Deps, endpoint_id: str | None = None) -> list[int]:
    query = select(col(WebhookDelivery.user_seq)).order_by(col(WebhookDelivery.user_seq))
    if endpoint_id is not None:
        query = query.where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    async with deps.db.read() as session:
        return list((await session.execute(query)).scalars())


def test_a_delivery_fails_for_good_when_the_schedule_is_spent() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    delays = [5.0, 300.0]
    first = service.after_attempt(1, False, 500, "HTTP 500", delays, now)
    assert "status" not in first  # still PENDING
    assert now + timedelta(seconds=4.5) <= first["next_attempt_at"] <= now + timedelta(seconds=5.5)  # type: ignore[operator]
    second = service.after_attempt(2, False, None, "timeout", delays, now)
    assert second["next_attempt_at"] >= now + timedelta(seconds=270)  # type: ignore[operator]
    third = service.after_attempt(3, False, 500, "HTTP 500", delays, now)
    assert third["status"] == "FAILED"
    assert service.after_attempt(3, True, 204, None, delays, now)["status"] == "DELIVERED"


async def test_a_webhook_keeps_a_secret_of_its_owners_choosing(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    mine = "whsec_" + base64.b64encode(bytes(range(64))).decode()  # the longest accepted
    async with deps.db.write() as session:
        endpoint = await service.create_endpoint(
            session,
            viewer.id,
            "https://hooks.example/",
            [service.WebhookEvent.REQUEST_FINISHED],
            mine,
        )
    async with deps.db.read() as session:
        stored = await session.get(WebhookEndpoint, endpoint.id)
    assert stored is not None
    assert stored.secret == mine
    for bad in ("plain", "whsec_" + base64.b64encode(b"short").decode(), "whsec_!!!"):
        async with deps.db.write() as session:
            with pytest.raises(BadUserInput):
                await service.create_endpoint(
                    session,
                    viewer.id,
                    "https://hooks.example/",
                    [service.WebhookEvent.REQUEST_FINISHED],
                    bad,
                )


async def test_finished_deliveries_past_retention_are_deleted_and_no_others(
    deps: Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = await a_viewer(deps)
    await register(deps, viewer.id)
    for _ in range(5):  # an event each
        async with deps.unit() as unit:
            await requests.create_request(unit, viewer, NEW)  # type: ignore[arg-type]
    await feed(deps)
    seqs = await deliveries_of(deps)
    assert len(seqs) == 5
    old = utcnow() - timedelta(days=deps.settings.webhook_retention_days, minutes=1)
    recent = utcnow() - timedelta(days=deps.settings.webhook_retention_days, minutes=-1)
    states = {  # user_seq: (status, last changed)
        seqs[0]: ("DELIVERED", old),
        seqs[1]: ("FAILED", old),
        seqs[2]: ("PENDING", old),  # a retry still owed, however old
        seqs[3]: ("DELIVERED", recent),
        seqs[4]: ("FAILED", recent),
    }
    async with deps.db.write() as session:
        for seq, (status, changed) in states.items():
            await session.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.user_seq) == seq)
                .values(status=status, updated_at=changed)
            )
    monkeypatch.setattr(webhooks, "PRUNE_BATCH", 1)  # a delivery per transaction
    monkeypatch.setattr(webhooks, "PRUNE_BATCHES", 1)  # and one transaction per round

    assert await webhooks.prune(deps) == (1, True)  # more may be left: the next round
    assert await webhooks.prune(deps) == (1, True)
    assert await webhooks.prune(deps) == (0, False)
    assert await deliveries_of(deps) == seqs[2:]
    kept = dataclasses.replace(
        deps, settings=deps.settings.model_copy(update={"webhook_retention_days": 0})
    )
    async with deps.db.write() as session:
        await session.execute(update(WebhookDelivery).values(status="DELIVERED", updated_at=old))
    assert await webhooks.prune(kept) == (0, False)  # 0 keeps them for ever
    assert await deliveries_of(deps) == seqs[2:]


def attempts(result: str) -> float:
    return API_REGISTRY.get_sample_value("lumi_webhook_attempts_total", {"result": result}) or 0


async def test_each_call_is_counted_by_its_result_and_a_delivery_by_its_lag(deps: Deps) -> None:
    viewer = await a_viewer(deps)
    before = {r: attempts(r) for r in ("delivered", "retry", "failed")}
    lags = API_REGISTRY.get_sample_value("lumi_webhook_delivery_lag_seconds_count") or 0
    guard = UrlGuard(allowed_networks=["127.0.0.0/8"])
    with receiver() as hook:
        async with deps.db.write() as session:
            endpoint = await service.create_endpoint(
                session, viewer.id, hook.url, [service.WebhookEvent.REQUEST_FINISHED], None
            )
        async with deps.unit() as unit:
            created = await requests.create_request(unit, viewer, NEW)  # type: ignore[arg-type]
            await requests.cancel_request(unit, viewer, created.id)  # type: ignore[arg-type]
        await feed(deps)
        [delivery_id] = [d.id for d in await outbox(deps, endpoint.id)]
        hook.script = [500, 500]
        async with httpx.AsyncClient() as client:
            assert await webhooks.send_due(deps, guard, client) == 1  # 500: tried again later
            await set_delivery(deps, delivery_id, attempts=99, next_attempt_at=utcnow())
            assert await webhooks.send_due(deps, guard, client) == 1  # 500, schedule spent
            async with deps.db.write() as session:
                await service.redeliver(session, viewer.id, delivery_id)
            assert await webhooks.send_due(deps, guard, client) == 1  # 204
    after = {r: attempts(r) - before[r] for r in before}
    assert after == {"delivered": 1, "retry": 1, "failed": 1}
    assert API_REGISTRY.get_sample_value("lumi_webhook_delivery_lag_seconds_count") == lags + 1


async def outbox(deps: Deps, endpoint_id: str) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    async with deps.db.read() as session:
        return list((await session.execute(query)).scalars())


async def set_delivery(deps: Deps, delivery_id: str, **values: object) -> None:
    async with deps.db.write() as session:
        await session.execute(
            update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id).values(**values)
        )
