"""A request's priority picks its queue, and a real Dramatiq worker takes high first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dramatiq

from app.queue import QUEUES, DramatiqQueue, StageMessage, build_broker
from tests.conftest import make_settings
from workers.actors import _actor
from workers.runtime import StageLauncher


class Runtime:
    """What an actor asks of its runtime; the probe stage needs no dependencies. One
    stage at a time, so the order they start in is the order the worker took them."""

    stages = StageLauncher(limit=1)

    async def deps(self) -> Any:
        return None


def test_high_priority_work_overtakes_a_low_backlog(tmp_path: Path) -> None:
    broker = build_broker(make_settings(tmp_path))
    order: list[str] = []

    async def probe(_deps: Any, label: str) -> None:
        order.append(label)

    for queue in QUEUES:
        _actor(broker, Runtime(), "probe", probe, queue)  # type: ignore[arg-type]
    sender = DramatiqQueue(broker)
    for number in range(30):
        sender.send(StageMessage("probe", (f"low-{number}",), queue="low"))
    sender.send(StageMessage("probe", ("default",), queue="default"))
    sender.send(StageMessage("probe", ("high",), queue="high"))
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        for queue in QUEUES:
            broker.join(queue, timeout=20_000)
        worker.join()
        deadline = time.monotonic() + 20
        while Runtime.stages.running() and time.monotonic() < deadline:
            time.sleep(0.01)  # a message is done when its stage started: let it end
    finally:
        worker.stop()
    assert len(order) == 32
    # The worker had low messages fetched before the others arrived; from then on the
    # high one goes first, then the default one.
    assert order.index("high") < order.index("default") < 6
