"""The load scenario: its grammar, where participants go, and who must be refused, ejected or killed."""

from __future__ import annotations

import ipaddress

import pytest

from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.loadtest.scenario import (
    AddStep,
    CountryCount,
    KillStep,
    PolicyStep,
    ScenarioError,
    parse_countries,
    parse_networks,
    parse_step,
    plan_scenario,
)


def test_countries_parse_in_order_with_their_counts() -> None:
    assert parse_countries("US:6, de:2,HK:1,CN:3") == (
        CountryCount("US", 6),
        CountryCount("DE", 2),
        CountryCount("HK", 1),
        CountryCount("CN", 3),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("US6", "'US6' is not CC:N"),
        ("US:x", "'US:x' is not CC:N"),
        ("ZZ:1", "'ZZ' is not an assigned ISO 3166-1 alpha-2 country code"),
        ("China:1", "not an ISO 3166-1 alpha-2 code"),
        ("US:0", "US needs at least 1 participant"),
        ("US:1,US:2", "US is given twice"),
    ],
)
def test_a_bad_countries_argument_is_named_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match="--countries") as error:
        parse_countries(text)
    assert message in str(error.value)


def test_steps_parse_into_policy_kill_and_add_steps() -> None:
    assert parse_step("10s:deny:CN") == PolicyStep(10.0, "deny", ("CN",), None, "10s:deny:CN")
    assert parse_step("12.5s:allow:us,DE@room-2") == PolicyStep(
        12.5, "allow", ("US", "DE"), ("room-2",), "12.5s:allow:us,DE@room-2"
    )
    assert parse_step("1500ms:monitor") == PolicyStep(1.5, "monitor", (), None, "1500ms:monitor")
    assert parse_step("16:enforce@room-1,room-2").rooms == ("room-1", "room-2")  # type: ignore[union-attr]
    assert parse_step("17s:open") == PolicyStep(17.0, "open", (), None, "17s:open")
    assert parse_step("18s:kill:cn-2") == KillStep(18.0, "cn-2", "18s:kill:cn-2")
    assert parse_step("18s:kill:US") == KillStep(18.0, "US", "18s:kill:US")
    assert parse_step("20s:add:CN:2@room-1") == AddStep(20.0, "CN", 2, "room-1", "20s:add:CN:2@room-1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deny:CN", "'deny' is not a time"),
        ("10s", "expected TIME:ACTION"),
        ("10x:deny:CN", "'10x' is not a time"),
        (
            "10s:ban:CN",
            "unknown action 'ban' (expected one of deny, allow, open, monitor, enforce, kill, add)",
        ),
        ("10s:deny", "deny needs countries"),
        ("10s:deny:XX", "'XX' is not an assigned ISO 3166-1 alpha-2 country code"),
        ("10s:monitor:CN", "monitor takes no argument"),
        ("10s:kill:somebody", "kill needs a participant name (e.g. cn-2) or a country code (CN)"),
        ("10s:kill:cn-1@room-1", "kill names a participant, not a room"),
        ("10s:add:CN", "expected add:CC:N with N >= 1"),
        ("10s:add:CN:0", "expected add:CC:N with N >= 1"),
        ("10s:add:CN:1@room-1,room-2", "add takes one room"),
        ("10s:deny:CN@", "empty room name"),
    ],
)
def test_a_bad_step_is_named_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as error:
        parse_step(text)
    assert str(error.value).startswith(f"--at {text!r}: ")
    assert message in str(error.value)


def test_networks_must_stay_on_loopback_and_not_overlap() -> None:
    assert parse_networks(["CN=127.86.0.0/16"]) == {"CN": ipaddress.IPv4Network("127.86.0.0/16")}
    with pytest.raises(ScenarioError, match="must stay on loopback"):
        parse_networks(["CN=192.0.2.0/24"])
    with pytest.raises(ScenarioError, match="expected CC=NETWORK"):
        parse_networks(["127.86.0.0/16"])
    with pytest.raises(ScenarioError, match=r"CN 127\.86\.0\.0/16 and US 127\.86\.1\.0/24 overlap"):
        plan_scenario(
            parse_countries("US:1,CN:1"),
            1,
            (),
            duration=5,
            networks=parse_networks(["CN=127.86.0.0/16", "US=127.86.1.0/24"]),
        )


