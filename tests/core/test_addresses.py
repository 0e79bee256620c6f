"""One reading of an address for every layer: zone ids dropped, IPv4-mapped addresses as IPv4."""

from __future__ import annotations

import ipaddress

import pytest

from sfu_geofence.core.addresses import parse_address, unmapped


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("::ffff:8.8.8.8", "8.8.8.8"),
        ("::FFFF:127.0.0.1", "127.0.0.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:10.0.0.5%3", "10.0.0.5"),
        ("2001:db8::1", "2001:db8::1"),
        ("198.18.0.1", "198.18.0.1"),
    ],
)
def test_an_address_is_read_as_the_one_it_names(written: str, meant: str) -> None:
    assert parse_address(written) == ipaddress.ip_address(meant)


@pytest.mark.parametrize("text", ["localhost", "", "1.2.3.4.5", "%eth0"])
def test_a_name_or_garbage_is_not_an_address(text: str) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        parse_address(text)


def test_unmapping_leaves_a_real_ipv6_address_alone() -> None:
    assert unmapped(ipaddress.IPv6Address("2001:db8::ffff:1")) == ipaddress.IPv6Address("2001:db8::ffff:1")
    assert unmapped(ipaddress.IPv6Address("::ffff:1.2.3.4")) == ipaddress.IPv4Address("1.2.3.4")
