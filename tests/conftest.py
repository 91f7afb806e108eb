"""Shared fixtures: settings on a temp directory, in-process deps, a real uvicorn server."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth import TokenVerifier
from app.bus import InProcessBus
from app.config import Settings
from app.deps import Deps, build_deps
from app.migrate import upgrade_async
from app.queue import StageMessage

ROOT = Path(__file__).resolve().parent.parent

FAST = {
    "LUMI_LOCAL_LATENCY_SECONDS": "0.05",
    "LUMI_LOCAL_MODEL_LATENCY_SECONDS": "0.6",
    "LUMI_MODEL_POLL_INTERVAL_SECONDS": "0.1",
    "LUMI_SUBSCRIPTION_RECHECK_SECONDS": "0.5",
    "LUMI_IMAGE_SIZE": "128",
}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs a command in-process configures the root logger, with a handler
    on that test's captured stderr; later tests must not log into that closed stream
    ("--- Logging error --- I/O operation on closed file")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {k.removeprefix("LUMI_").lower(): v for k, v in FAST.items()}
    values.update(overrides)
    return Settings(_env_file=None, data_dir=data_dir, **values)  # type: ignore[call-arg]


IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
MARIADB = ("127.0.0.1", 3306)
REDIS = ("127.0.0.1", 6379)


def reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def require(name: str, address: tuple[str, int]) -> None:
    """A missing service skips loudly on a laptop and fails under CI=true."""
    if reachable(address):
        return
    reason = f"{name} is not reachable at {address[0]}:{address[1]}"
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires it (.ci/run starts it)")
    pytest.skip(f"SKIPPED, NOT TESTED: {reason} (under CI=true this fails)")


def mariadb_admin(database: str | None = None) -> Any:
    import pymysql

    return pymysql.connect(
        host=MARIADB[0],
        port=MARIADB[1],
        user="root",
        password="",
        database=database,
        autocommit=True,
    )


@contextlib.contextmanager
def mariadb_database(name: str, revision: str = "head") -> Iterator[str]:
    """A new database on the shared MariaDB, migrated to `revision`, dropped afterwards."""
    require("MariaDB", MARIADB)
    with mariadb_admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    url = f"mysql+aiomysql://root@{MARIADB[0]}:{MARIADB[1]}/{name}?charset=utf8mb4"
    from app.migrate import upgrade

    upgrade(url, revision)
    try:
        yield url
    finally:
        with mariadb_admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A database of this test session's own, migrated once; tests empty it first."""
    with mariadb_database(f"lumi_test_{os.getpid()}") as url:
        yield url


def empty_tables(url: str) -> None:
    from app.tables import metadata

    database = url.rsplit("/", 1)[1].split("?")[0]
    with mariadb_admin(database) as admin, admin.cursor() as cursor:
        cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        for table in metadata.sorted_tables:
            cursor.execute(f"TRUNCATE TABLE {table.name}")
        cursor.execute("SET FOREIGN_KEY_CHECKS = 1")


