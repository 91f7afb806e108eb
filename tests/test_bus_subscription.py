"""A local subscription's buffer: wakes its reader at once, times out quietly, and drops
what a slow reader cannot hold (the stream then backfills from the table)."""

from __future__ import annotations

import asyncio
import time

from app.bus import InProcessBus


async def test_a_waiting_reader_wakes_as_soon_as_a_message_is_published() -> None:
    bus = InProcessBus()
    async with bus.subscribe(["c"]) as sub:
        reader = asyncio.create_task(sub.get(5))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await bus.publish("c", {"seq": 1})
        assert await reader == {"seq": 1}
        assert time.monotonic() - started < 0.5


async def test_a_quiet_channel_answers_none_after_the_timeout() -> None:
    bus = InProcessBus()
    async with bus.subscribe(["c"]) as sub:
        started = time.monotonic()
        assert await sub.get(0.1) is None
        assert 0.09 <= time.monotonic() - started < 1
        await bus.publish("c", {"seq": 1})  # and a later message still arrives
        assert await sub.get(1) == {"seq": 1}


async def test_a_full_subscriber_drops_what_it_cannot_hold_in_order() -> None:
    bus = InProcessBus(queue_size=2)
    async with bus.subscribe(["c"]) as sub:
        for seq in range(1, 6):
            await bus.publish("c", {"seq": seq})
        await asyncio.sleep(0.05)  # deliveries are scheduled on the subscriber's loop
        assert [await sub.get(0.1) for _ in range(3)] == [{"seq": 1}, {"seq": 2}, None]
