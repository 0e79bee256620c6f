"""A connection's received datagrams wait for DTLS in a queue that never lets one connection's backlog
hold the event loop: the DTLS task takes a burst, then the loop turns (other connections, timers)."""

from __future__ import annotations

import asyncio
import itertools

from aioice import Connection

from sfu_geofence.rtc.ice import IcePolicy, use_policy
from sfu_geofence.rtc.media_source import RECEIVE_BURST, FairQueue


async def _taken_with_ticks(queue: asyncio.Queue[int], count: int) -> list[object]:
    """What a consumer takes from ``queue``, with a "tick" each time another task got a turn."""
    events: list[object] = []

    async def ticker() -> None:
        while True:
            events.append("tick")
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    events.clear()
    for _ in range(count):
        events.append(await queue.get())
    task.cancel()
    return events


def _longest_run_without_a_tick(events: list[object]) -> int:
    return max(len(list(run)) for is_item, run in itertools.groupby(events, lambda e: e != "tick") if is_item)


async def test_a_backlog_is_taken_a_burst_at_a_time_with_the_loop_turning_in_between() -> None:
    queue = FairQueue()
    for i in range(5 * RECEIVE_BURST):
        queue.put_nowait(i)

    events = await _taken_with_ticks(queue, 5 * RECEIVE_BURST)

    assert [e for e in events if e != "tick"] == list(range(5 * RECEIVE_BURST))  # in order, none lost
    assert _longest_run_without_a_tick(events) <= RECEIVE_BURST


async def test_a_plain_asyncio_queue_would_hand_over_the_whole_backlog_in_one_go() -> None:
    # What FairQueue is for: asyncio.Queue.get() returns at once while items wait.
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(5 * RECEIVE_BURST):
        queue.put_nowait(i)

    events = await _taken_with_ticks(queue, 5 * RECEIVE_BURST)

    assert _longest_run_without_a_tick(events) == 5 * RECEIVE_BURST


async def test_an_item_that_arrives_on_an_empty_queue_is_taken_when_it_arrives() -> None:
    queue = FairQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_nowait(7)
    assert await asyncio.wait_for(getter, 5) == 7


async def test_connections_made_under_an_ice_policy_receive_through_a_fair_queue() -> None:
    with use_policy(IcePolicy(bind=("127.0.0.1",))):
        guarded = Connection(ice_controlling=True)
    plain = Connection(ice_controlling=True)
    assert isinstance(guarded._queue, FairQueue)
    assert not isinstance(plain._queue, FairQueue)
    await guarded.close()
    await plain.close()
