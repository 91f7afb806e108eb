"""Signed webhooks against a live `lumi serve`: a real receiver that fails, hangs and then
accepts; every event arrives at least once, in order, signed, with a stable webhook-id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    REDIS,
    Server,
    lumi,
    mariadb_database,
    require,
    start_server,
    stop_process,
    stop_server,
)
from tests.e2e.client import (
    REQUEST_UPDATES,
    collect,
    create_request,
    data_of,
    error_code,
    graphql,
    ws_session,
)
from tests.webhooks.receiver import Receiver, receiver, verified_by_reference, verify

pytestmark = pytest.mark.e2e

FAST_WEBHOOKS = {
    "LUMI_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "LUMI_WEBHOOK_RETRY_SECONDS": "0.2,0.4,0.8,1,1,1,1,1,1,1",
    "LUMI_WEBHOOK_TIMEOUT_SECONDS": "1",
    "LUMI_WEBHOOK_POLL_SECONDS": "0.1",
}

CREATE_WEBHOOK = """mutation C($input: CreateWebhookInput!) {
  createWebhook(input: $input) { id url events secret createdAt } }"""
WEBHOOKS = "{ webhooks { edges { node { id url events secret } } } }"
DELIVERIES = """query D($webhookId: ID, $requestId: ID) {
  webhookDeliveries(webhookId: $webhookId, requestId: $requestId, first: 100) {
    edges { node { id webhookId requestId seq userSeq eventType status attempts
                   lastStatusCode lastError deliveredAt payload } } } }"""
REDELIVER = """mutation R($id: ID!) { redeliverWebhookDelivery(id: $id) { id status attempts } }"""
DELETE = "mutation X($id: ID!) { deleteWebhook(id: $id) }"
ROTATE = "mutation X($id: ID!) { rotateWebhookSecret(id: $id) { id secret } }"
REQUEST_SEQ = "query Q($id: ID!) { request(id: $id) { seq status } }"


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`lumi serve` (embedded, SQLite) allowed to call a receiver on loopback."""
    server = start_server(tmp_path_factory.mktemp("webhooks"), **FAST_WEBHOOKS)
    yield server
    stop_server(server)


def bodies(calls: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(call.body) for call in calls]


def finished(hook: Receiver, request_id: str) -> Callable[[], bool]:
    def check() -> bool:
        return any(
            b["type"] == "request.finished" and b["data"]["requestId"] == request_id
            for b in bodies(hook.accepted())
        )

    return check


async def register(server: Server, user: str, url: str, **extra: Any) -> dict[str, Any]:
    data = await data_of(server, CREATE_WEBHOOK, {"input": {"url": url, **extra}}, user=user)
    return dict(data["createWebhook"])


async def test_every_event_arrives_in_order_signed_after_failures_and_a_timeout(
    hooked: Server,
) -> None:
    user = f"hook-{uuid.uuid4().hex[:6]}"
    with receiver() as hook:
        hook.script = [500, "hang"]  # then 204
        webhook = await register(hooked, user, hook.url)
        assert webhook["secret"].startswith("whsec_")
        assert webhook["events"] == ["REQUEST_UPDATED"]
        created = await create_request(hooked, user, imageCount=1, autoModel=True)
        await hook.until(finished(hook, created["id"]))
        async with ws_session(hooked, user) as session:
            events = await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})

        # Every call is signed with the webhook's secret, checked by an independent verifier.
        assert all(verify(webhook["secret"], c.headers, c.body) for c in hook.calls)
        assert all(verified_by_reference(webhook["secret"], c.headers, c.body) for c in hook.calls)
        # The first event failed (500), timed out, then was accepted: one id throughout.
        first_three = hook.calls[:3]
        assert [c.answer for c in first_three] == [500, "hang", 204]
        assert len({c.headers["webhook-id"] for c in first_three}) == 1
        assert len({c.body for c in first_three}) == 1
        # Each event at least once, in seq order, with the subscription's own fields.
        accepted = [b for b in bodies(hook.accepted()) if b["data"]["requestId"] == created["id"]]
        seqs = [b["data"]["seq"] for b in accepted]
        assert seqs == sorted(seqs)
        assert sorted(set(seqs)) == [e["seq"] for e in events]
        by_seq = {b["data"]["seq"]: b["data"] for b in accepted}
        for event in events:
            sent = by_seq[event["seq"]]
            assert {k: sent[k] for k in event} == event
        assert accepted[-1]["type"] == "request.finished"
        assert accepted[0]["type"] == "request.updated"


