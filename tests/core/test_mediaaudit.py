"""Which of one session's media reports the audit keeps: each distinct entry once, up to a limit;
beyond it, counts per decision, due at most once an interval."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sfu_geofence import Geofence, RoomPolicy
from sfu_geofence.core.decision import Decision
from sfu_geofence.core.mediaaudit import MediaAuditLimit, MediaAudits, Report


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def decisions(loopback_db: Path) -> tuple[Decision, Decision]:
    """An admitting (US) and a refusing (CN) decision, as the geofence makes them."""
    fence = Geofence(lambda request: None, database=loopback_db)
    fence.set_policy("r", RoomPolicy.deny("CN"))
    admitted, refused = fence.decide("r", "127.1.0.1"), fence.decide("r", "127.86.0.1")
    fence.close()
    return admitted, refused


def test_each_entry_is_new_once_then_seen_and_beyond_the_limit_counted(
    decisions: tuple[Decision, Decision],
) -> None:
    us, _ = decisions
    audits = MediaAudits(MediaAuditLimit(distinct=2))
    assert audits.report(("127.1.0.1", False, us)) is Report.NEW
    assert audits.report(("127.1.0.1", True, us)) is Report.NEW  # judged otherwise: another entry
    assert audits.report(("127.1.0.1", False, us)) is Report.SEEN
    assert audits.report(("127.1.0.2", False, us)) is Report.COUNTED
    assert audits.report(("127.1.0.1", True, us)) is Report.SEEN  # known entries stay known


def test_counts_are_due_once_an_interval_per_decision_and_forgotten_once_written(
    decisions: tuple[Decision, Decision],
) -> None:
    us, cn = decisions
    clock = Clock()
    audits = MediaAudits(MediaAuditLimit(distinct=1, summary_interval=1.0), clock)
    audits.report(("127.1.0.1", False, us))
    for i in range(3):
        audits.report((f"127.1.0.{i + 2}", False, us))
    audits.report(("127.86.0.1", False, cn))
    clock.now = 0.5
    assert audits.due() == []
    clock.now = 1.0
    assert sorted(audits.due(), key=str) == sorted([(us, 3), (cn, 1)], key=str)
    assert audits.due(force=True) == []
    audits.report(("127.1.0.9", False, us))
    assert audits.due(force=True) == [(us, 1)]  # at the session's end, whatever the interval
    assert "more than 1 distinct per session" in audits.detail()


def test_beyond_max_shapes_decisions_are_counted_by_outcome(decisions: tuple[Decision, Decision]) -> None:
    us, cn = decisions
    audits = MediaAudits(MediaAuditLimit(distinct=1, max_shapes=1))
    audits.report(("127.1.0.1", False, us))
    audits.report(("127.1.0.2", False, us))
    audits.report(("127.86.0.1", False, cn))
    audits.report(("127.86.0.2", False, replace(cn, policy_version=cn.policy_version + 1)))
    assert audits.due(force=True) == [(us, 1), ("refused", 2)]


@pytest.mark.parametrize("bad", [{"distinct": 0}, {"summary_interval": 0}, {"max_shapes": 0}])
def test_a_limit_must_be_positive(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        MediaAuditLimit(**bad)  # type: ignore[arg-type]
