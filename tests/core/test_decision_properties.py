"""Property: a participant is refused exactly when its country is restricted by the policy in force."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu_geofence import EjectRequest, Enforcement, Geofence, Mode, RoomPolicy, UnknownRule, Verdict
from sfu_geofence.testing.testdb import build_database

COUNTRIES = ["CN", "HK", "MO", "TW", "US", "DE", "IR", "RU", "GB", "FR"]
ADDRESS = {cc: f"127.{100 + i}.0.1" for i, cc in enumerate(COUNTRIES)}
UNKNOWN_ADDRESS = "127.99.0.1"
IDENTITIES = ["alice", "bob", "carol", None]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "countries.mmdb"
    return build_database(path, [f"127.{100 + i}.0.0/16={cc}" for i, cc in enumerate(COUNTRIES)])


policies = st.builds(
    RoomPolicy,
    mode=st.sampled_from(Mode),
    countries=st.frozensets(st.sampled_from(COUNTRIES)),
    unknown=st.sampled_from(UnknownRule),
    enforcement=st.sampled_from(Enforcement),
    exempt_participants=st.frozensets(st.sampled_from(["alice", "bob", "carol"])),
    exempt_networks=st.frozensets(st.sampled_from(["127.100.0.0/16", "127.103.0.0/24", "127.99.0.0/16"])),
)
countries = st.sampled_from([*COUNTRIES, None])


def address_of(country: str | None) -> str:
    return ADDRESS[country] if country else UNKNOWN_ADDRESS


def restricted(policy: RoomPolicy, country: str | None, identity: str | None) -> bool:
    """The specification, written independently of the implementation."""
    if identity is not None and identity in policy.exempt_participants:
        return False
    address = address_of(country)
    if any(ipaddress.ip_address(address) in ipaddress.ip_network(net) for net in policy.exempt_networks):
        return False
    if country is None:
        return policy.unknown == "refuse"
    listed = country in policy.countries
    return listed if policy.mode == "deny" else not listed


@pytest.fixture(scope="module")
def geofence(database: Path) -> Iterator[Geofence]:
    fence = Geofence(lambda request: None, database=database)
    yield fence
    fence.close()


@settings(max_examples=200, deadline=None)
@given(policy=policies, country=countries, identity=st.sampled_from(IDENTITIES))
def test_an_address_is_refused_exactly_when_its_country_is_restricted(
    geofence: Geofence, policy: RoomPolicy, country: str | None, identity: str | None
) -> None:
    version = geofence.set_policy("room", policy)
    decision = geofence.decide("room", address_of(country), identity)
    expected = restricted(policy, country, identity)
    assert (decision.verdict is Verdict.REFUSE) == expected
    assert decision.admitted == (not expected or policy.enforcement == "monitor")
    assert (decision.country, decision.policy_version) == (country, version)


@settings(max_examples=60, deadline=None)
@given(
    people=st.lists(st.tuples(countries, st.sampled_from(IDENTITIES)), min_size=1, max_size=8),
    changes=st.lists(policies, min_size=1, max_size=5),
)
def test_policy_changes_eject_exactly_the_participants_they_restrict_each_once(
    database: Path, people: list[tuple[str | None, str | None]], changes: list[RoomPolicy]
) -> None:
    requests: list[EjectRequest] = []

    def eject(request: EjectRequest) -> None:
        requests.append(request)
        fence.leave(request.room, request.participant)  # a host may answer at once

    fence = Geofence(eject, database=database)
    try:
        for n, (country, identity) in enumerate(people):
            assert fence.admit(
                "room", f"p{n}", ADDRESS[country] if country else UNKNOWN_ADDRESS, identity
            ).admitted
        expected: list[str] = []
        for policy in changes:
            fence.set_policy("room", policy)
            for n, (country, identity) in enumerate(people):
                if (
                    f"p{n}" not in expected
                    and policy.enforcement == "enforce"
                    and restricted(policy, country, identity)
                ):
                    expected.append(f"p{n}")
        assert [r.participant for r in requests] == expected
        remaining = {p.participant for p in fence.participants("room")}
        assert remaining == {f"p{n}" for n in range(len(people))} - set(expected)
    finally:
        fence.close()
