"""The transparency report, read from a real audit log that a real geofence wrote."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from sfu_geofence import AuditEvent, AuditLog, EventKind, Geofence, RoomPolicy
from sfu_geofence.core.geofence import EjectRequest
from sfu_geofence.core.transparency import Exclusion, ReportError, read_report
from sfu_geofence.testing.testdb import build_database

LOOPBACK = ["127.86.0.0/16=CN", "127.85.0.0/16=HK", "127.49.0.0/16=DE"]

CN, CN2, HK, DE, US = "127.86.0.1", "127.86.0.2", "127.85.0.1", "127.49.0.1", "127.1.0.1"
TODAY = datetime.now(UTC).date()
DENY_CN = "deny CN; unknown admit; relayed use-signaling-country; enforce"


@pytest.fixture
def audited(tmp_path: Path, loopback_db: Path) -> Path:
    """A day of decisions: refusals, ejections of every trigger, monitor mode, policy changes."""
    path = tmp_path / "audit.sqlite"

    def eject(request: EjectRequest) -> None:
        fence.leave(request.room, request.participant)

    fence = Geofence(eject, database=loopback_db, audit=AuditLog(path, synchronous="NORMAL"))
    fence.admit("town-hall", "p1", CN)
    fence.admit("town-hall", "p2", HK)
    fence.admit("town-hall", "p3", DE)
    fence.set_policy(
        "town-hall", RoomPolicy.from_dict({"countries": ["CN"]}), actor="alice", reason="ticket 1"
    )  # ejects p1
    fence.admit("town-hall", "p4", CN2)  # refused
    fence.admit("town-hall", "p5", CN)  # refused
    fence.eject_by_operator("town-hall", "p3", "disruptive", actor="bob")
    fence.admit("board", "p6", HK)
    fence.admit("board", "p7", US)
    fence.set_policy("board", RoomPolicy.from_dict({"countries": ["HK"], "enforcement": "monitor"}))
    fence.admit("board", "p8", HK)  # would_refuse: nobody excluded
    fence.set_default_policy(RoomPolicy.from_dict({"mode": "allow", "countries": ["US"]}), actor="carol")
    fence.admit("lobby", "p9", DE)  # refused: not allowed
    fence.admit("lobby", "p10", US)
    moved = build_database(loopback_db.parent / "moved.mmdb", [*LOOPBACK, "127.1.0.0/16=DE"])
    fence.reload_database(moved, actor="geoipupdate")  # ejects p10 (US is DE now)
    fence.close()
    return path


def test_refusals_and_ejections_are_counted_by_day_room_country_and_trigger(audited: Path) -> None:
    report = read_report(audited, datetime(2000, 1, 1, tzinfo=UTC))
    assert report.exclusions == (
        Exclusion("refusal", TODAY, "lobby", "DE", "country_not_allowed", 1),
        Exclusion("refusal", TODAY, "town-hall", "CN", "country_denied", 2),
        Exclusion("ejection", TODAY, "lobby", "DE", "database_reloaded", 1),
        Exclusion("ejection", TODAY, "town-hall", "CN", "policy_changed", 1),
        Exclusion("ejection", TODAY, "town-hall", "DE", "operator", 1),
    )
    assert (report.total("refusal"), report.total("ejection")) == (3, 3)
    assert report.by("refusal", "country") == {"CN": 2, "DE": 1}
    assert report.by("ejection", "trigger") == {"database_reloaded": 1, "operator": 1, "policy_changed": 1}
    assert report.by("ejection", "day") == {TODAY.isoformat(): 3}


def test_every_policy_change_is_listed_with_who_made_it_and_why(audited: Path) -> None:
    changes = read_report(audited, datetime(2000, 1, 1, tzinfo=UTC)).policy_changes
    assert [(c.room, c.rule, c.actor, c.reason) for c in changes] == [
        ("town-hall", DENY_CN, "alice", "ticket 1"),
        ("board", "deny HK; unknown admit; relayed use-signaling-country; monitor", None, None),
        (None, "allow US; unknown admit; relayed use-signaling-country; enforce", "carol", None),
    ]
    assert [c.version for c in changes] == [1, 2, 3]


def test_only_events_since_the_given_time_count(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    old = datetime(2026, 1, 10, 23, 59, tzinfo=UTC)
    for when in (old, old + timedelta(minutes=2)):
        log.record(
            AuditEvent(
                EventKind.ADMISSION, "refused", room="r", country="CN", reason="country_denied", time=when
            )
        )
    log.close()
    report = read_report(tmp_path / "audit.sqlite", datetime(2026, 1, 11, tzinfo=UTC))
    assert report.exclusions == (Exclusion("refusal", date(2026, 1, 11), "r", "CN", "country_denied", 1),)
    assert report.to_json()["refusals"]["by_day"] == {"2026-01-11": 1}


def test_a_missing_or_foreign_file_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no audit log"):
        read_report(tmp_path / "audit.sqlite", datetime(2026, 1, 1, tzinfo=UTC))
    (tmp_path / "audit.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ReportError):
        read_report(tmp_path / "audit.sqlite", datetime(2026, 1, 1, tzinfo=UTC))


def test_reading_the_report_changes_nothing_in_the_file(audited: Path) -> None:
    before = audited.read_bytes()
    read_report(audited, datetime(2000, 1, 1, tzinfo=UTC))
    assert audited.read_bytes() == before
    wal = audited.with_name("audit.sqlite-wal")  # a reader of a WAL database may create it, empty
    assert not wal.exists() or wal.stat().st_size == 0


def test_refusals_over_the_audit_rate_are_counted_from_their_summary_rows(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite")
    day = datetime(2026, 2, 3, 10, tzinfo=UTC)
    log.record(
        AuditEvent(EventKind.ADMISSION, "refused", room="r", country="CN", reason="country_denied", time=day)
    )
    summary = AuditEvent(
        EventKind.ADMISSION, "refused", country="CN", reason="country_denied", time=day, count=1999
    )
    log.record(summary)
    log.close()
    report = read_report(tmp_path / "audit.sqlite", datetime(2026, 2, 1, tzinfo=UTC))
    assert report.total("refusal") == 2000
    assert report.by("refusal", "room") == {"(not recorded)": 1999, "r": 1}
