"""The pipeline floor: one Dramatiq worker process running a no-op actor.

The broker is built exactly as `lumi worker` builds it (`app.queue.build_broker`: the
RedisBroker on LUMI_REDIS_URL / LUMI_REDIS_NAMESPACE, with the AsyncIO and
CurrentMessage middleware), with the same number of threads. `--mode sync` is a plain
no-op function; `--mode async` runs an empty coroutine on the worker's event loop the way
every pipeline actor runs its stage (`async_to_sync`). The messages are queued before it
starts; it prints {"count", "first", "last"} (wall-clock times of the first and last
message processed) as JSON and exits once `--count` messages have run.

    python -m tests.bench.noop_worker --count N --threads T --mode sync|async
"""

from __future__ import annotations

import argparse
import json
import threading
import time

QUEUE = "bench-noop"
ACTOR = "bench_noop"


def main() -> None:
    import dramatiq
    from dramatiq.asyncio import async_to_sync

    from app.config import Settings
    from app.queue import build_broker

    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    broker = build_broker(Settings())
    lock = threading.Lock()
    done = threading.Event()
    seen = {"count": 0, "first": 0.0, "last": 0.0}

    def record() -> None:
        now = time.time()
        with lock:
            seen["count"] += 1
            seen["first"] = seen["first"] or now
            seen["last"] = now
            if seen["count"] >= args.count:
                done.set()

    async def nothing(i: int) -> None:
        return None

    def run(i: int) -> None:
        if args.mode == "async":
            async_to_sync(nothing)(i)
        record()

    run.__name__ = ACTOR
    dramatiq.Actor(
        run,
        broker=broker,
        actor_name=ACTOR,
        queue_name=QUEUE,
        priority=0,
        options={"max_retries": 0},
    )
    worker = dramatiq.Worker(broker, worker_threads=args.threads)
    worker.start()
    done.wait(args.timeout)
    print(json.dumps(seen), flush=True)
    worker.stop(timeout=5000)
    broker.close()


if __name__ == "__main__":
    main()
