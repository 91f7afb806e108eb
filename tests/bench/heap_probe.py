"""Where each KiB of a live subscription goes: the gateway in this process under
tracemalloc, N `myRequestUpdates` subscriptions (as the capacity benchmark opens them)
from client processes, and the allocations still alive once they all sit idle, minus
those alive before they opened, per subscription.

    python -m tests.bench.heap_probe [--subscriptions 1000] [--deflate] [--frames 12]

Prints the live allocations by source line (innermost frame) and by a short call path,
and the Python objects the collector tracks, by type, each per subscription. Not a
benchmark (tracemalloc slows everything and doubles the memory); a map.
"""

from __future__ import annotations

import argparse
import collections
import gc
import threading
import time
import tracemalloc

import httpx

from app.config import Settings
from tests.bench.capacity import SUBSCRIPTION, WARM_UP, _quiet_database, _wait
from tests.bench.common import (
    Options,
    Tracked,
    insert_rows,
    make_users,
    metric,
    production_env,
    settings_from,
    tokens_for,
)
from tests.bench.wsclients import Subscribers, Target
from tests.conftest import free_port


class InProcessServer:
    """`lumi serve`'s uvicorn, in a thread of this process, so tracemalloc sees it; or,
    with `relay`, the raw relay of `tests/bench/relay.py` (the capacity floor)."""

    def __init__(self, settings: Settings, relay: bool = False) -> None:
        import uvicorn

        from app.cli import server_implementation
        from app.main import create_app
        from tests.bench import relay as raw_relay

        loop, http = server_implementation()
        self.port = free_port()
        app = (
            raw_relay.create_app(settings.redis_url, "heapprobe-relay:")
            if relay
            else create_app(settings, freeze_heap=True)
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop=loop,
            http=http,
            log_level="warning",
            log_config=None,
            ws_per_message_deflate=settings.ws_per_message_deflate,
            ws_max_size=settings.ws_max_message_bytes,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        _wait(lambda: self._healthy(), 30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def _types() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def _short(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in name:
            name = name.split(marker, 1)[1]
    return f"{name}:{frame.lineno}"


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int) -> None:
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    stats = after.compare_to(before, "traceback")
    total = sum(s.size_diff for s in stats)
    print(f"\nlive Python allocations: {total / n / 1024:.2f} KiB per subscription")
    by_line: collections.Counter[str] = collections.Counter()
    for stat in stats:
        by_line[_short(stat.traceback[-1])] += stat.size_diff
    print("\nby source line (innermost frame), bytes per subscription:")
    for line, size in by_line.most_common(top):
        print(f"{size / n:9.0f}  {line}")
    by_app: collections.Counter[str] = collections.Counter()
    for stat in stats:
        mine = [f for f in stat.traceback if "/work/main/app/" in f.filename]
        by_app[_short(mine[-1]) if mine else "(no app frame: server, starlette, strawberry)"] += (
            stat.size_diff
        )
    print("\nby the innermost frame of the gateway's own code, bytes per subscription:")
    for line, size in by_app.most_common(top):
        print(f"{size / n:9.0f}  {line}")
    print("\nby call path, bytes per subscription (innermost last):")
    for stat in sorted(stats, key=lambda s: -s.size_diff)[:top]:
        if stat.size_diff / n < 64:
            break
        path = " < ".join(_short(f) for f in reversed(stat.traceback[-6:]))
        print(f"{stat.size_diff / n:9.0f}  {stat.count_diff / n:5.1f} blocks  {path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--deflate", action="store_true", help="server and client deflate on")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--relay", action="store_true", help="the raw relay instead")
    args = parser.parse_args()
    n = args.subscriptions
    opts = Options(log_level="warning")
    extra = {"LUMI_WS_PER_MESSAGE_DEFLATE": "true"} if args.deflate else {}
    with production_env(opts, "heapprobe", **extra) as env:
        users = make_users(n + WARM_UP, "heapprobe")
        insert_rows(env["LUMI_DATABASE_URL"], users)
        tokens = tokens_for([u.external_id for u in users])
        compression = "deflate" if args.deflate else None
        tracemalloc.start(args.frames)
        with InProcessServer(settings_from(env), args.relay) as api, Tracked() as tracked:
            ws = api.url.replace("http://", "ws://", 1) + "/graphql"

            def target(index: int) -> Target:
                if args.relay:
                    return Target(ws.removesuffix("/graphql") + f"/ws/{index}")
                return Target(ws, tokens[index], SUBSCRIPTION)

            def live() -> float:
                if args.relay:
                    return float(httpx.get(f"{api.url}/health").json()["connections"])
                return metric(api.url, "lumi_active_subscriptions")

            warm = Subscribers(
                tracked,
                [target(i) for i in range(n, n + WARM_UP)],
                processes=1,
                compression=compression,
            )
            warm.wait_opened(120)
            _wait(lambda: live() >= WARM_UP, 60)
            warm.stop()
            _wait(lambda: live() == 0, 60)
            time.sleep(2)
            types_before = _types()
            before = tracemalloc.take_snapshot()
            tracemalloc.reset_peak()
            traced_before = tracemalloc.get_traced_memory()[0]
            subs = Subscribers(
                tracked,
                [target(i) for i in range(n)],
                processes=2,
                open_concurrency=100,
                compression=compression,
            )
            opened = subs.wait_opened(600)
            _wait(lambda: live() >= opened.ok, 120)
            time.sleep(3)
            _quiet_database(timeout=120)
            count = live()
            traced_now, traced_peak = tracemalloc.get_traced_memory()
            types_after = _types()
            after = tracemalloc.take_snapshot()
            print(f"{opened.ok} opened, {count:.0f} live, deflate: {opened.extensions}")
            now_kib = (traced_now - traced_before) / count / 1024
            peak_kib = (traced_peak - traced_before) / count / 1024
            print(
                f"traced memory per subscription: now {now_kib:.2f} KiB, "
                f"at the peak while they opened {peak_kib:.2f} KiB"
            )
            report(before, after, int(count), args.top)
            print("\ntracked objects per subscription, by type:")
            grown = types_after - types_before
            for name, k in grown.most_common(args.top):
                if k / count < 0.5:
                    break
                print(f"{k / count:7.2f}  {name}")
            subs.stop(120)
        tracemalloc.stop()


if __name__ == "__main__":
    main()