async def test_deliveries_are_listed_and_can_be_sent_again(hooked: Server) -> None:
    user = f"hook-{uuid.uuid4().hex[:6]}"
    with receiver() as hook:
        webhook = await register(hooked, user, hook.url, events=["REQUEST_FINISHED"])
        created = await create_request(hooked, user, imageCount=1, autoModel=True)
        await hook.until(finished(hook, created["id"]))
        listed = await data_of(hooked, DELIVERIES, {"webhookId": webhook["id"]}, user=user)
        [delivery] = [e["node"] for e in listed["webhookDeliveries"]["edges"]]
        assert delivery["status"] == "DELIVERED"
        assert delivery["eventType"] == "request.finished"  # only the final event
        assert delivery["webhookId"] == webhook["id"]
        assert delivery["requestId"] == created["id"]
        assert delivery["lastStatusCode"] == 204
        assert json.loads(delivery["payload"])["data"]["status"] == "COMPLETED"
        calls_before = len(hook.calls)

        again = await data_of(hooked, REDELIVER, {"id": delivery["id"]}, user=user)
        assert again["redeliverWebhookDelivery"]["status"] == "PENDING"
        await hook.until(lambda: len(hook.calls) > calls_before)
        assert hook.calls[-1].headers["webhook-id"] == delivery["id"]
        assert hook.calls[-1].body == delivery["payload"].encode()


async def test_a_request_webhook_url_gets_its_events_signed_with_the_default_secret(
    hooked: Server,
) -> None:
    user = f"hook-{uuid.uuid4().hex[:6]}"
    with receiver() as hook:
        created = await create_request(
            hooked, user, imageCount=1, autoModel=True, webhookUrl=hook.url
        )
        secret = (await data_of(hooked, "{ defaultWebhookSecret }", user=user))[
            "defaultWebhookSecret"
        ]
        await hook.until(finished(hook, created["id"]))
        state = (await data_of(hooked, REQUEST_SEQ, {"id": created["id"]}, user=user))["request"]
        seqs = [b["data"]["seq"] for b in bodies(hook.accepted())]
        assert seqs == list(range(1, state["seq"] + 1))
        assert all(verify(secret, c.headers, c.body) for c in hook.calls)
        assert all(verified_by_reference(secret, c.headers, c.body) for c in hook.calls)


async def test_internal_urls_are_refused_and_nothing_is_kept(hooked: Server) -> None:
    user = f"hook-{uuid.uuid4().hex[:6]}"
    for url in ["http://169.254.169.254/latest", "http://10.0.0.1/", "ftp://example.com/"]:
        body = await graphql(hooked, CREATE_WEBHOOK, {"input": {"url": url}}, user=user)
        assert error_code(body) == "BAD_USER_INPUT"
        assert body["errors"][0]["extensions"]["field"] == "url"
    create = await graphql(
        hooked,
        "mutation C($input: CreateRequestInput!) { createRequest(input: $input) { id } }",
        {"input": {"prompt": "a cube", "webhookUrl": "http://[::ffff:10.0.0.1]/"}},
        user=user,
    )
    assert error_code(create) == "BAD_USER_INPUT"
    assert (await data_of(hooked, WEBHOOKS, user=user))["webhooks"]["edges"] == []
    mine = await data_of(hooked, "{ requests { edges { node { id } } } }", user=user)
    assert mine["requests"]["edges"] == []


async def test_another_users_webhook_is_not_found(hooked: Server) -> None:
    owner, other = f"hook-{uuid.uuid4().hex[:6]}", f"hook-{uuid.uuid4().hex[:6]}"
    with receiver() as hook:
        webhook = await register(hooked, owner, hook.url)
    for query in (DELETE, ROTATE, DELIVERIES):
        key = "webhookId" if query is DELIVERIES else "id"
        body = await graphql(hooked, query, {key: webhook["id"]}, user=other)
        assert error_code(body) == "NOT_FOUND", query
    listed = await data_of(hooked, WEBHOOKS, user=other)
    assert listed["webhooks"]["edges"] == []
    # The owner sees it (without its secret), rotates it, and deletes it.
    [node] = [e["node"] for e in (await data_of(hooked, WEBHOOKS, user=owner))["webhooks"]["edges"]]
    assert node["id"] == webhook["id"]
    assert node["secret"] is None
    rotated = await data_of(hooked, ROTATE, {"id": webhook["id"]}, user=owner)
    assert rotated["rotateWebhookSecret"]["secret"] not in (None, webhook["secret"])
    await data_of(hooked, DELETE, {"id": webhook["id"]}, user=owner)
    assert (await data_of(hooked, WEBHOOKS, user=owner))["webhooks"]["edges"] == []


