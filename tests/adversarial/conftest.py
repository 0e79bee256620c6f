"""What every adversarial test shares: a database placing loopback ranges in countries, and a live call.

Conventions of this suite: every attack comes from a participant the SFU admitted and is sent the way
a hostile client would send it, byte by byte, over real sockets on loopback (its own SRTP-protected
peer connection for media-path attacks: ``sfu_geofence.testing.attacks``); each test asserts what the
attack bought (the SFU's counters, the audit, what the honest participants received), never how long
it took, and fails on the code before its fix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hostile_call import Call

from sfu_geofence.synthetic.client import SyntheticPeer, everyone_receives, synthetic_tracks
from sfu_geofence.testing.clock import ScheduledClock
from sfu_geofence.testing.server import served_on_loopback
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually

COUNTRIES = {"US": "127.1.0.0/16", "DE": "127.49.0.0/16", "CN": "127.86.0.0/16"}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """127.1/16 in US, 127.49/16 in DE, 127.86/16 in CN."""
    return build_database(tmp_path / "countries.mmdb", [f"{net}={cc}" for cc, net in COUNTRIES.items()])


@pytest.fixture
async def call(frozen_heap: None) -> AsyncIterator[Call]:
    """A publisher, a viewer and an attacker (127.0.30.1-3), each publishing and receiving the others."""
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
            await eventually(lambda: everyone_receives(peers), within=20)
            yield Call(served, *peers)
        finally:
            for peer in peers:
                await peer.close()
            clock.close()
