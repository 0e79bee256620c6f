"""The loopback guard refuses non-loopback destinations before anything is sent."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvloop

from sfu_geofence import eventloop
from sfu_geofence.netguard import NonLoopbackDestination, is_loopback, loopback_only


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


class _Datagrams(asyncio.DatagramProtocol):
    """Keeps its transport as aioice's StunProtocol does, and what it receives."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


def test_a_guarded_uvloop_carries_loopback_datagrams_and_refuses_others_before_sending() -> None:
    async def main() -> tuple[bytes, NonLoopbackDestination | None]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, uvloop.Loop)
        _, rx = await loop.create_datagram_endpoint(_Datagrams, local_addr=("127.0.0.1", 0))
        # bound to 127.0.0.1: should the guard ever fail, the kernel refuses to route off the machine
        tx_transport, tx = await loop.create_datagram_endpoint(_Datagrams, local_addr=("127.0.0.1", 0))
        tx.transport.sendto(b"ping", rx.transport.get_extra_info("sockname"))
        received = await asyncio.wait_for(rx.received.get(), 5)
        refused = None
        try:
            tx.transport.sendto(b"x", ("192.0.2.2", 9))  # the protocol's own reference, as aioice sends
        except NonLoopbackDestination as exc:
            refused = exc
        with pytest.raises(NonLoopbackDestination):
            tx_transport.sendto(b"x", ("192.0.2.3", 9))  # the transport the loop returned
        tx_transport.close()
        rx.transport.close()
        return received, refused

    with loopback_only() as guard:
        received, refused = eventloop.run(main(), factory=guard.uvloop)
    assert received == b"ping"
    assert refused is not None
    assert guard.violations == ["sendto 192.0.2.2:9", "sendto 192.0.2.3:9"]


def test_a_guarded_uvloop_binds_a_sender_to_a_loopback_address_only_and_it_sends_only_there() -> None:
    # The SFU's egress binds one sender per nominated pair and calls uvloop's C sendto with no check
    # per packet: the check is made once, at binding, and the sender cannot be pointed elsewhere.
    async def main() -> tuple[bytes, Any]:
        loop = asyncio.get_running_loop()
        _, rx = await loop.create_datagram_endpoint(_Datagrams, local_addr=("127.0.0.1", 0))
        _, tx = await loop.create_datagram_endpoint(_Datagrams, local_addr=("127.0.0.1", 0))
        send = tx.transport.sender_to(rx.transport.get_extra_info("sockname"))
        send(b"ping")
        received = await asyncio.wait_for(rx.received.get(), 5)
        with pytest.raises(NonLoopbackDestination):
            tx.transport.sender_to(("192.0.2.4", 9))
        tx.transport.close()
        rx.transport.close()
        return received, send

    with loopback_only() as guard:
        received, send = eventloop.run(main(), factory=guard.uvloop)
    assert received == b"ping"
    assert guard.violations == ["sendto 192.0.2.4:9"]
    with pytest.raises(TypeError):
        send(b"x", ("192.0.2.5", 9))  # the address is bound: no second one can be given


def test_a_guarded_uvloop_refuses_connections_off_loopback() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(NonLoopbackDestination):
            await loop.create_connection(asyncio.Protocol, "192.0.2.2", 9, local_addr=("127.0.0.1", 0))
        with pytest.raises(NonLoopbackDestination):
            await loop.create_datagram_endpoint(
                _Datagrams, local_addr=("127.0.0.1", 0), remote_addr=("192.0.2.4", 9)
            )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.close()  # closed: a failing guard errors with EBADF instead of connecting
        with pytest.raises(NonLoopbackDestination):
            await loop.sock_connect(sock, ("192.0.2.5", 9))

    with loopback_only() as guard:
        eventloop.run(main(), factory=guard.uvloop)
    assert guard.violations == ["connect 192.0.2.2:9", "connect 192.0.2.4:9", "connect 192.0.2.5:9"]
