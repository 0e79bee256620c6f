"""The LAN namespace: lo plus a dummy interface of test addresses, and what the guard lets through there."""

from __future__ import annotations

import socket

import pytest

from sfu_geofence.netguard import LoopbackGuard, NonLoopbackDestination
from sfu_geofence.testing.netns import (
    LAN_INTERFACE,
    LAN_IPV4,
    LAN_IPV6,
    Namespace,
    add_lan_address,
    current_namespace,
    in_lan_namespace,
    is_own_lan_address,
)


def test_outside_a_lan_namespace_no_address_is_an_own_lan_address() -> None:
    if in_lan_namespace():
        pytest.skip("this process runs in a LAN namespace")
    assert not is_own_lan_address(LAN_IPV4)
    assert not is_own_lan_address("192.0.2.2")
    with pytest.raises(RuntimeError, match="only to a LAN namespace"):
        add_lan_address("198.18.0.9")


@pytest.mark.lan
def test_the_lan_namespace_has_lo_and_the_dummy_holding_its_two_test_addresses() -> None:
    assert current_namespace() is Namespace.LAN
    assert sorted(name for _, name in socket.if_nameindex()) == sorted(["lo", LAN_INTERFACE])
    assert is_own_lan_address(LAN_IPV4)
    assert is_own_lan_address(LAN_IPV6)
    assert not is_own_lan_address("198.18.0.2"), "in the range, but not held"
    assert not is_own_lan_address("192.0.2.2"), "not a test range"
    assert not is_own_lan_address("198.18.0.77")
    add_lan_address("198.18.0.77")
    assert is_own_lan_address("198.18.0.77"), "added: the earlier answer is forgotten"
    with pytest.raises(RuntimeError, match="from"):
        add_lan_address("192.0.2.77")


@pytest.mark.lan
def test_the_session_guard_lets_the_namespaces_own_addresses_through_and_nothing_else(
    loopback_guard: LoopbackGuard,
) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind((LAN_IPV4, 0))
        rx.settimeout(2)
        tx.sendto(b"ping", rx.getsockname())
        assert rx.recvfrom(16)[0] == b"ping"
        tx.close()  # should the guard ever fail, the send errors (EBADF) instead of leaving
        with pytest.raises(NonLoopbackDestination):
            tx.sendto(b"x", ("198.18.0.2", 9))
        assert loopback_guard.violations == ["sendto 198.18.0.2:9"]
    finally:
        loopback_guard.violations.clear()
        rx.close()
        tx.close()
