"""``--audit-retention DAYS``: events older than the retention are deleted, in bounded batches."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sfu_geofence import AuditEvent, AuditLog, EventKind
from sfu_geofence.server.retention import BATCH, AuditRetention
from sfu_geofence.server.state import StateConfig
from sfu_geofence.testing.process import spawn_module, stop

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _fill(log: AuditLog, count: int, age: timedelta) -> None:
    for n in range(count):
        log.record(AuditEvent(EventKind.ADMISSION, "refused", room="r", participant=f"p{n}", time=NOW - age))


async def test_events_older_than_the_retention_are_deleted_however_many_and_the_others_kept(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path / "audit.sqlite", synchronous="NORMAL")
    _fill(log, 2 * BATCH + 17, timedelta(days=31))
    _fill(log, 5, timedelta(days=29))
    retention = AuditRetention(log, 30, clock=lambda: NOW)
    assert await retention.prune() == 2 * BATCH + 17
    assert len(log.events()) == 5
    assert await retention.prune() == 0
    log.close()


@pytest.mark.parametrize("days", [0, -1])
def test_a_retention_that_is_not_positive_is_refused(days: float) -> None:
    with pytest.raises(ValueError, match="positive number of days"):
        StateConfig(audit_retention_days=days)


async def test_serve_with_audit_retention_prunes_the_state_directory_at_start_up(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    log = AuditLog(tmp_path / "audit.sqlite", synchronous="NORMAL")
    for age in (400, 91, 89, 1):
        log.record(
            AuditEvent(EventKind.POLICY, "changed", room=f"aged-{age}", time=now - timedelta(days=age))
        )
    log.close()
    process = await spawn_module(
        "sfu_geofence", "serve", "--loopback-only", "--port", "0", "--state-dir", str(tmp_path),
        "--audit-retention", "90",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 30)).startswith(b"listening on")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await stop(process)
    log = AuditLog(tmp_path / "audit.sqlite")
    rooms = [e.room for e in log.events(kind=EventKind.POLICY)]
    log.close()
    assert rooms == ["aged-89", "aged-1"]
