"""The soak: the production shape under live subscriptions and a steady mix, for minutes.

    .venv/bin/python -m tests.bench.soak [--minutes 10] [--rates 50,100] [--subscriptions 1000]
    make soak SOAK_ARGS="--minutes 3"

One `lumi serve` and one `lumi worker` on MariaDB and Redis (broker and bus), offline
providers. For each rate: first the operation mix alone (`--baseline-minutes`, no
subscriptions), then the same mix while `--subscriptions` websockets follow
`myRequestUpdates` (5 per user). The mix, open-loop at a fixed rate: 10% createRequest,
2% cancelRequest, 20% like/unlike, 50% publicModels(first: 20), 18% request(id).

It prints, per minute: the RSS of the API, the worker, MariaDB and Redis, and p50/p99 of
each operation; and at the end: errors (must be 0), events lost, duplicated or out of
order on every socket (each must be 0: every socket of a user gets each of that user's
events once, in order), RSS growth after warm-up (target: within 10%), and each read's
p99 under subscriptions beside its p99 without them (target: within 2x). Everything
measured also goes to var/soak/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.bench.common import (
    ROOT,
    SPAWN,
    Options,
    Tracked,
    backend_pids,
    insert_rows,
    log,
    make_users,
    percentile,
    production_env,
    query,
    raise_nofile,
    rss_kib,
    start_api,
    start_worker,
    tokens_for,
)
from tests.bench.httpload import read_answer
from tests.bench.wsclients import Subscribers, Target

VAR = ROOT / "var" / "soak"
USERS = 200
SOCKETS_PER_USER = 5
PUBLIC_MODELS = 60
READS = ("gallery", "request")
MIX = (  # operation, weight in percent
    ("create", 10),
    ("cancel", 2),
    ("like", 20),
    ("gallery", 50),
    ("request", 18),
)
CREATE = """mutation Create($input: CreateRequestInput!) {
  createRequest(input: $input) { id status } }"""
CANCEL = "mutation Cancel($id: ID!) { cancelRequest(id: $id) { id status } }"
LIKE = "mutation Like($id: ID!) { likeModel(id: $id) { id likeCount likedByMe } }"
UNLIKE = "mutation Unlike($id: ID!) { unlikeModel(id: $id) { id likeCount likedByMe } }"
GALLERY = """query Gallery { publicModels(first: 20) {
  edges { node { id name likeCount favoriteCount likedByMe favoritedByMe
                 owner { displayName } previewUrl } }
  pageInfo { hasNextPage endCursor } } }"""
REQUEST = """query Request($id: ID!) { request(id: $id) {
  id status phase step progress images { id status url } model { id status } } }"""
FOLLOW = "subscription Follow { myRequestUpdates { requestId seq userSeq status } }"
IDLE_SECONDS = 3.0  # a kept-alive connection is reused for this long, under the server's 5
# What a client may be told without it being an error: cancelling a request that has
# finished meanwhile.
EXPECTED_REFUSALS = {("cancel", "CONFLICT")}


# -- the operation mix, in a process of its own ---------------------------------------------


@dataclass
class Outcome:
    op: str
    started: float  # wall clock
    seconds: float
    error: str | None = None  # what went wrong; None when answered as expected
    refused: str | None = None  # an expected refusal's code


@dataclass
class _Client:
    rng: random.Random
    tokens: list[str]
    models: list[str]
    url: str
    created: dict[int, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    liked: set[tuple[int, str]] = field(default_factory=set)

    def pick(self) -> str:
        roll, total = self.rng.uniform(0, 100), 0
        for op, weight in MIX:
            total += weight
            if roll < total:
                return op
        return MIX[-1][0]

    def operation(self, op: str) -> tuple[int | None, str, dict[str, Any]]:
        """(user, document, variables) of one `op`; user None: anonymous."""
        user = self.rng.randrange(len(self.tokens))
        mine = self.created.get(user)
        if op == "create":
            prompt = f"a soak-test teapot {self.rng.randrange(10**9)}"
            variables = {"input": {"prompt": prompt, "imageCount": 2, "autoModel": True}}
            return user, CREATE, variables
        if op == "cancel" and mine:
            return user, CANCEL, {"id": mine[-1]}
        if op == "like":
            model = self.rng.choice(self.models)
            if (user, model) in self.liked:
                self.liked.discard((user, model))
                return user, UNLIKE, {"id": model}
            self.liked.add((user, model))
            return user, LIKE, {"id": model}
        if op == "request" and mine:
            return user, REQUEST, {"id": self.rng.choice(mine[-20:])}
        # A gallery read: half anonymous, half signed in (viewer fields per user).
        return (user if self.rng.random() < 0.5 else None), GALLERY, {}

    async def run_one(self, http: Connections, op: str) -> Outcome:
        user, document, variables = self.operation(op)
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user is not None else {}
        body = json.dumps({"query": document, "variables": variables}).encode()
        started_wall, started = time.time(), time.perf_counter()
        try:
            status, answer = await http.post(body, headers)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
            return Outcome(op, started_wall, time.perf_counter() - started, error=error)
        outcome = Outcome(op, started_wall, time.perf_counter() - started)
        if status != 200:
            outcome.error = f"HTTP {status}: {answer[:200]!r}"
            return outcome
        result = json.loads(answer)
        if result.get("errors"):
            code = str((result["errors"][0].get("extensions") or {}).get("code"))
            if (op, code) in EXPECTED_REFUSALS:
                outcome.refused = code
            else:
                outcome.error = f"{code}: {result['errors'][0].get('message', '')[:160]}"
        elif op == "create" and user is not None:
            self.created[user].append(result["data"]["createRequest"]["id"])
        return outcome


class Connections:
    """Keep-alive HTTP/1.1 connections to the GraphQL endpoint, one request at a time
    each, opened as needed. Raw asyncio streams: httpx's pool spends CPU quadratic in
    the requests waiting for it, so a client behind a slow moment burned a core and
    starved the server it measured."""

    def __init__(self, url: str) -> None:
        address = url.split("://", 1)[1]
        hostport, _, path = address.partition("/")
        self.host, port = hostport.split(":")
        self.port, self.path = int(port), "/" + path
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        reader, writer = await self._take()
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            status, answer = await read_answer(reader)
        except BaseException:
            writer.close()
            raise
        self.idle.append((reader, writer, time.monotonic()))
        return status, answer

    async def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An idle connection the server has not closed yet (uvicorn closes one idle for
        5 s: a request on it would fail on the client's side), else a new one."""
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < IDLE_SECONDS:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()