def test_participants_are_spread_over_rooms_round_robin_each_on_an_address_of_its_country() -> None:
    plan = plan_scenario(parse_countries("US:6,DE:2,HK:1,CN:3"), 2, (), duration=25)
    assert plan.rooms == ("room-1", "room-2")
    assert plan.networks["US"] == ipaddress.IPv4Network("127.10.0.0/16")
    assert plan.networks["CN"] == ipaddress.IPv4Network("127.13.0.0/16")
    placed = {room: [p.name for p in plan.peers if p.room == room] for room in plan.rooms}
    assert placed == {
        "room-1": ["us-1", "us-3", "us-5", "de-1", "hk-1", "cn-2"],
        "room-2": ["us-2", "us-4", "us-6", "de-2", "cn-1", "cn-3"],
    }
    for peer in plan.peers:
        assert ipaddress.ip_address(peer.address) in plan.networks[peer.country]
    assert len({p.address for p in plan.peers}) == 12


def test_deny_cn_in_every_room_expects_exactly_the_cn_participants_ejected() -> None:
    plan = plan_scenario(parse_countries("US:6,DE:2,HK:1,CN:3"), 2, [parse_step("10s:deny:CN")], duration=25)
    outcomes = {name: e.outcome for name, e in plan.expected.items()}
    assert sorted(n for n, o in outcomes.items() if o == "ejected") == ["cn-1", "cn-2", "cn-3"]
    assert all(o == "stays" for n, o in outcomes.items() if not n.startswith("cn-"))  # HK is not CN
    assert plan.steps[0].expected_removed == ("cn-1", "cn-2", "cn-3")
    assert set(plan.steps[0].policies) == {"room-1", "room-2"}


def test_a_whole_scenario_plays_policies_kills_and_additions_in_time_order() -> None:
    steps = [
        parse_step(text)
        for text in (
            "20s:add:CN:1",  # given out of order: played by time
            "10s:monitor@room-1",
            "12s:deny:CN",
            "15s:allow:US,DE@room-2",
            "18s:kill:US",
            "19s:enforce@room-1",
            "21s:open",
            "22s:add:CN:1@room-2",
        )
    ]
    plan = plan_scenario(parse_countries("US:2,DE:1,CN:2,FR:1"), 2, steps, duration=30)
    # room-1: us-1, de-1, cn-2; room-2: us-2, cn-1, fr-1
    expected = {name: (e.outcome, e.step) for name, e in plan.expected.items()}
    assert expected == {
        "cn-2": ("ejected", 4),  # deny CN reached room-1 in monitor mode: ejected only by "enforce"
        "cn-1": ("ejected", 1),  # deny CN, enforced in room-2
        "fr-1": ("ejected", 2),  # allow US,DE
        "us-2": ("killed", 3),  # the last-placed US participant still in a room
        "cn-3": ("refused", 5),  # added at 20 s to room-1 (round robin): CN denied there
        "cn-4": ("stays", None),  # added at 22 s after "open"
        "us-1": ("stays", None),
        "de-1": ("stays", None),
    }
    assert [p.step.at for p in plan.steps] == [10, 12, 15, 18, 19, 20, 21, 22]
    assert plan.kill_targets == {"us-2"}
    assert plan.peer("cn-3").room == "room-1"
    assert plan.peer("cn-4").address == "127.12.0.4"
    assert plan.initial_policies == {"room-1": RoomPolicy(), "room-2": RoomPolicy()}


def test_a_policy_in_force_before_the_run_refuses_at_join_and_its_exemptions_are_kept() -> None:
    initial = {"room-1": RoomPolicy.deny("CN", exempt_networks=frozenset({"127.11.0.2/32"}))}
    plan = plan_scenario(
        parse_countries("US:1,CN:2"), 1, [parse_step("5s:deny:CN,US")], duration=10, initial_policies=initial
    )
    outcomes = {name: (e.outcome, e.step) for name, e in plan.expected.items()}
    assert outcomes == {"cn-1": ("refused", None), "cn-2": ("stays", None), "us-1": ("ejected", 0)}
    assert plan.steps[0].policies["room-1"].exempt_networks == frozenset({"127.11.0.2/32"})


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["30s:deny:CN"], "at 30 s, not before --duration 30 s"),
        (["5s:deny:CN@room-9"], "no room 'room-9' (rooms are room-1, room-2)"),
        (["5s:kill:cn-7"], "cn-7 is not expected in a room at 5 s"),
        (["5s:deny:CN", "6s:kill:CN"], "no CN participant is expected in a room then"),
        (["5s:kill:us-1", "6s:kill:us-1"], "us-1 is not expected in a room at 6 s"),
    ],
)
def test_an_impossible_scenario_is_refused_before_anything_starts(steps: list[str], message: str) -> None:
    with pytest.raises(ScenarioError) as error:
        plan_scenario(parse_countries("US:2,CN:1"), 2, [parse_step(s) for s in steps], duration=30)
    assert message in str(error.value)
