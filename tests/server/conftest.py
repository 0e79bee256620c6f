"""An SFU served on 127.0.0.1 for integration tests with real aiortc peers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sfu_geofence.testing.coturn import COTURN_MISSING, TurnServer, find_turnserver, running_coturn
from sfu_geofence.testing.pytest_browser import skip_or_fail
from sfu_geofence.testing.server import Served, served_on_loopback


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with served_on_loopback() as server:
        yield server


@pytest.fixture
def turn_server(tmp_path: Path) -> Iterator[TurnServer]:
    """A real coturn on 127.0.0.1 (relaying from 127.0.0.3), stopped by PID afterwards."""
    if find_turnserver() is None:
        skip_or_fail(COTURN_MISSING, kind="relay")
    directory = tmp_path / "coturn"
    directory.mkdir()
    with running_coturn(directory) as server:
        yield server
