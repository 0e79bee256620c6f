"""The state directory: where policies and the audit log live, and how hard the audit syncs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sfu_geofence import AuditEvent, EventKind, RoomPolicy
from sfu_geofence.server.state import StateConfig


def test_the_state_directory_is_created_private_and_holds_both_files(tmp_path: Path) -> None:
    state = StateConfig(tmp_path / "var" / "sfu-geofence")
    policies = state.open_policies(default=RoomPolicy.deny("CN"))
    audit = state.open_audit()
    audit.record(AuditEvent(EventKind.POLICY, "changed"))
    policies.close()
    audit.close()
    assert state.directory is not None
    assert stat.S_IMODE(state.directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in state.directory.glob("*.sqlite")) == ["audit.sqlite", "policies.sqlite"]
    reopened = state.open_policies()
    assert reopened.default.policy == RoomPolicy.deny("CN"), "the seeded default persisted"
    reopened.close()


def test_without_a_directory_nothing_is_kept(tmp_path: Path) -> None:
    state = StateConfig()
    assert (state.policies_path, state.audit_path, state.audit_synchronous) == (None, None, "NORMAL")
    store = state.open_policies()
    store.set("r", RoomPolicy.deny("CN"))
    store.close()
    assert state.open_policies().rooms() == {}


def test_the_audit_sync_setting_is_full_or_normal() -> None:
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        StateConfig(audit_synchronous="OFF")  # type: ignore[arg-type]
