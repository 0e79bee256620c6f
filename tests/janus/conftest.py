"""Janus tests run a real Janus from Debian (marker ``janus``; fixture ``janus`` in tests/conftest.py)
inside a LAN namespace (marker ``lan``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from sfu_geofence.janus import JanusSession
from sfu_geofence.testing.janus import JanusServer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def session(janus: JanusServer, http: aiohttp.ClientSession) -> AsyncIterator[JanusSession]:
    """A Janus session (long poll running), destroyed after the test."""
    async with await JanusSession.create(http, janus.api_url) as opened:
        yield opened
