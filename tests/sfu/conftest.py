"""An SFU served on 127.0.0.1 for integration tests with real aiortc peers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from sfu_geofence.rtc.ice import IcePolicy
from sfu_geofence.sfu import Sfu, SfuConfig
from sfu_geofence.testing.eventloops import loop_factories
from sfu_geofence.testing.server import Served, served_on_loopback


@pytest.fixture
async def sfu() -> AsyncIterator[Sfu]:
    """An SFU with no signaling in front, ICE on 127.0.0.1: tests join through its API."""
    the_sfu = Sfu(SfuConfig(ice=IcePolicy(bind=("127.0.0.1",))))
    try:
        yield the_sfu
    finally:
        await the_sfu.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with served_on_loopback() as server:
        yield server


@pytest.fixture(autouse=True)
def _starts_like_serve(frozen_heap: None) -> None:
    """Every SFU test's process starts like serve's (see ``frozen_heap``)."""


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """These tests run on uvloop, as ``serve`` does (the loopback guard still in force)."""
    return loop_factories(config)
