"""Pipeline actors: optimize prompt → one image per variant → start 3D job → poll it.

Each stage is registered once per priority queue; the message's queue picks the actor.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from app.observability import request_id
from app.queue import PRIORITY, QUEUES, actor_name
from app.requests.service import Stage
from workers.image import generate_image
from workers.model import cancel_model, poll_model, start_model
from workers.prompt import optimize_prompt
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)


STAGES: dict[str, Callable[..., Awaitable[None]]] = {
    Stage.OPTIMIZE_PROMPT: optimize_prompt,
    Stage.GENERATE_IMAGE: generate_image,
    Stage.START_MODEL: start_model,
    Stage.POLL_MODEL: poll_model,
    Stage.CANCEL_MODEL: cancel_model,
}


def declare_actors(broker: dramatiq.Broker, runtime: WorkerRuntime) -> None:
    """Registers each stage on `broker` once per queue, each running with `runtime`'s deps.

    The queue a message is sent to picks the actor, and the actor's priority orders the
    work a worker has fetched: high before default before low.
    """
    for name, stage in STAGES.items():
        for queue in QUEUES:
            _actor(broker, runtime, name, stage, queue)  # an Actor declares itself


def _actor(
    broker: dramatiq.Broker,
    runtime: WorkerRuntime,
    name: str,
    stage: Callable[..., Awaitable[None]],
    queue: str,
) -> dramatiq.Actor[..., Any]:
    async def run_async(rid: str | None, *args: Any) -> None:
        token = request_id.set(rid)
        try:
            log.info("stage %s %s", name, args)
            deps = await runtime.deps()
            await stage(deps, *args)
        except Exception:
            # The job stays as it was; the sweeper finds it (stalled or waiting) and
            # runs it again, so an unexpected failure is retried like a lost worker.
            log.exception("stage %s failed for %s", name, args)
        finally:
            request_id.reset(token)

    def run(*args: Any) -> None:
        # Runs in the worker thread, where the current message is known; the stage
        # itself runs on the worker's event loop, carrying the message's request id,
        # and the thread goes back for the next message (see StageLauncher).
        message = CurrentMessage.get_current_message()
        rid = message.options.get("request_id") if message is not None else None
        runtime.stages.launch(run_async(rid, *args))

    run.__name__ = actor_name(name, queue)
    # Retries, backoff and dead letters are the job table's business (see DESIGN §4):
    # Dramatiq must not run a stage again behind the state machine's back.
    return dramatiq.Actor(
        run,
        broker=broker,
        actor_name=actor_name(name, queue),
        queue_name=queue,
        priority=PRIORITY[queue],
        options={"max_retries": 0},
    )
