"""A worker's threads hand stages to its event loop: a stage waiting on a vendor holds
no thread, and the loop runs at most LUMI_STAGE_CONCURRENCY of them at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from app.config import Settings
from app.queue import DramatiqQueue, StageMessage, build_broker
from tests.conftest import make_settings
from workers.actors import _actor
from workers.model import ESTIMATE_STEP, poll_delay, worth_an_event
from workers.runtime import StageLauncher


class Probe:
    """A runtime whose stage waits until released, counting how many wait at once."""

    def __init__(self, limit: int) -> None:
        self.stages = StageLauncher(limit)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.started = 0
        self.running = 0
        self.most = 0

    async def deps(self) -> Any:
        return self

    async def stage(self, _deps: Any, _label: str) -> None:
        import asyncio

        with self.lock:
            self.started += 1
            self.running += 1
            self.most = max(self.most, self.running)
        while not self.release.is_set():  # noqa: ASYNC110 (set from the test thread)
            await asyncio.sleep(0.01)  # waiting on a vendor
        with self.lock:
            self.running -= 1


def run_probe(tmp_path: Path, *, limit: int, messages: int, threads: int = 1) -> Probe:
    broker = build_broker(make_settings(tmp_path))
    probe = Probe(limit)
    _actor(broker, probe, "probe", probe.stage, "default")  # type: ignore[arg-type]
    for number in range(messages):
        DramatiqQueue(broker).send(StageMessage("probe", (str(number),)))
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while probe.started < min(limit, messages) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # more than the limit would start now, if they could
        seen = (probe.started, probe.most)
        probe.release.set()
        while probe.started < messages and time.monotonic() < deadline:
            time.sleep(0.01)
        while probe.stages.running() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        probe.release.set()
        worker.stop()
    probe.first_wave = seen  # type: ignore[attr-defined]
    return probe


def test_one_thread_runs_many_waiting_stages_at_once(tmp_path: Path) -> None:
    probe = run_probe(tmp_path, limit=5, messages=5, threads=1)
    assert probe.first_wave == (5, 5)  # type: ignore[attr-defined]
    assert probe.started == 5


def test_no_more_stages_run_at_once_than_the_limit(tmp_path: Path) -> None:
    probe = run_probe(tmp_path, limit=2, messages=6, threads=2)
    assert probe.first_wave == (2, 2)  # type: ignore[attr-defined]
    assert probe.started == 6
    assert probe.most == 2


@pytest.mark.parametrize(
    ("elapsed", "delay"), [(0, 1.0), (4, 1.0), (10, 2.0), (20, 4.0), (25, 5.0), (600, 5.0)]
)
def test_polls_of_a_3d_job_space_out_as_it_runs(elapsed: float, delay: float) -> None:
    settings = Settings(model_poll_interval_seconds=1, model_poll_max_interval_seconds=5)
    assert poll_delay(settings, elapsed) == pytest.approx(delay)


def test_a_first_poll_interval_longer_than_the_longest_wins() -> None:
    settings = Settings(model_poll_interval_seconds=10, model_poll_max_interval_seconds=5)
    assert poll_delay(settings, 100) == 10


def test_estimated_progress_is_reported_in_steps_and_a_vendors_by_the_percent() -> None:
    assert not worth_an_event(52 + ESTIMATE_STEP - 0.1, True, 52)
    assert worth_an_event(52 + ESTIMATE_STEP, True, 52)
    assert not worth_an_event(52.9, False, 52.0)
    assert worth_an_event(53.0, False, 52.9)
