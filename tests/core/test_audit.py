"""The audit log: every event written durably and readable back with filters."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sfu_geofence import AuditEvent, AuditLog, ClosedError, EventKind


def test_events_are_committed_and_read_back_from_a_new_connection(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path)
    stored = log.record(
        AuditEvent(
            EventKind.ADMISSION,
            "refused",
            room="r",
            participant="p1",
            address="127.86.0.1",
            country="CN",
            source="country_code",
            database="DB-IP Country Lite 2026-06-01",
            rule="deny CN",
            reason="country_denied",
            policy_version=3,
        )
    )
    assert stored.id == 1
    assert stored.time is not None
    # Another process (an operator's tool) sees it while the log is still open.
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT participant, country, outcome FROM audit").fetchall() == [
            ("p1", "CN", "refused")
        ]
    log.close()
    reopened = AuditLog(path)
    assert reopened.events() == [stored]
    reopened.close()


def test_events_are_filtered_by_room_participant_kind_outcome_time_and_limit() -> None:
    log = AuditLog()
    t0 = datetime(2026, 11, 25, 12, tzinfo=UTC)
    for n, (room, outcome) in enumerate(
        [("a", "admitted"), ("b", "refused"), ("a", "refused"), ("a", "admitted")]
    ):
        log.record(
            AuditEvent(
                EventKind.ADMISSION, outcome, room=room, participant=f"p{n}", time=t0.replace(minute=n)
            )
        )
    log.record(
        AuditEvent(EventKind.EJECTION, "requested", room="a", participant="p0", detail="policy_changed")
    )

    def ids(events: list[AuditEvent]) -> list[int | None]:
        return [e.id for e in events]

    assert ids(log.events(room="a")) == [1, 3, 4, 5]
    assert ids(log.events(room="a", kind=EventKind.ADMISSION, outcome="refused")) == [3]
    assert ids(log.events(participant="p0")) == [1, 5]
    assert ids(log.events(since=t0.replace(minute=2))) == [3, 4, 5]
    assert ids(log.events(limit=2)) == [4, 5]
    assert ids(log.events(after_id=4)) == [5]
    assert ids(log.events(after_id=1, limit=2)) == [2, 3], "paging forward never skips events"
    assert ids(log.events(room="a", after_id=1, limit=2)) == [3, 4]
    log.close()
    with pytest.raises(ClosedError):
        log.events()


def test_a_log_written_before_the_actor_column_existed_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with sqlite3.connect(path) as old:  # the schema of the previous version, with one event
        old.execute(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, outcome TEXT, "
            "room TEXT, participant TEXT, address TEXT, country TEXT, source TEXT, database TEXT, "
            "rule TEXT, reason TEXT, policy_version INTEGER, detail TEXT, time TEXT)"
        )
        old.execute(
            "INSERT INTO audit (kind, outcome, room, time) VALUES ('policy', 'changed', 'r', ?)",
            (datetime(2026, 1, 2, tzinfo=UTC).isoformat(),),
        )
    old.close()
    log = AuditLog(path)
    log.record(AuditEvent(EventKind.POLICY, "changed", room="r", actor="alice", reason="why"))
    assert [(e.id, e.actor, e.reason) for e in log.events()] == [(1, None, None), (2, "alice", "why")]
    log.close()


def test_pruning_deletes_the_oldest_events_in_bounded_batches_and_keeps_the_rest(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.sqlite", synchronous="NORMAL")
    day = datetime(2026, 3, 1, tzinfo=UTC)
    for n in range(25):
        log.record(
            AuditEvent(EventKind.ADMISSION, "admitted", participant=f"p{n}", time=day + timedelta(days=n))
        )
    cutoff = day + timedelta(days=12)
    assert [log.prune(cutoff, batch=5) for _ in range(4)] == [5, 5, 2, 0]
    kept = log.events()
    assert [e.participant for e in kept] == [f"p{n}" for n in range(12, 25)]
    assert all(e.time is not None and e.time >= cutoff for e in kept)
    log.close()
    with pytest.raises(ClosedError):
        log.prune(cutoff)


FULL_DISK = Path(__file__).with_name("full_disk_process.py")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare to mount a small file system in a namespace of its own",
)
def test_an_audit_log_that_fills_its_disk_stops_short_and_policy_changes_still_commit(
    loopback_db: Path, tmp_path: Path
) -> None:
    """Policies and the audit share a directory (``--state-dir``), not the failure of a full disk."""
    state = tmp_path / "state"
    state.mkdir()
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, str(FULL_DISK), str(state)]  # noqa: RUF005
        + [str(loopback_db), str(256 * 1024)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["audit_failures"] >= 1, outcome  # the log did fill up to its reserve
    assert outcome["policy"] == 1, outcome  # and the policy change was committed all the same
    assert outcome["free"] < 256 * 1024, outcome


def test_a_log_written_before_the_count_column_is_read_and_extended(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, outcome TEXT, room TEXT,"
            " participant TEXT, address TEXT, country TEXT, source TEXT, database TEXT, rule TEXT,"
            " reason TEXT, policy_version INTEGER, detail TEXT, time TEXT)"
        )
        old.execute(
            "INSERT INTO audit (kind, outcome, time)"
            " VALUES ('database', 'loaded', '2026-11-25T12:00:00+00:00')"
        )
    log = AuditLog(path)
    log.record(AuditEvent(EventKind.ADMISSION, "refused", count=7))
    assert [(e.kind, e.count) for e in log.events()] == [(EventKind.DATABASE, 1), (EventKind.ADMISSION, 7)]
    log.close()
