"""Refusals are audited one row each up to a rate, then counted in summary rows: the log stays bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu_geofence import AuditEvent, AuditLog, EventKind, Geofence, RoomPolicy
from sfu_geofence.core.auditrate import AuditRate, RefusalCounter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refusal(country: str, reason: str = "country_denied") -> AuditEvent:
    return AuditEvent(
        EventKind.ADMISSION, "refused", room="r", participant="p", country=country, reason=reason
    )


def test_refusals_beyond_the_burst_are_counted_by_shape_and_summarised_once_the_interval_has_passed() -> None:
    clock = Clock()
    counter = RefusalCounter(AuditRate(refusals_per_second=1, burst=2, summary_interval=1), clock)
    assert [counter.record_one() for _ in range(3)] == [True, True, False]
    for country in ["CN", "CN", "IR"]:
        counter.count(refusal(country))
    assert counter.summaries() == []  # not due yet
    clock.now = 1.0
    assert counter.record_one()  # the bucket refilled one row's worth
    rows = counter.summaries()
    assert sorted((r.country, r.count, r.room, r.participant, r.address) for r in rows) == [
        ("CN", 2, None, None, None),
        ("IR", 1, None, None, None),
    ]
    assert all(r.outcome == "refused" and r.reason == "country_denied" for r in rows)
    assert counter.summaries(force=True) == []  # forgotten once handed out
    assert counter.suppressed == 3


def test_the_shapes_counted_at_once_are_bounded() -> None:
    counter = RefusalCounter(AuditRate(max_shapes=2))
    for n in range(100):
        counter.count(refusal("CN", reason=f"r{n}"))
    rows = counter.summaries(force=True)
    assert sorted((r.reason or "", r.count) for r in rows) == [("", 98), ("r0", 1), ("r1", 1)]


def test_a_flood_of_refusals_writes_a_bounded_number_of_rows_that_still_add_up(
    loopback_db: Path, tmp_path: Path
) -> None:
    path = tmp_path / "audit.sqlite"
    fence = Geofence(
        lambda request: None,
        database=loopback_db,
        audit=AuditLog(path),
        audit_rate=AuditRate(refusals_per_second=0.001, burst=5),
    )
    fence.set_policy("r", RoomPolicy.deny("CN"))
    for n in range(500):
        assert not fence.admit("r", f"cn-{n}", "127.86.0.1").admitted
    assert fence.admit("r", "us", "127.1.0.1").admitted
    assert fence.refusals_counted == 495
    fence.close()
    log = AuditLog(path)
    admissions = log.events(kind=EventKind.ADMISSION)
    log.close()
    assert len(admissions) == 5 + 1 + 1  # five one by one, the admitted one, one summary
    assert sum(e.count for e in admissions if e.outcome == "refused") == 500
    [summary] = [e for e in admissions if e.count > 1]
    assert (summary.participant, summary.address, summary.country, summary.count) == (None, None, "CN", 495)


def test_a_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        AuditRate(refusals_per_second=0)
