"""The loopback guard refuses non-loopback destinations before anything is sent."""

from __future__ import annotations

import socket

import pytest

from sfu_geofence.testing.netguard import NonLoopbackDestination, is_loopback, loopback_only


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.86.3.4", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("192.0.2.2", False),
        ("fd00::2", False),
        ("224.0.0.251", False),
        ("0.0.0.0", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_loopback_udp_round_trip_is_allowed() -> None:
    with loopback_only() as guard:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rx.bind(("127.0.0.1", 0))
            rx.settimeout(2)
            tx.sendto(b"ping", rx.getsockname())
            assert rx.recvfrom(16)[0] == b"ping"
        finally:
            rx.close()
            tx.close()
    assert guard.violations == []


@pytest.mark.parametrize("op", ["sendto", "connect", "connect_ex"])
def test_non_loopback_destination_is_refused_before_sending(op: str) -> None:
    # The socket is closed first: should the guard ever fail, the call errors with EBADF
    # instead of sending a packet off the machine, and the test still fails.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.close()
    destination = ("192.0.2.2", 9)
    args: tuple[object, ...] = (b"x", destination) if op == "sendto" else (destination,)
    with loopback_only() as guard, pytest.raises(NonLoopbackDestination):
        getattr(sock, op)(*args)
    assert guard.violations == [f"{op} 192.0.2.2:9"]
