"""2. Subscription capacity: 10,000 concurrent subscriptions on one API process (--quick
1,000), and the resident memory each costs.

Measured: every subscription is a websocket of its own user (users seeded in the
database beforehand, as returning users), graphql-transport-ws, one
`myRequestUpdates` subscription each, opened from 4 client processes with the
`websockets` client's default settings (it offers permessage-deflate; the table says
whether the server took it). The API's VmRSS is read after a warm-up round of 20
subscriptions has come and gone, and again once /metrics counts every subscription
live and 5 s have passed; the difference over the live count is the figure. While they
all sit idle, the API's CPU and MariaDB's SELECT rate are sampled for 10 s.

Floor: the same number of connections from the same clients to the raw relay
(`tests/bench/relay.py`, uvicorn with the same defaults), each following a channel of
its own: what a websocket alone costs in a uvicorn process.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.bench.common import (
    CpuMeter,
    Options,
    Row,
    Tracked,
    backend_pids,
    insert_rows,
    log,
    make_users,
    mariadb_status,
    metric,
    production_env,
    profiled,
    rss_kib,
    start_api,
    start_relay,
    tokens_for,
)
from tests.bench.wsclients import Subscribers, Target

SUBSCRIPTION = "subscription { myRequestUpdates { requestId seq status step progress } }"
WARM_UP = 20
TARGET_KIB = 32.0


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def _settle(live: Callable[[], float], want: float, *, timeout: float, quiet: float = 15) -> bool:
    """Until `live()` reaches `want`, or stops growing for `quiet` s; whether it reached."""
    deadline = time.monotonic() + timeout
    best, moved = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        count = live()
        if count >= want:
            return True
        if count > best:
            best, moved = count, time.monotonic()
        elif time.monotonic() - moved > quiet:
            return False
        time.sleep(0.5)
    return False


def _quiet_database(*, timeout: float, per_second: float = 5.0) -> float:
    """Seconds until MariaDB runs fewer than `per_second` SELECTs a second (or `timeout`)."""
    started = time.monotonic()
    before = mariadb_status("Com_select")["Com_select"]
    while time.monotonic() - started < timeout:
        time.sleep(2)
        now = mariadb_status("Com_select")["Com_select"]
        if (now - before) / 2 < per_second:
            break
        before = now
    return round(time.monotonic() - started, 1)


def measure(
    opts: Options,
    label: str,
    pid: int,
    warm: list[Target],
    targets: list[Target],
    live: Callable[[], float],
    *,
    processes: int,
    open_budget: float,
    compression: str | None,
) -> dict[str, Any]:
    """RSS before and after `targets` connect, with `live()` counting them server-side.
    Connections not started within `open_budget` seconds are skipped (and reported)."""
    with Tracked() as inner:
        warmers = Subscribers(inner, warm, processes=1, compression=compression)
        warmers.wait_opened(120)
        _wait(lambda: live() >= len(warm), 60)
        warmers.stop()
    _wait(lambda: live() == 0, 60)
    time.sleep(2)
    before = rss_kib(pid)
    started = time.monotonic()
    result: dict[str, Any] = {"rss_before_kib": before}
    with Tracked() as inner:
        subs = Subscribers(
            inner,
            targets,
            processes=processes,
            open_concurrency=100,
            compression=compression,
            deadline=time.time() + open_budget,
        )
        opened = subs.wait_opened(open_budget + 300)
        all_live = _settle(live, opened.ok, timeout=120)
        result.update(
            open_seconds=round(time.monotonic() - started, 1),
            opened=opened.ok,
            skipped=opened.skipped,
            failed=opened.failed,
            errors=opened.errors,
            deflate=opened.extensions,
            all_live=all_live,
        )
        time.sleep(5)
        # Live counts a subscription from its start; its first reads may still be queued
        # for a pooled connection: measure once the database has gone quiet.
        result["settle_seconds"] = _quiet_database(timeout=120)
        count = live()
        for _ in range(5):  # a saturated server may not answer /metrics at once
            if not math.isnan(count):
                break
            count = live()
        after = rss_kib(pid)
        meter = CpuMeter({"server": [pid], **backend_pids()})
        selects = mariadb_status("Com_select")["Com_select"]
        with profiled(opts, pid, f"capacity-{label}-idle"):
            meter.start()
            time.sleep(10)
            cpu = meter.stop()
        selects = mariadb_status("Com_select")["Com_select"] - selects
        result.update(
            live=count,
            rss_after_kib=after,
            kib_per_subscription=round((after - before) / count, 2) if count else None,
            idle_cpu_cores=cpu,
            mariadb_selects_per_second=round(selects / cpu["wall_seconds"], 1),
        )
        frames = subs.stop(timeout=120)
    messages = [json.loads(raw) for _, raw in frames]
    ended = [m for m in messages if m.get("type") in ("error", "complete")]
    failed = [m for m in messages if m.get("type") == "error" or "errors" in m.get("payload", {})]
    result["subscriptions_ended"] = len(ended)
    result["error_sample"] = failed[:3]
    log(f"capacity {label}: {result}")
    return result


def run(opts: Options) -> list[Row]:
    n = opts.size(10_000, 1_000)
    processes = opts.size(4, 2)
    open_budget = opts.size(180.0, 60.0)
    # (client compression, connections): the default client first, at full size; then
    # without deflate, smaller, to show deflate's share. A fresh server for each pass, so
    # memory freed by the last pass is not reused.
    passes: list[tuple[str | None, int]] = [("deflate", n), (None, min(n, 1000))]
    gateway: dict[str, dict[str, Any]] = {}
    floor: dict[str, dict[str, Any]] = {}
    with production_env(opts, "capacity") as env:
        log(f"capacity: seeding {n + WARM_UP} users")
        users = make_users(n + WARM_UP, "capacity")
        insert_rows(env["LUMI_DATABASE_URL"], users)
        tokens = tokens_for([u.external_id for u in users])
        for compression, count in passes:
            key = compression or "off"
            with Tracked() as tracked:
                api = start_api(opts, tracked, env, "capacity")

                def target(token: str, api: Any = api) -> Target:
                    return Target(api.ws, token, SUBSCRIPTION)

                log(f"capacity: {count} subscriptions on the gateway, client deflate {key}")
                gateway[key] = measure(
                    opts,
                    f"gateway-deflate-{key}",
                    api.process.pid,
                    [target(t) for t in tokens[n:]],
                    [target(t) for t in tokens[:count]],
                    lambda api=api: metric(api.url, "lumi_active_subscriptions"),
                    processes=processes,
                    open_budget=open_budget,
                    compression=compression,
                )
            with Tracked() as tracked:
                relay, relay_url = start_relay(opts, tracked, "capacity", "lumi-bench-relay:")
                ws = relay_url.replace("http://", "ws://", 1)
                log(f"capacity: {count} connections on the raw relay, client deflate {key}")
                floor[key] = measure(
                    opts,
                    f"relay-deflate-{key}",
                    relay.pid,
                    [Target(f"{ws}/ws/warm{i}") for i in range(WARM_UP)],
                    [Target(f"{ws}/ws/{i}") for i in range(count)],
                    lambda url=relay_url: float(
                        httpx.get(f"{url}/health", timeout=30).json()["connections"]
                    ),
                    processes=processes,
                    open_budget=open_budget,
                    compression=compression,
                )
    notes = {"gateway": gateway, "floor": floor}
    main, plain = gateway["deflate"], gateway["off"]
    per_sub = main["kib_per_subscription"]
    return [
        Row(
            "2 capacity",
            "live subscriptions, 1 API process",
            main["live"],
            "",
            floor=floor["deflate"]["live"],
            floor_label="relay connections",
            target=f"{n:,}",
            met=main["live"] >= n and not main["failed"] and not main["subscriptions_ended"],
            notes=notes,
        ),
        Row(
            "2 capacity",
            f"RSS/subscription, default client (deflate {'on' if main['deflate'] else 'off'})",
            per_sub,
            "KiB",
            floor=floor["deflate"]["kib_per_subscription"],
            floor_label="relay per connection",
            target=f"≤{TARGET_KIB:.0f} KiB",
            met=per_sub is not None and per_sub <= TARGET_KIB,
            notes=notes,
        ),
        Row(
            "2 capacity",
            f"RSS/subscription, client without deflate ({plain['live']:.0f} subs)",
            plain["kib_per_subscription"],
            "KiB",
            floor=floor["off"]["kib_per_subscription"],
            floor_label="relay per connection",
            notes=notes,
        ),
        Row(
            "2 capacity",
            f"API CPU while {main['live']:.0f} subs sit idle",
            main["idle_cpu_cores"]["server"] * 100,
            "% core",
            floor=floor["deflate"]["idle_cpu_cores"]["server"] * 100,
            floor_label="relay",
            notes=notes,
        ),
    ]
