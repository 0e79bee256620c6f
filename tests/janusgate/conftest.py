"""A real Janus per module (its event handler posting to the gate's admin port), a gate per test.

The tests run in a LAN namespace (marker ``lan``): Janus and the peers gather on its dummy interface;
clients reach the gate over loopback, each from an address the test database puts in a country.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from gated import CN_MEDIA, NETWORKS, GatedJanus, free_port, gate_config

from sfu_geofence.janus import JanusSession, VideoRoom
from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.clock import ScheduledClock
from sfu_geofence.testing.janus import JANUS_MISSING, find_janus, running_janus
from sfu_geofence.testing.janusgate import ServedGate, serving_gate
from sfu_geofence.testing.testdb import build_database


@pytest.fixture(scope="module")
def gated_janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatedJanus]:
    if find_janus() is None:
        skip_or_fail(JANUS_MISSING, kind="janus")
    directory = tmp_path_factory.mktemp("janus")
    database = build_database(
        directory / "countries.mmdb", [*(f"{net}={cc}" for cc, net in NETWORKS.items()), f"{CN_MEDIA}/32=CN"]
    )
    port = free_port()
    with running_janus(directory, events_url=f"http://127.0.0.1:{port}/janus-events") as janus:
        yield GatedJanus(janus, port, database)


@pytest.fixture
async def served(gated_janus: GatedJanus) -> AsyncIterator[ServedGate]:
    async with serving_gate(gate_config(gated_janus)) as gate:
        yield gate


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def operator(gated_janus: GatedJanus, http: aiohttp.ClientSession) -> AsyncIterator[VideoRoom]:
    """The room owner's own session on Janus (rooms are created there, not through the gate)."""
    async with await JanusSession.create(http, gated_janus.janus.api_url) as session:
        yield VideoRoom(session)


@pytest.fixture
def clock() -> Iterator[ScheduledClock]:
    scheduled = ScheduledClock()
    yield scheduled
    scheduled.close()
