"""Room policies as values: validated codes, parsing, the one statement of what restricts."""

from __future__ import annotations

import pytest

from sfu_geofence import (
    Enforcement,
    InvalidCountryCode,
    InvalidPolicy,
    Mode,
    RelayedRule,
    RoomPolicy,
    UnknownRule,
    country_code,
)


def test_country_codes_are_iso_alpha_2_normalised_and_hk_mo_tw_are_their_own() -> None:
    assert [country_code(c) for c in (" cn", "HK", "mo", "Tw", "XK")] == ["CN", "HK", "MO", "TW", "XK"]
    for bad in ("CHN", "China", "ZZ", "EU", "C", "", "1A", "Ü1"):
        with pytest.raises(InvalidCountryCode):
            country_code(bad)


def test_a_deny_list_restricts_exactly_its_countries() -> None:
    policy = RoomPolicy.deny("cn", "IR")
    assert policy.countries == frozenset({"CN", "IR"})
    assert [c for c in ("CN", "HK", "MO", "TW", "IR", "US") if policy.restricts(c)] == ["CN", "IR"]
    assert not policy.restricts(None)


def test_an_allow_list_restricts_every_other_country_and_unknown_follows_its_own_rule() -> None:
    policy = RoomPolicy.allow("DE", "FR", unknown=UnknownRule.REFUSE)
    assert [c for c in ("DE", "FR", "CN", "US") if policy.restricts(c)] == ["CN", "US"]
    assert policy.restricts(None)


def test_the_default_policy_restricts_nobody() -> None:
    policy = RoomPolicy()
    assert (policy.mode, policy.unknown, policy.enforcement, policy.relayed) == (
        Mode.DENY,
        UnknownRule.ADMIT,
        Enforcement.ENFORCE,
        RelayedRule.SIGNALING_COUNTRY,
    )
    assert not any(policy.restricts(c) for c in ("CN", "US", None))


def test_invalid_policies_are_refused_with_the_field_named() -> None:
    with pytest.raises(InvalidPolicy, match="'China'"):
        RoomPolicy.deny("China")
    with pytest.raises(InvalidPolicy, match="not an IP network"):
        RoomPolicy(exempt_networks=frozenset({"10.0.0.0/33"}))
    with pytest.raises(InvalidPolicy, match="'block'"):
        RoomPolicy.from_dict({"mode": "block"})
    with pytest.raises(InvalidPolicy, match="unknown policy field"):
        RoomPolicy.from_dict({"countries": ["CN"], "colour": "red"})
    with pytest.raises(InvalidPolicy, match="list of strings"):
        RoomPolicy.from_dict({"countries": "CN"})


def test_a_policy_survives_its_dict_form_and_reads_as_a_rule() -> None:
    policy = RoomPolicy.deny(
        "CN",
        "IR",
        unknown=UnknownRule.REFUSE,
        enforcement=Enforcement.MONITOR,
        exempt_participants=frozenset({"alice"}),
        exempt_networks=frozenset({"198.51.100.7/24"}),
        relayed=RelayedRule.REFUSE,
    )
    assert RoomPolicy.from_dict(policy.to_dict()) == policy
    assert policy.exempt_networks == frozenset({"198.51.100.0/24"})
    assert policy.describe() == (
        "deny CN,IR; unknown refuse; relayed refuse; monitor; exempt 1 participant(s), 198.51.100.0/24"
    )


def test_exemptions_match_identities_and_addresses_in_networks() -> None:
    policy = RoomPolicy.deny(
        "CN", exempt_participants=frozenset({"alice"}), exempt_networks=frozenset({"fd00::/8"})
    )
    assert policy.exempts("alice", None)
    assert policy.exempts(None, "fd00::5")
    assert not policy.exempts("bob", "127.0.0.1")


def test_an_exempt_network_written_ipv4_mapped_is_the_ipv4_network_it_names() -> None:
    # Addresses are decided unmapped (::ffff:a.b.c.d as a.b.c.d): so are exempt networks.
    policy = RoomPolicy.deny("CN", exempt_networks=frozenset({"::ffff:198.51.100.0/120"}))
    assert policy.exempt_networks == frozenset({"198.51.100.0/24"})
    assert policy.exempts(None, "198.51.100.7")
