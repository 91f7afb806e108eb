"""What every benchmark shares: production backends made for one run and removed after it,
real `lumi serve` / `lumi worker` processes, seeding, process figures, percentiles, result
rows and an optional py-spy profile of a process under load.

Processes are started through the test helpers of `tests/conftest.py` (`lumi`,
`start_server`, `mariadb_database`), so a benchmark runs the gateway exactly as the
end-to-end tests and users do. Everything a benchmark starts is stopped, its database
dropped and its Redis keys deleted, also when it fails.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import multiprocessing
import os
import re
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from tests.conftest import (
    MARIADB,
    REDIS,
    ROOT,
    Server,
    free_port,
    lumi,
    mariadb_admin,
    mariadb_database,
    reachable,
    start_server,
    stop_process,
    stop_server,
)

VAR = ROOT / "var" / "bench"
REDIS_URL = f"redis://{REDIS[0]}:{REDIS[1]}/0"
SPAWN = multiprocessing.get_context("spawn")

# The settings the test helpers speed up (tests.conftest.FAST), set back to what a
# production deployment runs with; benchmarks change only what they name.
PRODUCTION = {
    "LUMI_SUBSCRIPTION_RECHECK_SECONDS": str(
        Settings.model_fields["subscription_recheck_seconds"].default
    ),
    "LUMI_MODEL_POLL_INTERVAL_SECONDS": "1",
    "LUMI_LOCAL_LATENCY_SECONDS": "0",
    "LUMI_LOCAL_MODEL_LATENCY_SECONDS": "0",
    "LUMI_IMAGE_SIZE": "512",
}


# -- options and results ----------------------------------------------------------------


@dataclass
class Options:
    quick: bool = False
    log_level: str = "info"
    work_dir: Path = VAR
    py_spy: str | None = None  # path of a py-spy binary: profile the process under load
    keep_logs: bool = True

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


@dataclass
class Row:
    """One line of the final table. `ratio` is value / floor."""

    benchmark: str
    figure: str
    value: float | None
    unit: str
    floor: float | None = None
    floor_label: str = ""
    target: str = "-"
    met: bool | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.floor:
            return None
        return self.value / self.floor

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "floor": self.floor,
            "floor_label": self.floor_label,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
            "notes": self.notes,
        }


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    magnitude = abs(value)
    text = (
        f"{value:.0f}"
        if magnitude >= 100
        else f"{value:.1f}"
        if magnitude >= 10
        else f"{value:.2f}"
    )
    return f"{text} {unit}".strip()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes ----------------------------------------------------------------------------


def raise_nofile() -> int:
    """Lifts this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (children not included)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def pids_named(*names: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds used by named processes between `start()` and `stop()`, with the wall
    time: evidence of where a run's CPU went (the gateway, MariaDB, Redis, clients)."""

    def __init__(self, pids: dict[str, Iterable[int]]) -> None:
        self.pids = {name: list(group) for name, group in pids.items()}
        self.started: dict[str, float] = {}
        self.wall = 0.0
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {
            name: sum(c for c in (cpu_seconds(p) for p in group) if not math.isnan(c))
            for name, group in self.pids.items()
        }

    def start(self) -> CpuMeter:
        self.started, self.wall = self._now(), time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        now, wall = self._now(), time.monotonic() - self.wall
        self.used = {name: round((now[name] - self.started[name]) / wall, 3) for name in now}
        self.used["wall_seconds"] = round(wall, 2)
        return self.used


def backend_pids() -> dict[str, list[int]]:
    return {"mariadb": pids_named("mariadbd", "mysqld"), "redis": pids_named("redis-server")}


class Tracked:
    """Every child a benchmark starts, stopped in reverse order however it ends."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> Tracked:
        self.stack.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.__exit__(*exc)  # type: ignore[arg-type]

    def popen(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.stack.callback(stop_process_quietly, process)
        return process

    def server(self, server: Server) -> Server:
        self.stack.callback(stop_server, server)
        return server

    def child(self, process: BaseProcess) -> BaseProcess:
        self.stack.callback(stop_child, process)
        return process

    def callback(self, function: Callable[..., Any], *args: Any) -> None:
        self.stack.callback(function, *args)


def stop_process_quietly(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        stop_process(process)


def stop_child(process: BaseProcess, timeout: float = 10) -> None:
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join(5)
    if process.is_alive():
        process.kill()
        process.join()


# -- production backends ------------------------------------------------------------------


def check_services() -> None:
    for name, address in (("MariaDB", MARIADB), ("Redis", REDIS)):
        if not reachable(address):
            raise RuntimeError(f"{name} is not reachable at {address[0]}:{address[1]}")


@contextlib.contextmanager
def production_env(opts: Options, name: str, **extra: str) -> Iterator[dict[str, str]]:
    """A migrated MariaDB database and a Redis namespace of this run's own, and the
    LUMI_* settings that point a process at them; both are removed afterwards."""
    check_services()
    tag = uuid.uuid4().hex[:6]
    namespace = f"lumi-bench-{name}-{tag}"
    with mariadb_database(f"lumi_bench_{name}_{os.getpid()}_{tag}") as url:
        env = {
            **PRODUCTION,
            "LUMI_DATABASE_URL": url,
            "LUMI_BROKER": "redis",
            "LUMI_BUS": "redis",
            "LUMI_REDIS_URL": REDIS_URL,
            "LUMI_REDIS_NAMESPACE": namespace,
            "LUMI_AUTO_MIGRATE": "false",
            "LUMI_WORKER_METRICS_PORT": "0",
            "LUMI_LOG_LEVEL": opts.log_level,
            "LUMI_INITIAL_CREDITS": "1000000",
            **extra,
        }
        try:
            yield env
        finally:
            delete_namespace(namespace)


def delete_namespace(namespace: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


def settings_from(env: dict[str, str]) -> Settings:
    """The Settings a process started with `env` reads (no .env file)."""
    values = {k.removeprefix("LUMI_").lower(): v for k, v in env.items() if k.startswith("LUMI_")}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def data_dir(opts: Options, name: str) -> Path:
    path = opts.work_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_api(opts: Options, tracked: Tracked, env: dict[str, str], name: str) -> Server:
    """`lumi serve` (uvicorn, one process) against the run's backends."""
    server = start_server(data_dir(opts, name), name="api", log_level=opts.log_level, **env)
    return tracked.server(server)


def start_worker(
    opts: Options, tracked: Tracked, env: dict[str, str], name: str, label: str = "worker"
) -> subprocess.Popen[bytes]:
    directory = data_dir(opts, name)
    return tracked.popen(lumi(directory, directory / f"{label}.log", "worker", **env))


def start_module(
    tracked: Tracked,
    module: str,
    *args: str,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m module args...` from the project root; output to `log_path`."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LUMI_")},
        **(env or {}),
    }
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return tracked.popen(process)


def wait_http(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer: {log_path.read_text()[-2000:]}")


def metric(server_url: str, name: str) -> float:
    """One unlabelled sample of the API's /metrics (NaN when absent or unanswered)."""
    try:
        text = httpx.get(f"{server_url}/metrics", timeout=60).text
    except httpx.HTTPError:
        return math.nan
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return math.nan


def mariadb_status(*names: str) -> dict[str, int]:
    with mariadb_admin() as admin, admin.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS")
        rows = dict(cursor.fetchall())
    return {name: int(rows.get(name, 0)) for name in names}


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """A read on the run's database through a short pymysql connection."""
    database = url.rsplit("/", 1)[1].split("?")[0]
    with mariadb_admin(database) as admin, admin.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


# -- seeding ------------------------------------------------------------------------------


def sync_url(url: str) -> str:
    return url.replace("+aiomysql", "+pymysql", 1)


def insert_rows(url: str, rows: Sequence[Any]) -> None:
    """Bulk-inserts SQLModel rows (in the order their tables are first met)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(sync_url(url))
    by_table: dict[Any, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        by_table[type(row).__table__].append(row.model_dump())  # type: ignore[attr-defined]
    try:
        with engine.begin() as connection:
            for table, values in by_table.items():
                for start in range(0, len(values), 1000):
                    connection.execute(table.insert(), values[start : start + 1000])
    finally:
        engine.dispose()


def make_users(count: int, prefix: str, credits: int = 1_000_000) -> list[Any]:
    from app.tables import User

    return [
        User(external_id=f"{prefix}-{i}", display_name=f"{prefix} {i}", credits=credits)
        for i in range(count)
    ]


def tokens_for(subjects: Sequence[str], ttl_seconds: int = 3 * 3600) -> list[str]:
    """HS256 tokens the gateway accepts (the development secret, issuer and audience)."""
    from app.auth import TokenVerifier

    verifier = TokenVerifier.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    return [verifier.mint(subject, ttl_seconds=ttl_seconds) for subject in subjects]


async def create_requests(
    env: dict[str, str],
    users: Sequence[Any],
    count: int,
    *,
    image_count: int,
    auto_model: bool = False,
    optimize_prompt: bool = True,
    concurrency: int = 8,
) -> list[str]:
    """`count` requests through the requests service, as `createRequest` makes them
    (validated, paid for, the first stage message sent to the Redis broker after
    commit), spread over `users`; their ids."""
    from app.bus import RedisBus
    from app.deps import build_deps
    from app.queue import DramatiqQueue, build_broker
    from app.requests import service
    from app.users.service import to_viewer

    settings = settings_from(env)
    broker = build_broker(settings)
    deps = build_deps(
        settings,
        bus=RedisBus(settings.redis_url, prefix=settings.redis_namespace),
        queue=DramatiqQueue(broker),
    )
    policy = service.Policy.from_settings(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        new = service.NewRequest(
            prompt=f"benchmark object number {i}",
            image_count=image_count,
            optimize_prompt=optimize_prompt,
            auto_model=auto_model,
            image_size=settings.image_size,
        )
        async with gate, deps.unit() as unit:
            row = await service.create_request(unit, to_viewer(users[i % len(users)]), new, policy)
        return str(row.id)

    try:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        await deps.bus.close()
        await deps.aclose()
        broker.close()


async def select_images(
    env: dict[str, str], choices: Sequence[tuple[Any, str, str]], *, concurrency: int = 16
) -> None:
    """`selectImage` through the requests service for each (user, request id, image id)."""
    from app.bus import RedisBus
    from app.deps import build_deps
    from app.queue import DramatiqQueue, build_broker
    from app.requests import service
    from app.users.service import to_viewer

    settings = settings_from(env)
    broker = build_broker(settings)
    deps = build_deps(
        settings,
        bus=RedisBus(settings.redis_url, prefix=settings.redis_namespace),
        queue=DramatiqQueue(broker),
    )
    policy = service.Policy.from_settings(settings)
    gate = asyncio.Semaphore(concurrency)

    async def one(user: Any, request_id: str, image_id: str) -> None:
        async with gate, deps.unit() as unit:
            await service.select_image(unit, to_viewer(user), request_id, image_id, policy)

    try:
        await asyncio.gather(*(one(*choice) for choice in choices))
    finally:
        await deps.bus.close()
        await deps.aclose()
        broker.close()


# -- profiles -----------------------------------------------------------------------------


@contextlib.contextmanager
def profiled(opts: Options, pid: int, label: str) -> Iterator[Path | None]:
    """Samples `pid` with py-spy while the block runs (when --py-spy is given) and writes
    a summary of where its CPU went next to the raw stacks."""
    if not opts.py_spy:
        yield None
        return
    raw = opts.work_dir / f"profile-{label}.txt"
    command = [opts.py_spy, "record", "--pid", str(pid), "--format", "raw"]
    command += ["--rate", "50", "--nonblocking", "-o", str(raw)]
    with (opts.work_dir / f"profile-{label}.log").open("wb") as output:
        spy = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield raw
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        if raw.exists():
            summary = summarize_profile(raw)
            (opts.work_dir / f"profile-{label}.summary.txt").write_text(summary)


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def summarize_profile(raw: Path, top: int = 40) -> str:
    """Self and inclusive sample shares by function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        # py-spy names threads first ("process 1:..."/"thread (0x..)"): keep functions only
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples (CPU only; idle threads are not sampled)", "", "self:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"


def start_relay(
    opts: Options, tracked: Tracked, name: str, prefix: str
) -> tuple[subprocess.Popen[bytes], str]:
    """The floor of the websocket benchmarks (`tests/bench/relay.py`): (process, base URL)."""
    port = free_port()
    relay_log = data_dir(opts, name) / "relay.log"
    relay = start_module(
        tracked,
        "tests.bench.relay",
        *("--port", str(port), "--redis-url", REDIS_URL, "--prefix", prefix),
        *("--log-level", opts.log_level),
        log_path=relay_log,
    )
    relay_url = f"http://127.0.0.1:{port}"
    wait_http(f"{relay_url}/health", relay, relay_log)
    return relay, relay_url


# -- the response cache's counters ------------------------------------------------------


def cache_counters(server_url: str, marker: str = "response_cache") -> dict[str, float]:
    """Every series of the API's /metrics whose name contains `marker`, by series (name
    and labels, `_created` timestamps left out); empty when there are none."""
    try:
        text = httpx.get(f"{server_url}/metrics", timeout=60).text
    except httpx.HTTPError:
        return {}
    series: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        name = key.split("{", 1)[0]
        if line.startswith("#") or marker not in name or name.endswith("_created"):
            continue
        with contextlib.suppress(ValueError):
            series[key] = float(value)
    return series


def hit_rate(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Hits / operations between two `cache_counters` readings, from the series whose
    name or labels say hit, miss and bypass (`lumi_response_cache_requests_total{result=
    "hit"}`, or `..._hits_total`). None when the API counts no hits and misses (no cache)
    or nothing was counted."""

    def grown(word: str) -> float | None:
        keys = [
            key
            for key in after
            if word in (tail := key.split("response_cache", 1)[-1].lower())
            and "invalidation" not in tail
        ]
        if not keys:
            return None
        return sum(after[key] - before.get(key, 0.0) for key in keys)

    hits, misses, bypasses = grown("hit"), grown("miss"), grown("bypass")
    if hits is None or misses is None:
        return None
    total = hits + misses + (bypasses or 0.0)
    return hits / total if total > 0 else None