async def test_deliveries_pending_when_the_server_stops_are_sent_by_the_next_one(
    tmp_path: Path,
) -> None:
    user = f"hook-{uuid.uuid4().hex[:6]}"
    env = {**FAST_WEBHOOKS, "LUMI_WEBHOOK_RETRY_SECONDS": ",".join(["0.5"] * 120)}
    with receiver() as hook:
        hook.then = 503  # the receiver is down while the first server runs
        first = start_server(tmp_path, name="first", **env)
        try:
            await register(first, user, hook.url)
            created = await create_request(first, user, imageCount=1, autoModel=True)
            await hook.until(lambda: len(hook.calls) >= 2)

            async with ws_session(first, user) as session:  # until the request ends
                await collect(session, REQUEST_UPDATES, {"id": created["id"], "afterSeq": 0})
            listed = await data_of(first, DELIVERIES, {"requestId": created["id"]}, user=user)
            statuses = {e["node"]["status"] for e in listed["webhookDeliveries"]["edges"]}
            assert statuses == {"PENDING"}
            assert hook.accepted() == []
        finally:
            stop_server(first)
        hook.then = 204  # back up: a new process sends what the outbox holds
        second = start_server(tmp_path, name="second", **env)
        try:
            await hook.until(finished(hook, created["id"]))
            state = await data_of(second, REQUEST_SEQ, {"id": created["id"]}, user=user)
        finally:
            stop_server(second)
    seqs = [b["data"]["seq"] for b in bodies(hook.accepted())]
    assert seqs == list(range(1, state["request"]["seq"] + 1))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two API processes and two `lumi worker` processes (each sends webhooks) on
    MariaDB and Redis, sharing one data directory for files."""
    require("Redis", REDIS)
    data_dir = tmp_path_factory.mktemp("webhook-cluster")
    with mariadb_database(f"lumi_hooks_{os.getpid()}") as url, contextlib.ExitStack() as started:
        env = {
            **FAST_WEBHOOKS,
            "LUMI_DATABASE_URL": url,
            "LUMI_BROKER": "redis",
            "LUMI_BUS": "redis",
            "LUMI_REDIS_NAMESPACE": f"lumi-test-{uuid.uuid4().hex[:8]}",
            "LUMI_AUTO_MIGRATE": "false",
        }
        workers = []
        for name in ("worker1", "worker2"):
            ports = {"LUMI_WORKER_HEALTH_PORT": "0", "LUMI_WORKER_METRICS_PORT": "0"}
            worker = lumi(data_dir, data_dir / f"{name}.log", "worker", **env, **ports)
            started.callback(stop_process, worker)
            workers.append(worker)
        first = start_server(data_dir, name="api1", **env)
        started.callback(stop_server, first)
        second = start_server(data_dir, name="api2", **env)
        started.callback(stop_server, second)
        yield first, second
        assert [w.poll() for w in workers] == [None, None], "a worker exited"


async def test_with_two_apis_and_two_workers_every_event_is_delivered_once(
    cluster: tuple[Server, Server],
) -> None:
    api1, api2 = cluster
    user = f"hook-{uuid.uuid4().hex[:6]}"
    with receiver() as hook:
        # Each answer takes longer than a courier's poll: two couriers would both send
        # a delivery unless one leases it.
        hook.delay_seconds = 0.3
        webhook = await register(api1, user, hook.url)
        created = await asyncio.gather(
            *(
                create_request(api, user, imageCount=1, autoModel=True)
                for api in (api1, api2, api1, api2)
            )
        )
        for request in created:
            await hook.until(finished(hook, request["id"]), timeout=120)
        assert all(verify(webhook["secret"], c.headers, c.body) for c in hook.calls)
        assert all(verified_by_reference(webhook["secret"], c.headers, c.body) for c in hook.calls)
        accepted = bodies(hook.accepted())
        ids = [c.headers["webhook-id"] for c in hook.accepted()]
        assert len(ids) == len(set(ids))  # leased: no two processes sent one delivery
        for request in created:
            state = await data_of(api2, REQUEST_SEQ, {"id": request["id"]}, user=user)
            seqs = [b["data"]["seq"] for b in accepted if b["data"]["requestId"] == request["id"]]
            assert seqs == list(range(1, state["request"]["seq"] + 1))
        user_seqs = sorted(b["data"]["userSeq"] for b in accepted)
        assert user_seqs == list(range(1, len(user_seqs) + 1))  # none lost across requests