async def _mix(url: str, tokens: list[str], models: list[str], rate: float, seconds: float) -> Any:
    client = _Client(random.Random(11), tokens, models, url)
    outcomes: list[Outcome] = []
    tasks: set[asyncio.Task[None]] = set()
    http = Connections(url)

    async def one(op: str) -> None:
        outcomes.append(await client.run_one(http, op))

    started = time.perf_counter()
    sent = 0
    while (now := time.perf_counter() - started) < seconds:
        due = int(now * rate) + 1
        while sent < due:  # open loop: a slow answer never delays the next request
            task = asyncio.create_task(one(client.pick()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, sent / rate - (time.perf_counter() - started)))
    if tasks:
        await asyncio.wait(tasks, timeout=120)
    http.close()
    created = [rid for ids in client.created.values() for rid in ids]
    return [vars(o) for o in outcomes], created


def _mix_child(results: Any, *args: Any) -> None:
    raise_nofile()
    results.put(asyncio.run(_mix(*args)))


def run_mix(
    url: str, tokens: list[str], models: list[str], rate: float, seconds: float
) -> tuple[list[Outcome], list[str]]:
    results = SPAWN.Queue()
    child = SPAWN.Process(target=_mix_child, args=(results, url, tokens, models, rate, seconds))
    child.start()
    try:
        raw, created = results.get(timeout=seconds + 300)
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
    return [Outcome(**o) for o in raw], created


# -- memory, per minute ---------------------------------------------------------------------


class RssSampler:
    """The RSS of each named process every `every` seconds, in a thread."""

    def __init__(self, pids: dict[str, list[int]], every: float = 5.0) -> None:
        self.pids, self.every = pids, every
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[str, float]:
        return {name: sum(rss_kib(p) for p in group) / 1024 for name, group in self.pids.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._sample()))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self._sample()))


