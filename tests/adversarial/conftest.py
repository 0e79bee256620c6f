"""A call with one hostile participant: real aiortc peers on loopback, the SFU in this process.

Conventions of this suite: every attack is sent by the attacker's own peer connection, SRTP-protected
(``sfu_geofence.testing.attacks``), so the SFU sees a participant it admitted; each test asserts what
the attack bought (counters of the SFU, what the honest participants received), never how long it took,
and fails on the code before its fix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hostile_call import Call, receives_everyone

from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.clock import ScheduledClock
from sfu_geofence.testing.server import served_on_loopback
from sfu_geofence.testing.wait import eventually


@pytest.fixture
async def call(frozen_heap: None) -> AsyncIterator[Call]:
    clock = ScheduledClock()
    async with served_on_loopback() as served:
        peers = [
            SyntheticPeer(
                served.url, "room", f"127.0.30.{i + 1}", name=name, tracks=synthetic_tracks(), clock=clock
            )
            for i, name in enumerate(("publisher", "viewer", "attacker"))
        ]
        try:
            for peer in peers:
                await peer.join()
            await eventually(lambda: receives_everyone(peers), within=20)
            yield Call(served, *peers)
        finally:
            for peer in peers:
                await peer.close()
            clock.close()
