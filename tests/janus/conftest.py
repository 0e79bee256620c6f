"""Janus tests run a real Janus from Debian (marker ``janus``) inside a LAN namespace (marker ``lan``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from sfu_geofence.janus import JanusSession
from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.janus import JANUS_MISSING, JanusServer, find_janus, running_janus


@pytest.fixture
def janus(tmp_path: Path) -> Iterator[JanusServer]:
    """A Janus of this test's own (config files in tmp_path, ICE on the LAN dummy only), stopped by PID."""
    if find_janus() is None:
        skip_or_fail(JANUS_MISSING, kind="janus")
    directory = tmp_path / "janus"
    directory.mkdir()
    with running_janus(directory) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def session(janus: JanusServer, http: aiohttp.ClientSession) -> AsyncIterator[JanusSession]:
    """A Janus session (long poll running), destroyed after the test."""
    async with await JanusSession.create(http, janus.api_url) as opened:
        yield opened