def by_minute(started: float, outcomes: list[Outcome], rss: RssSampler) -> list[dict[str, Any]]:
    """Per minute since `started`: the last RSS sample of each process, each operation's
    p50 and p99 (ms) and the errors."""
    minutes: dict[int, dict[str, Any]] = collections.defaultdict(
        lambda: {"ops": collections.defaultdict(list), "errors": 0}
    )
    for outcome in outcomes:
        minute = minutes[int((outcome.started - started) // 60)]
        minute["ops"][outcome.op].append(outcome.seconds)
        minute["errors"] += outcome.error is not None
    for at, sample in rss.samples:
        minutes[int((at - started) // 60)]["rss_mib"] = sample
    rows = []
    for index in sorted(m for m in minutes if m >= 0):
        minute = minutes[index]
        ops = {
            op: {
                "n": len(times),
                "p50_ms": round(percentile(times, 50) * 1000, 1),
                "p99_ms": round(percentile(times, 99) * 1000, 1),
            }
            for op, times in sorted(minute["ops"].items())
        }
        rows.append(
            {
                "minute": index + 1,
                "rss_mib": minute.get("rss_mib"),
                "ops": ops,
                "errors": minute["errors"],
            }
        )
    return rows


# -- event delivery -------------------------------------------------------------------------


def delivery(
    frames: dict[int, list[tuple[float, str]]], expected: dict[int, list[int]]
) -> dict[str, Any]:
    """Each socket's `userSeq`s against its user's events in the table: lost (in the
    table, never received), duplicated, out of order; and other messages (errors)."""
    lost = duplicated = disordered = delivered = 0
    other: list[str] = []
    for socket in range(USERS * SOCKETS_PER_USER):
        seqs: list[int] = []
        for _, raw in frames.get(socket, []):
            message = json.loads(raw)
            if message.get("type") != "next" or message["payload"].get("errors"):
                other.append(raw[:200])
                continue
            seqs.append(int(message["payload"]["data"]["myRequestUpdates"]["userSeq"]))
        delivered += len(seqs)
        duplicated += len(seqs) - len(set(seqs))
        disordered += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
        lost += len(set(expected.get(socket // SOCKETS_PER_USER, [])) - set(seqs))
    return {
        "delivered": delivered,
        "expected": sum(len(v) for v in expected.values()) * SOCKETS_PER_USER,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": disordered,
        "other_messages": len(other),
        "other_sample": other[:3],
    }


def expected_events(url: str, user_ids: list[str]) -> dict[int, list[int]]:
    rows = query(url, "SELECT user_id, user_seq FROM request_events ORDER BY user_id, user_seq")
    index = {user_id: i for i, user_id in enumerate(user_ids)}
    expected: dict[int, list[int]] = collections.defaultdict(list)
    for user_id, user_seq in rows:
        if user_id in index:
            expected[index[user_id]].append(int(user_seq))
    return expected


def wait_terminal(url: str, timeout: float) -> int:
    """Waits until no request is still running; how many still are at the end."""
    deadline = time.monotonic() + timeout
    running = -1
    while time.monotonic() < deadline:
        resting = "('COMPLETED','FAILED','CANCELLED','IMAGE_COMPLETED')"
        sql = f"SELECT COUNT(*) FROM generation_requests WHERE status NOT IN {resting}"  # noqa: S608
        running = int(query(url, sql)[0][0])
        if running == 0:
            return 0
        time.sleep(1)
    return running


# -- one run --------------------------------------------------------------------------------


def seed(url: str) -> tuple[list[Any], list[str]]:
    """The users who act and subscribe, and public models to read and like."""
    from app.tables import Model, utcnow

    users = make_users(USERS, "soak")
    owners = make_users(10, "soak-owner")
    now = utcnow()
    models = [
        Model(
            owner_id=owners[i % len(owners)].id,
            name=f"Soak model {i}",
            file_key=f"models/soak/{i}.glb",
            preview_key=f"models/soak/{i}-preview.png",
            file_size=100_000,
            provider="local",
            visibility="PUBLIC",
            published_at=now - timedelta(minutes=i + 1),
        )
        for i in range(PUBLIC_MODELS)
    ]
    insert_rows(url, [*users, *owners, *models])
    return users, [model.id for model in models]


def phase(
    name: str,
    url: str,
    tokens: list[str],
    models: list[str],
    rate: float,
    minutes: float,
    pids: dict[str, list[int]],
) -> dict[str, Any]:
    log(f"soak: {name}: {rate:g} operations/s for {minutes:g} min")
    started = time.time()
    with RssSampler(pids) as rss:
        outcomes, created = run_mix(url, tokens, models, rate, minutes * 60)
    errors = [o.error for o in outcomes if o.error]
    rows = by_minute(started, outcomes, rss)
    for row in rows:
        log(f"  {name} minute {row['minute']}: " + describe(row))
    return {
        "name": name,
        "rate": rate,
        "operations": len(outcomes),
        "errors": len(errors),
        "error_sample": errors[:5],
        "refused_as_expected": sum(1 for o in outcomes if o.refused),
        "created": len(created),
        "minutes": rows,
        "p99_ms": {
            op: round(percentile([o.seconds for o in outcomes if o.op == op], 99) * 1000, 1)
            for op, _ in MIX
        },
    }


def describe(row: dict[str, Any]) -> str:
    rss = row.get("rss_mib") or {}
    memory = " ".join(f"{name} {mib:.0f}" for name, mib in rss.items())
    ops = " ".join(f"{op} {v['p50_ms']:g}/{v['p99_ms']:g}" for op, v in row["ops"].items())
    return f"RSS MiB [{memory}]  p50/p99 ms [{ops}]  errors {row['errors']}"


def growth(rows: list[dict[str, Any]], name: str, warmup_minutes: int) -> float | None:
    """RSS growth of `name` from the end of the warm-up to the last minute, in percent."""
    values = [r["rss_mib"][name] for r in rows if r.get("rss_mib") and r["minute"] > warmup_minutes]
    if len(values) < 2 or not values[0]:
        return None
    return round((values[-1] - values[0]) / values[0] * 100, 1)


def run_rate(opts: Options, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    extra = {
        "LUMI_RATE_LIMIT_USER_PER_MINUTE": "0",
        "LUMI_RATE_LIMIT_IP_PER_MINUTE": "0",
        "LUMI_LOCAL_LATENCY_SECONDS": "0.3",
        "LUMI_LOCAL_MODEL_LATENCY_SECONDS": "2",
        "LUMI_IMAGE_SIZE": "256",
        "LUMI_MAX_SUBSCRIPTIONS_PER_USER": str(SOCKETS_PER_USER * 2),
    }
    name = f"soak{int(rate)}"
    with Tracked() as tracked, production_env(opts, name, **extra) as env:
        url = env["LUMI_DATABASE_URL"]
        users, models = seed(url)
        tokens = tokens_for([user.external_id for user in users])
        api = start_api(opts, tracked, env, name)
        worker = start_worker(opts, tracked, env, name)
        pids = {"api": [api.process.pid], "worker": [worker.pid], **backend_pids()}
        result: dict[str, Any] = {"rate": rate}
        if args.baseline_minutes > 0:
            result["baseline"] = phase(
                "no subscriptions", api.graphql, tokens, models, rate, args.baseline_minutes, pids
            )
            wait_terminal(url, 120)
        follow = [
            Target(api.ws, token=tokens[i // SOCKETS_PER_USER], query=FOLLOW)
            for i in range(len(users) * SOCKETS_PER_USER)
        ][: args.subscriptions]
        subs = Subscribers(tracked, follow, processes=2, compression=None)
        opened = subs.wait_opened(300)
        log(f"soak: {opened.ok} subscriptions open, {opened.failed} failed")
        seq_floor = expected_events(url, [u.id for u in users])
        soak = phase("subscriptions", api.graphql, tokens, models, rate, args.minutes, pids)
        still_running = wait_terminal(url, 180)
        time.sleep(5)  # the last events reach every socket
        frames = subs.stop_by_target(timeout=300)
        expected = expected_events(url, [u.id for u in users])
        expected = {
            user: [s for s in seqs if s not in set(seq_floor.get(user, []))]
            for user, seqs in expected.items()
        }
        soak["delivery"] = delivery(frames, expected)
        soak["opened"] = {"ok": opened.ok, "failed": opened.failed}
        soak["still_running_at_end"] = still_running
        soak["rss_growth_percent"] = {
            proc: growth(soak["minutes"], proc, args.warmup_minutes) for proc in pids
        }
        result["soak"] = soak
        return result


def summary(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        soak = result["soak"]
        d = soak["delivery"]
        lines.append(f"rate {result['rate']:g} operations/s, {soak['opened']['ok']} subscriptions")
        lines.append(
            f"  errors {soak['errors']} of {soak['operations']} operations "
            f"(target 0; {soak['refused_as_expected']} expected refusals)"
        )
        lines.append(
            f"  events: {d['delivered']} delivered of {d['expected']} expected; lost {d['lost']}, "
            f"duplicated {d['duplicated']}, out of order {d['out_of_order']}, "
            f"other messages {d['other_messages']} (targets 0)"
        )
        growth_text = ", ".join(
            f"{name} {value:+g}%"
            for name, value in soak["rss_growth_percent"].items()
            if value is not None
        )
        lines.append(f"  RSS after warm-up: {growth_text} (target: within 10%)")
        baseline = result.get("baseline")
        if baseline:
            for op in READS:
                base, under = baseline["p99_ms"][op], soak["p99_ms"][op]
                ratio = under / base if base else float("nan")
                lines.append(
                    f"  {op} p99: {under:g} ms under subscriptions, {base:g} ms without "
                    f"({ratio:.2f}x; target <= 2x)"
                )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--baseline-minutes", type=float, default=2)
    parser.add_argument("--warmup-minutes", type=int, default=2)
    parser.add_argument("--rates", default="50,100")
    parser.add_argument("--subscriptions", type=int, default=USERS * SOCKETS_PER_USER)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--out", type=Path, default=VAR / "results.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    raise_nofile()
    opts = Options(log_level=args.log_level, work_dir=VAR)
    results = [run_rate(opts, args, float(rate)) for rate in args.rates.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(summary(results), flush=True)
    failed = any(
        r["soak"]["errors"]
        or any(r["soak"]["delivery"][k] for k in ("lost", "duplicated", "out_of_order"))
        for r in results
    )
    return 1 if failed else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so a `kill` stops the processes the soak started, as Ctrl-C does


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
