"""The application's background work (cluster heartbeats, database watch, audit retention, metrics)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sfu_geofence.server.app import running
from sfu_geofence.testing.wait import eventually


async def test_background_work_that_dies_of_a_bug_is_logged_when_it_dies_and_stops_no_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def renew_leases() -> None:
        await asyncio.sleep(0)
        raise KeyError("a bug")

    with caplog.at_level(logging.ERROR, logger="sfu_geofence.server.app"):
        async with running(renew_leases()):

            def logged() -> str | None:
                errors = [r for r in caplog.records if r.levelno == logging.ERROR]
                return None if errors else "nothing logged yet"

            await eventually(logged, within=5)
        # leaving the block (the shutdown) raised nothing
    [record] = caplog.records
    assert "renew_leases" in record.getMessage()
    assert "a bug" in record.getMessage()
    assert record.exc_info is not None


async def test_background_work_still_running_is_cancelled_at_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled = asyncio.Event()

    async def watch() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with caplog.at_level(logging.ERROR, logger="sfu_geofence.server.app"):
        async with running(watch()):
            await asyncio.sleep(0)
    assert cancelled.is_set()
    assert caplog.records == []
