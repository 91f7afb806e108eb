"""`lumi generate` and `lumi watch` against a live `lumi serve`: plain lines and a
terminal's progress bar, files that load, exit codes, Ctrl-C, resuming a lost socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trimesh
from PIL import Image

from tests.conftest import (
    FAST,
    ROOT,
    SILICONFLOW_KEY,
    Server,
    free_port,
    run_lumi,
    start_server,
    stop_server,
    token_for,
)
from tests.e2e.client import REQUEST_UPDATES, collect, create_request, data_of, ws_session

pytestmark = pytest.mark.e2e

EVENT_LINE = re.compile(r"^#(\d+) (\d+)% ([A-Z_]+) \| (.*)$")
EVERY_STATUS = [
    "IMAGE_PENDING",
    "IMAGE_GENERATING",
    "IMAGE_COMPLETED",
    "MODEL_PENDING",
    "MODEL_GENERATING",
    "MODEL_COMPLETED",
    "COMPLETED",
]


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("generate-fast"), name="fast")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Its 3D jobs take 8 s: time to press Ctrl-C, or to lose the connection, mid-run."""
    data_dir = tmp_path_factory.mktemp("generate-slow")
    server = start_server(data_dir, name="slow", LUMI_LOCAL_MODEL_LATENCY_SECONDS="8")
    yield server
    stop_server(server)


