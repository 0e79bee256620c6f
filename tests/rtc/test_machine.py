"""The demo's ICE policy: this machine's own addresses (and loopback), nobody else's."""

from __future__ import annotations

import ipaddress

from aioice.ice import get_host_addresses

from sfu_geofence.rtc.ice import LOOPBACK_NETWORKS
from sfu_geofence.rtc.machine import machine_addresses, machine_ice_policy


def test_the_machine_addresses_are_its_interfaces_but_loopback_and_link_local() -> None:
    every = {ipaddress.ip_address(a) for a in get_host_addresses(use_ipv4=True, use_ipv6=True)}
    expected = {str(a) for a in every if not (a.is_loopback or a.is_link_local)}
    assert set(machine_addresses()) == expected


def test_ice_binds_loopback_and_every_machine_address_and_accepts_media_from_those_alone() -> None:
    policy = machine_ice_policy()
    addresses = machine_addresses()
    assert policy.bind == ("127.0.0.1", *addresses)
    assert policy.allowed_remote[: len(LOOPBACK_NETWORKS)] == LOOPBACK_NETWORKS
    for address in ("127.0.0.1", "127.86.0.9", "::1", *addresses):
        assert policy.allows_remote(address), address
    # Another machine on any network this one is on: refused, as is an mDNS name.
    neighbours = {str(ipaddress.ip_address(a) + 1) for a in addresses} - set(addresses)
    for address in ("198.51.100.7", "2001:db8:ffff::7", "c0ffee.local", *neighbours):
        assert not policy.allows_remote(address), address


def test_the_loopback_address_can_be_another_one() -> None:
    assert machine_ice_policy(loopback="127.0.0.2").bind[0] == "127.0.0.2"