@pytest.fixture(params=["sqlite", "mariadb"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses the database runs on SQLite and on MariaDB."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'lumi.db'}"
    url: str = request.getfixturevalue("mariadb_url")
    empty_tables(url)
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url)


class RecordingQueue:
    """Keeps stage messages instead of sending them, so a test delivers them by hand."""

    def __init__(self) -> None:
        self.sent: list[StageMessage] = []

    def send(self, message: StageMessage) -> None:
        self.sent.append(message)

    def take(self) -> list[StageMessage]:
        messages, self.sent = self.sent, []
        return messages

    def outstanding_job_ids(self) -> set[str]:
        return {str(message.args[0]) for message in self.sent}


@pytest.fixture
async def deps(settings: Settings) -> AsyncIterator[Deps]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade_async(settings.resolved_database_url)
    built = build_deps(settings, bus=InProcessBus(), queue=RecordingQueue())
    yield built
    await built.aclose()


def token_for(user: str, settings: Settings | None = None) -> str:
    """A token for `user` that also names them `user`, so tests can tell users apart."""
    verifier = TokenVerifier.from_settings(settings or Settings(_env_file=None))  # type: ignore[call-arg]
    return verifier.mint(user, name=user)


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes outgoing connections' local ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_HANDED_OUT: set[int] = set()  # by this process: not handed out twice


def free_port() -> int:
    """A port nothing listens on, below the ephemeral range: the kernel never hands it
    to an outgoing connection, so it stays free until a test's server binds it (and
    binds it again after a restart), where a port bind(0) picks is from that very range.
    Each pytest-xdist worker picks from its own slice of the range, and never the same
    port twice, so two tests never get one port."""
    low = _ephemeral_ports()[0]
    if low < 12_000:  # an unusual range: leave it to the kernel
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    width = (low - 10_000) // 8
    first = 10_000 + (int(worker) % 8 if worker.isdigit() else 0) * width
    for _ in range(500):
        port = random.randrange(first, first + width)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # something listens there already
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def graphql(self) -> str:
        return f"{self.url}/graphql"

    @property
    def ws(self) -> str:
        return self.graphql.replace("http://", "ws://", 1)


def lumi(data_dir: Path, log: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """Runs a `lumi` command in a subprocess, configured only by LUMI_* variables."""
    data_dir.mkdir(parents=True, exist_ok=True)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LUMI_")},
        **FAST,
        "LUMI_DATA_DIR": str(data_dir),
        **env,
    }
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def lumi_listening(
    data_dir: Path, log: Path, port_setting: str, path: str, *args: str, **env: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Runs a `lumi` command that listens on the port named by `port_setting`, once
    `path` there answers at all."""

    def start(port: int) -> subprocess.Popen[bytes]:
        return lumi(data_dir, log, *args, **env, **{port_setting: str(port)})

    return _listening(start, log, path, lambda _: True)


def _listening(
    start: Callable[[int], subprocess.Popen[bytes]],
    log: Path,
    path: str,
    ready: Callable[[httpx.Response], bool],
) -> tuple[subprocess.Popen[bytes], int]:
    """`start(port)` on a free port, until `path` there answers `ready`. A port picked
    free can be taken before the process binds it (any outgoing connection may get it
    as its local port): the process then exits, and starts again on another."""
    for _ in range(3):
        port = free_port()
        process = start(port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if ready(httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)):
                    return process, port
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        stop_process(process)
        if "address already in use" not in log.read_text().lower():
            break
    raise RuntimeError(f"{' '.join(map(str, process.args))} did not start: {log.read_text()}")


def run_lumi(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs a `lumi` command to completion, configured only by LUMI_* variables."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LUMI_")},
        **FAST,
        "LUMI_DATA_DIR": str(data_dir),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start_server(
    data_dir: Path, *, name: str = "server", log_level: str = "warning", **env: str
) -> Server:
    """`lumi serve` in a subprocess on a free port, exactly as a user runs it, once its
    /health answers 200."""
    log = data_dir / f"{name}.log"

    def start(port: int) -> subprocess.Popen[bytes]:
        return lumi(data_dir, log, "serve", "--port", str(port), "--log-level", log_level, **env)

    process, port = _listening(start, log, "/health", lambda r: r.status_code == 200)
    return Server(f"http://127.0.0.1:{port}", process, log)


def stop_server(server: Server) -> None:
    stop_process(server.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[dict[str, str]]:
    """A real S3 endpoint over HTTP (moto_server), and the settings that reach it."""
    binary = Path(sys.executable).parent / "moto_server"
    for _ in range(3):  # a port taken before moto bound it: another (see _listening)
        port = free_port()
        process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if reachable(("127.0.0.1", port)):
                break
            time.sleep(0.1)
        if process.poll() is None and reachable(("127.0.0.1", port)):
            break
        stop_process(process)
    else:
        pytest.fail("moto_server did not start")
    yield {
        "LUMI_STORAGE_BACKEND": "s3",
        "LUMI_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "LUMI_S3_BUCKET": f"lumi-{uuid.uuid4().hex[:8]}",
        "LUMI_S3_REGION": "us-east-1",
        "LUMI_S3_ACCESS_KEY_ID": "test",
        "LUMI_S3_SECRET_ACCESS_KEY": "test",
        "LUMI_S3_CREATE_BUCKET": "true",
    }
    stop_process(process)


@pytest.fixture(scope="session", params=["sqlite", "mariadb"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The embedded default, once on SQLite and once on MariaDB."""
    data_dir = tmp_path_factory.mktemp(f"server-{request.param}")
    with contextlib.ExitStack() as stack:
        env = {}
        if request.param == "mariadb":
            url = stack.enter_context(mariadb_database(f"lumi_e2e_{os.getpid()}"))
            env["LUMI_DATABASE_URL"] = url
        running = start_server(data_dir, **env)
        yield running
        stop_server(running)


SILICONFLOW_KEY = "sk-fake-siliconflow-key"


@pytest.fixture(scope="session")
def siliconflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fake SiliconFlow API as a real HTTP server on loopback; its base URL.

    Tests script it through `/_fake/script` and reset it before use, so worker
    processes and in-process adapters meet the same vendor."""
    from tests.fakes.siliconflow import start_fake_siliconflow

    log = tmp_path_factory.mktemp("siliconflow") / "fake.log"
    url, stop = start_fake_siliconflow(SILICONFLOW_KEY, log=log)
    try:
        yield url
    finally:
        stop()


# The files that take longest (a minute down to 20 s each on 2 cores), sent to the
# pytest-xdist workers first: with `--dist loadfile` a file runs whole on one worker, and
# a long one picked up last would run alone at the end while the other workers idle.
# Only the order changes; a file missing from the list runs after these, as collected.
LONGEST_FIRST = (
    "tests/e2e/test_faults.py",
    "tests/test_maintenance.py",
    "tests/test_cli_admin.py",
    "tests/e2e/test_fuzz.py",
    "tests/e2e/test_webhooks_live.py",
    "tests/e2e/test_redis_outage.py",
    "tests/e2e/test_vendors_live.py",
    "tests/e2e/test_graphql_over_http.py",
    "tests/e2e/test_queue_live.py",
    "tests/e2e/test_browser_studio.py",
    "tests/e2e/test_uploads_live.py",
    "tests/graphql/test_authorization_matrix.py",
    "tests/e2e/test_http_hardening.py",
    "tests/e2e/test_pipeline_live.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}

    def first(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return rank.get(path, len(rank))

    items.sort(key=first)  # stable: tests keep their order within a file