def environment(data_dir: Path, **env: str) -> dict[str, str]:
    """As `run_lumi` configures a command: only by LUMI_* variables."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("LUMI_")}
    return {**kept, **FAST, "LUMI_DATA_DIR": str(data_dir), **env}


def events_of(stdout: str) -> list[tuple[int, str, str]]:
    """(seq, status, step) of each plain event line."""
    found = []
    for line in stdout.splitlines():
        if match := EVENT_LINE.match(line):
            found.append((int(match[1]), match[3], match[4].split(" | ")[0]))
    return found


def request_id_in(output: str) -> str:
    match = re.search(r"request (\S+) created", output)
    assert match, output
    return match[1]


def assert_files_load(out: Path, images: int) -> None:
    for n in range(1, images + 1):
        with Image.open(out / f"image-{n}.png") as image:
            image.verify()
            assert image.format == "PNG"
    mesh = trimesh.load(out / "model.glb", file_type="glb", force="mesh")
    assert len(mesh.vertices) > 0
    assert len(mesh.faces) > 0
    assert not list(out.glob("*.part"))


async def history(server: Server, user: str, request_id: str) -> list[tuple[int, str, str]]:
    async with ws_session(server, user) as session:
        replay = await collect(session, REQUEST_UPDATES, {"id": request_id, "afterSeq": 0})
    return [(e["seq"], e["status"], e["step"]) for e in replay]


async def test_generate_prints_one_plain_line_per_event_and_saves_files_that_load(
    fast: Server, tmp_path: Path
) -> None:
    """No --token and no LUMI_TOKEN: on this machine it uses the development token."""
    out = tmp_path / "out"
    done = run_lumi(
        tmp_path, "generate", "a brass robot toy", "--auto-model", "--images", "2",
        "--out", str(out), "--url", fast.graphql,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b" not in done.stdout
    assert "\r" not in done.stdout
    printed = events_of(done.stdout)
    # Every event once, in order, exactly as the request's history has it.
    assert printed == await history(fast, "dev", request_id_in(done.stdout))
    assert [status for status in EVERY_STATUS if status in {s for _, s, _ in printed}] == (
        EVERY_STATUS
    )
    assert "images 1:COMPLETED 2:COMPLETED" in done.stdout
    assert_files_load(out, images=2)
    assert sorted(path.name for path in out.iterdir()) == [
        "image-1.png",
        "image-2.png",
        "model.glb",
    ]


async def test_without_a_terminal_pick_chooses_the_image_and_obj_brings_all_its_files(
    fast: Server, tmp_path: Path
) -> None:
    user = "picker"
    out = tmp_path / "out"
    done = run_lumi(
        tmp_path, "generate", "a brass robot toy", "--images", "2", "--pick", "2",
        "--format", "obj", "--out", str(out), "--url", fast.graphql, "--token", token_for(user),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "image 2 goes to 3D" in done.stdout
    state = await data_of(
        fast,
        """query R($id: ID!) { request(id: $id) {
             selectedImageId images { id } model { files { name } } } }""",
        {"id": request_id_in(done.stdout)},
        user=user,
    )
    request = state["request"]
    assert request["selectedImageId"] == request["images"][1]["id"]
    names = sorted(file["name"] for file in request["model"]["files"])
    assert len(names) > 1  # the OBJ, its material and texture
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["image-1.png", "image-2.png", *names]
    )
    mesh = trimesh.load(out / "model.obj", force="mesh")
    assert len(mesh.vertices) > 0


async def test_watch_follows_an_existing_request_to_its_end(fast: Server, tmp_path: Path) -> None:
    user = "watcher"
    created = await create_request(fast, user, imageCount=1, autoModel=True)
    out = tmp_path / "watched"
    done = run_lumi(
        tmp_path, "watch", created["id"], "--out", str(out), "--url", fast.graphql,
        LUMI_TOKEN=token_for(user),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    printed = events_of(done.stdout)
    assert printed == await history(fast, user, created["id"])
    assert printed[-1][1] == "COMPLETED"
    assert_files_load(out, images=1)
    # Someone else's request is not there for them: the API's code, and exit 3.
    refused = run_lumi(
        tmp_path, "watch", created["id"], "--url", fast.graphql, "--token", token_for("other")
    )
    assert refused.returncode == 3
    assert "NOT_FOUND" in refused.stderr


def test_a_failed_request_exits_1_with_its_error_code(siliconflow: str, tmp_path: Path) -> None:
    httpx.post(f"{siliconflow}/_fake/reset")
    httpx.post(
        f"{siliconflow}/_fake/script",
        json={"responses": [{"status": 400, "message": "content policy", "repeat": True}]},
    )
    server = start_server(
        tmp_path / "server",
        name="failing",
        LUMI_IMAGE_PROVIDERS="siliconflow",
        LUMI_SILICONFLOW_API_KEY=SILICONFLOW_KEY,
        LUMI_SILICONFLOW_BASE_URL=siliconflow,
    )
    try:
        done = run_lumi(
            tmp_path, "generate", "a brass robot toy", "--auto-model", "--images", "1",
            "--out", str(tmp_path / "out"), "--url", server.graphql,
            "--token", token_for("unlucky"),
        )  # fmt: skip
    finally:
        stop_server(server)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: PROVIDER_REJECTED" in done.stderr
    assert [status for _, status, _ in events_of(done.stdout)][-2:] == ["IMAGE_FAILED", "FAILED"]


@dataclass
class Terminal:
    """A `lumi` command in a pseudo-terminal, as a person at a keyboard runs it."""

    process: subprocess.Popen[bytes]
    master: int
    output: bytearray = field(default_factory=bytearray)

    @classmethod
    def start(cls, data_dir: Path, *args: str) -> Terminal:
        master, slave = os.openpty()
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=environment(data_dir),
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        return cls(process, master)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def read_until(self, wanted: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.text:
            assert time.monotonic() < deadline, f"no {wanted!r} in {self.text!r}"
            if not self._read(0.1) and self.process.poll() is not None:
                raise AssertionError(f"exited before {wanted!r}: {self.text!r}")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0.1):
            pass
        os.close(self.master)
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the other side is closed: the command ended
            return False
        self.output.extend(chunk)
        return bool(chunk)


async def test_on_a_terminal_it_draws_a_progress_bar_and_asks_for_the_image(
    fast: Server, tmp_path: Path
) -> None:
    user = "terminal"
    out = tmp_path / "out"
    terminal = Terminal.start(
        tmp_path, "generate", "a brass robot toy", "--images", "2", "--out", str(out),
        "--url", fast.graphql, "--token", token_for(user),
    )  # fmt: skip
    terminal.read_until("Pick the image for the 3D model [1, 2]")
    terminal.type("2\n")
    assert terminal.wait() == 0, terminal.text
    shown = terminal.text
    assert "\r\x1b[2K[" in shown  # the bar, redrawn in place
    assert re.search(r"\] +50%  awaiting image selection", shown)
    assert "100%  completed" in shown
    assert "images 1✓ 2✓" in shown
    request_id = request_id_in(shown)
    state = await data_of(
        fast,
        "query R($id: ID!) { request(id: $id) { selectedImageId images { id } } }",
        {"id": request_id},
        user=user,
    )
    assert state["request"]["selectedImageId"] == state["request"]["images"][1]["id"]
    assert_files_load(out, images=2)


async def test_ctrl_c_answered_yes_cancels_the_request_and_exits_4(
    slow: Server, tmp_path: Path
) -> None:
    user = "impatient"
    terminal = Terminal.start(
        tmp_path, "generate", "a brass robot toy", "--auto-model", "--images", "1",
        "--out", str(tmp_path / "out"), "--url", slow.graphql, "--token", token_for(user),
    )  # fmt: skip
    terminal.read_until("generating 3D model")
    terminal.process.send_signal(signal.SIGINT)
    terminal.read_until("? [y/N] ")
    terminal.type("y\n")
    assert terminal.wait() == 4, terminal.text
    assert "was CANCELLED" in terminal.text
    request_id = request_id_in(terminal.text)
    state = await data_of(
        slow, "query R($id: ID!) { request(id: $id) { status } }", {"id": request_id}, user=user
    )
    assert state["request"]["status"] == "CANCELLED"


async def test_ctrl_c_answered_no_detaches_and_the_request_goes_on(
    slow: Server, tmp_path: Path
) -> None:
    user = "detacher"
    terminal = Terminal.start(
        tmp_path, "generate", "a brass robot toy", "--auto-model", "--images", "1",
        "--url", slow.graphql, "--token", token_for(user), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    terminal.read_until("generating 3D model")
    terminal.process.send_signal(signal.SIGINT)
    terminal.read_until("? [y/N] ")
    terminal.type("n\n")
    assert terminal.wait() == 130, terminal.text
    request_id = request_id_in(terminal.text)
    assert f"lumi watch {request_id} --url {slow.graphql} --out " in terminal.text
    state = await data_of(
        slow, "query R($id: ID!) { request(id: $id) { status } }", {"id": request_id}, user=user
    )
    assert state["request"]["status"] == "MODEL_GENERATING"


class Proxy:
    """A TCP proxy in front of the gateway that can drop every connection through it, and
    refuse new ones for a while: a flaky network between `lumi` and the gateway."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.refusing_until = 0.0
        self.writers: set[asyncio.StreamWriter] = set()
        self.dropped = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Proxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        async with server:
            yield self

    def drop(self, refuse_for: float) -> None:
        self.refusing_until = time.monotonic() + refuse_for
        for writer in list(self.writers):
            writer.transport.abort()
        self.dropped += len(self.writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.refusing_until:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.writers -= {writer, up_writer}
            writer.transport.abort()
            up_writer.transport.abort()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.transport.abort()


async def test_a_dropped_connection_is_resumed_after_the_last_event_seen(
    slow: Server, tmp_path: Path
) -> None:
    user = "flaky"
    out = tmp_path / "out"
    async with Proxy(int(slow.url.rsplit(":", 1)[1])).running() as proxy:
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "generate", "a brass robot toy", "--auto-model",
            "--images", "1", "--out", str(out), "--url", proxy.url, "--token", token_for(user),
            cwd=ROOT, env=environment(tmp_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert command.stdout is not None
        lines = []
        async with asyncio.timeout(60):
            while line := (await command.stdout.readline()).decode():
                lines.append(line)
                if "MODEL_GENERATING" in line and not proxy.dropped:
                    proxy.drop(refuse_for=1.5)
            stderr = (await command.stderr.read()).decode() if command.stderr else ""
            code = await command.wait()
    stdout = "".join(lines)
    assert proxy.dropped, stdout
    assert code == 0, stdout + stderr
    assert re.search(r"connection lost: .*; retrying in [\d.]+ s \(resuming after #\d+\)", stdout)
    resumed = re.search(r"reconnected: resuming after #(\d+)", stdout)
    assert resumed, stdout
    printed = events_of(stdout)
    # Nothing missed and nothing twice: the resubscription started after the last seq.
    assert printed == await history(slow, user, request_id_in(stdout))
    assert int(resumed[1]) < printed[-1][0]
    assert_files_load(out, images=1)


async def test_generate_makes_a_model_from_an_image_of_ones_own(
    fast: Server, tmp_path: Path
) -> None:
    from providers.local import render_png

    picture = tmp_path / "lighthouse.png"
    picture.write_bytes(render_png("a lighthouse", 5, 300, 200))
    out = tmp_path / "out"
    done = run_lumi(
        tmp_path, "generate", "--image", str(picture), "--out", str(out), "--url", fast.graphql
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lighthouse.png uploaded" in done.stdout
    printed = events_of(done.stdout)
    assert printed == await history(fast, "dev", request_id_in(done.stdout))
    # Straight to 3D: no prompt written, no image generated.
    assert printed[0][1] == "MODEL_PENDING"
    assert printed[-1][1] == "COMPLETED"
    with Image.open(out / "image-1.png") as image:  # the user's own, as stored
        assert image.size == (300, 200)
    assert trimesh.load(out / "model.glb", file_type="glb", force="mesh").faces.size > 0


def test_generate_needs_a_prompt_or_an_existing_image(tmp_path: Path) -> None:
    nothing = run_lumi(tmp_path, "generate")
    assert nothing.returncode == 2
    assert "give a prompt, or --image FILE" in nothing.stderr
    missing = run_lumi(tmp_path, "generate", "--image", str(tmp_path / "none.png"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
