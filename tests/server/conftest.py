"""An SFU served on 127.0.0.1 for integration tests with real aiortc peers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sfu_geofence.testing.server import Served, served_on_loopback


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with served_on_loopback() as server:
        yield server
