"""The watchdog of a worker's Dramatiq consumer threads: one that died is started again.

A consumer thread fetches one broker queue. Dramatiq restarts it after a connection
error, but not after any other error whose cleanup fails too: the delay queue's
consumer moves a due message with `broker.enqueue`, which raises redis-py's own
ConnectionError while Redis is away ("Consumer encountered an unexpected error"); its
cleanup then requeues the delayed messages it holds, against the same dead Redis, and
that second error ends the thread. No "Restarting consumer" follows, the process looks
healthy, and no delayed message (a retry, a 3D poll) moves again (upstream: dramatiq
#527). The jobs of the delayed messages it held are the sweeper's: it sends a job again
once it is overdue (`LUMI_OVERDUE_SECONDS`), whatever the broker says it holds.

A dead consumer is restarted in place rather than the process exited: that is what
Dramatiq itself does after a connection error, it keeps the stages running on this
worker's loop, and a worker exiting at every Redis outage would sit in its
supervisor's crash-loop back-off for minutes after Redis returned. Only when a thread
cannot be started again does the worker give up and exit non-zero (see `watch`).
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.worker import ConsumerThread

from app.metrics import WORKER_CONSUMER_RESTARTS, WORKER_CONSUMERS_ALIVE

log = logging.getLogger(__name__)


def consumers_alive(worker: dramatiq.Worker) -> dict[str, bool]:
    """Each queue's consumer thread, and whether it is running."""
    return {name: thread.is_alive() for name, thread in sorted(worker.consumers.items())}


class ConsumerWatchdog:
    """Checks `worker`'s consumer threads and starts a dead one again."""

    def __init__(self, worker: dramatiq.Worker) -> None:
        self.worker = worker

    def check(self) -> None:
        """One pass: restarts every consumer that died while its worker ran; raises when
        one cannot be started again."""
        for name, thread in list(self.worker.consumers.items()):
            # `running` stays true in a thread that died of an error; a stopped one
            # (the worker shutting down) cleared it and must stay down.
            if not thread.is_alive() and thread.running:
                self._restart(name, thread)
        for name, alive in consumers_alive(self.worker).items():
            WORKER_CONSUMERS_ALIVE.labels(name).set(1 if alive else 0)

    def _restart(self, name: str, dead: ConsumerThread) -> None:
        log.error("the consumer of queue %s died; starting it again", name)
        replacement = ConsumerThread(
            broker=self.worker.broker,
            queue_name=name,
            prefetch=dead.prefetch,
            work_queue=self.worker.work_queue,
            worker_timeout=self.worker.worker_timeout,
        )
        replacement.start()
        # Worker threads look their consumer up by queue name to acknowledge a message
        # (the dead one's can still do it meanwhile: it is the same Redis call).
        self.worker.consumers[name] = replacement
        WORKER_CONSUMER_RESTARTS.labels(name).inc()

    def watch(self, stop: threading.Event, interval: float) -> bool:
        """Checks every `interval` seconds until `stop` is set; True then. False when a
        consumer could not be started again: the caller exits non-zero, so that its
        supervisor starts a whole new process."""
        while True:
            try:
                self.check()
            except Exception:
                log.critical("a consumer thread could not be restarted", exc_info=True)
                return False
            if stop.wait(interval):
                return True
