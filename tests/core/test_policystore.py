"""Policies in force: default and per-room, versioned, surviving a restart."""

from __future__ import annotations

from pathlib import Path

from sfu_geofence import PolicyStore, RoomPolicy


def test_rooms_without_a_policy_of_their_own_get_the_server_default() -> None:
    store = PolicyStore(default=RoomPolicy.deny("IR"))
    assert store.get("any").policy == RoomPolicy.deny("IR")
    assert store.get("any").inherited
    assert (store.get("any").version, store.version) == (0, 0)


def test_every_change_bumps_the_version_and_none_returns_a_room_to_the_default() -> None:
    store = PolicyStore()
    assert store.set("a", RoomPolicy.deny("CN")) == 1
    assert store.set_default(RoomPolicy.deny("RU")) == 2
    assert store.set("b", RoomPolicy.allow("DE")) == 3
    assert store.set("a", None) == 4
    assert store.get("a").policy == RoomPolicy.deny("RU")
    assert (store.get("b").version, store.get("b").inherited) == (3, False)
    assert set(store.rooms()) == {"b"}


def test_acknowledged_changes_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "policies.sqlite"
    store = PolicyStore(path, default=RoomPolicy())
    store.set("a", RoomPolicy.deny("CN", exempt_networks=frozenset({"127.0.0.0/8"})))
    store.set_default(RoomPolicy.deny("RU"))
    store.set("b", RoomPolicy.allow("DE"))
    store.set("b", None)
    store.close()
    store.close()
    reopened = PolicyStore(path, default=RoomPolicy.deny("KP"))  # the persisted default wins
    assert reopened.get("a").policy == RoomPolicy.deny("CN", exempt_networks=frozenset({"127.0.0.0/8"}))
    assert (reopened.get("a").version, reopened.default.policy, reopened.default.version) == (
        1,
        RoomPolicy.deny("RU"),
        2,
    )
    assert set(reopened.rooms()) == {"a"}
    assert reopened.set("c", RoomPolicy()) == 5
    reopened.close()
