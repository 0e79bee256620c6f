"""A peer connection closed in steps: a transceiver per step, the loop turning in between, the close last,
and the close always runs."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiortc import RTCConfiguration, RTCPeerConnection

from sfu_geofence.rtc.teardown import close_in_steps


def _connection(transceivers: int) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for _ in range(transceivers):
        pc.addTransceiver("audio")
    return pc


async def test_each_transceiver_is_stopped_in_a_step_of_its_own_then_the_connection_closed() -> None:
    pc = _connection(4)
    stopped_at_each_step: list[int] = []
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.ensure_future(ticker())
    ticks_at_each_step: list[int] = []

    @asynccontextmanager
    async def turn() -> AsyncIterator[None]:
        stopped_at_each_step.append(sum(t.stopped for t in pc.getTransceivers()))
        ticks_at_each_step.append(ticks)
        yield

    await close_in_steps(pc, spacing=0.001, turn=turn)
    ticking.cancel()

    assert stopped_at_each_step == [0, 1, 2, 3, 4]  # four stops, then the close
    assert all(b > a for a, b in itertools.pairwise(ticks_at_each_step))
    assert pc.connectionState == "closed"


async def test_cancelled_while_waiting_the_connection_is_still_closed() -> None:
    pc = _connection(2)
    closing = asyncio.ensure_future(close_in_steps(pc, delay=60))
    await asyncio.sleep(0.01)
    closing.cancel()
    await asyncio.gather(closing, return_exceptions=True)
    assert pc.connectionState == "closed"
