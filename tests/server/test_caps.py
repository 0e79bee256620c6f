"""Admission control: what one address may hold and how fast it may join, refused before allocation.

The gate's bookkeeping is specified with a clock the test turns; what a client sees over a real
WebSocket (an HTTP status before the upgrade, ``refused`` and a close code at join) against a real
server with small caps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from sfu_geofence.protocol import Join, Joined, RefusedMessage, encode, parse_server_message
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.app import GATE
from sfu_geofence.server.caps import AdmissionGate, Cap, Caps
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.server import served_on_loopback
from sfu_geofence.testing.wait import eventually


class Clock:
    """Seconds the test decides."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the gate ----------------------------------------------------------------------------------------


def test_a_burst_of_joins_is_allowed_then_the_rate_and_a_refill_lets_the_next_one_in() -> None:
    clock = Clock()
    gate = AdmissionGate(Caps(join_burst=3, join_rate=2.0), clock)
    assert [gate.check_join("127.0.0.9") for _ in range(4)] == [None, None, None, Cap.JOIN_RATE]
    assert gate.check_join("127.0.0.10") is None  # another address has its own bucket
    clock.now += 0.5  # one token at 2 per second
    assert [gate.check_join("127.0.0.9") for _ in range(2)] == [None, Cap.JOIN_RATE]
    assert gate.refusals[Cap.JOIN_RATE] == 2


def test_an_ipv6_network_counts_as_one_address_and_a_mapped_ipv4_as_the_ipv4_one() -> None:
    gate = AdmissionGate(Caps(websockets_per_address=2))
    assert gate.open_websocket("2001:db8:1:2::1") is None
    assert gate.open_websocket("2001:db8:1:2:ffff::9") is None
    assert gate.open_websocket("2001:db8:1:2::3") is Cap.WEBSOCKETS_PER_ADDRESS
    assert gate.open_websocket("2001:db8:1:3::1") is None  # the next /64
    assert gate.key("::ffff:127.0.0.5") == gate.key("127.0.0.5") == "127.0.0.5"
    assert AdmissionGate(Caps(ipv6_prefix=128)).key("2001:db8::1") == "2001:db8::1/128"


def test_websockets_are_counted_per_address_and_in_total_and_released() -> None:
    gate = AdmissionGate(Caps(websockets=3, websockets_per_address=2))
    assert [gate.open_websocket("127.0.0.1") for _ in range(3)] == [None, None, Cap.WEBSOCKETS_PER_ADDRESS]
    assert gate.open_websocket("127.0.0.2") is None
    assert gate.open_websocket("127.0.0.3") is Cap.WEBSOCKETS
    gate.close_websocket("127.0.0.1")
    assert gate.open_websocket("127.0.0.3") is None
    assert gate.websockets == 3


def test_refused_attempts_from_ever_new_addresses_leave_nothing_behind() -> None:
    """Nothing grows with refusals: usage exists only while held, buckets are bounded and forgotten."""
    clock = Clock()
    gate = AdmissionGate(Caps(websockets=1, join_burst=1, join_rate=1.0, tracked_addresses=100), clock)
    assert gate.open_websocket("127.1.0.1") is None
    for n in range(10_000):
        address = f"127.2.{n // 256}.{n % 256}"
        assert gate.open_websocket(address) is Cap.WEBSOCKETS
        gate.check_join(address)
        gate.check_join(address)
    assert gate.tracked <= 101
    clock.now += 1.0  # every bucket is full again: the same as none
    gate.check_join("127.3.0.1")
    assert gate.tracked == 2  # the one open WebSocket's address, the last join's bucket
    gate.close_websocket("127.1.0.1")
    assert gate.websockets == 0


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        (Cap.JOIN_RATE, "Too many joins from your address: wait a few seconds and try again."),
        (Cap.PENDING_JOINS_PER_ADDRESS, "Too many sessions from your address: close one and try again."),
        (Cap.PARTICIPANTS, "The server is at capacity: try again later."),
    ],
)
def test_a_refused_client_is_told_what_to_do_and_nothing_about_anyone_else(cap: Cap, expected: str) -> None:
    assert cap.message == expected


def test_caps_below_one_are_refused_with_the_name() -> None:
    with pytest.raises(ValueError, match="pending_joins_per_address must be at least 1"):
        Caps(pending_joins_per_address=0)
    with pytest.raises(ValueError, match="join_rate must be positive"):
        Caps(join_rate=0)


# -- over real WebSockets ----------------------------------------------------------------------------


async def _handshake_status(url: str, address: str) -> int:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            async with http.ws_connect(url):
                return 101
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status


async def test_a_websocket_over_the_address_cap_is_answered_429_before_the_upgrade() -> None:
    async with served_on_loopback(ServerConfig(caps=Caps(websockets_per_address=2))) as served:
        held = [SyntheticPeer(served.url, "r", "127.0.80.1") for _ in range(2)]
        try:
            for peer in held:
                await peer.connect()
            assert await _handshake_status(served.url, "127.0.80.1") == 429
            assert await _handshake_status(served.url, "127.0.80.2") == 101
            await held[0].close()
            await eventually(lambda: None if served.app[GATE].websockets == 1 else "not released", within=10)
            assert await _handshake_status(served.url, "127.0.80.1") == 101
        finally:
            for peer in held:
                await peer.close()


async def test_the_total_websocket_cap_is_answered_503() -> None:
    async with served_on_loopback(ServerConfig(caps=Caps(websockets=1))) as served:
        held = SyntheticPeer(served.url, "r", "127.0.81.1")
        try:
            await held.connect()
            assert await _handshake_status(served.url, "127.0.81.2") == 503
        finally:
            await held.close()


async def test_joining_too_fast_is_refused_with_4430_before_anything_is_allocated() -> None:
    async with served_on_loopback(ServerConfig(caps=Caps(join_burst=1, join_rate=0.01))) as served:
        first = SyntheticPeer(served.url, "r", "127.0.82.1")
        second = SyntheticPeer(served.url, "r", "127.0.82.1")
        try:
            await first.join(publish={})
            assert first.participant_id is not None
            await second.join(publish={})
            await second.closed.wait()
            assert second.messages == [
                RefusedMessage(
                    "Too many joins from your address: wait a few seconds and try again."
                ).to_message()
            ]
            assert second.close_code == 4430
            assert list(served.sfu.participants) == [first.participant_id]
            assert served.sfu.joins_admitted == 1
        finally:
            await first.close()
            await second.close()


async def test_a_join_in_progress_counts_until_its_media_is_up() -> None:
    """One address may have one join whose media is not up: the next waits for it, then gets in."""
    async with served_on_loopback(ServerConfig(caps=Caps(pending_joins_per_address=1))) as served:
        gate = served.app[GATE]

        def pending(n: int) -> Callable[[], str | None]:
            return lambda: None if gate.pending_joins == n else f"{gate.pending_joins} joins in progress"

        silent = contextlib.AsyncExitStack()
        await silent.enter_async_context(_joined_without_answering(served.url, "127.0.83.1"))
        late = SyntheticPeer(served.url, "r", "127.0.83.1")
        other = SyntheticPeer(served.url, "r", "127.0.83.2", tracks=synthetic_tracks())
        ready = SyntheticPeer(served.url, "r", "127.0.83.1", tracks=synthetic_tracks())
        try:
            await late.join()
            await asyncio.wait_for(late.closed.wait(), 10)
            assert (late.messages[0]["type"], late.close_code) == ("refused", 4430)
            await other.join()  # another address is not held up; it answers, its media comes up
            assert other.participant_id is not None
            await eventually(pending(1), within=30)
            await silent.aclose()
            await eventually(pending(0), within=10)
            await ready.join()
            assert ready.participant_id is not None
            await eventually(pending(0), within=30)
            assert len(served.sfu.participants) == 2
        finally:
            await silent.aclose()
            for peer in (late, other, ready):
                await peer.close()


async def test_a_listener_with_nothing_to_negotiate_is_no_join_in_progress() -> None:
    """Nothing to publish, nobody to receive: no offer, no sockets, so it holds no place among the
    joins in progress (else such joins, which no timer ends, would block everybody's)."""
    async with served_on_loopback(ServerConfig(caps=Caps(pending_joins=1))) as served:
        gate = served.app[GATE]
        listeners = [SyntheticPeer(served.url, f"room-{n}", f"127.0.85.{n}") for n in (1, 2)]
        try:
            for listener in listeners:
                await listener.join(publish={})
                assert listener.participant_id is not None, listener.messages
                await eventually(lambda: None if gate.pending_joins == 0 else "in progress", within=10)
            assert gate.participants == 2
        finally:
            for listener in listeners:
                await listener.close()


async def test_the_total_participant_cap_is_refused_with_4503() -> None:
    async with served_on_loopback(ServerConfig(caps=Caps(participants=1))) as served:
        first = SyntheticPeer(served.url, "r", "127.0.84.1")
        second = SyntheticPeer(served.url, "s", "127.0.84.2")
        try:
            await first.join(publish={})
            await second.join(publish={})
            await second.closed.wait()
            assert second.messages == [
                RefusedMessage("The server is at capacity: try again later.").to_message()
            ]
            assert second.close_code == 4503
        finally:
            await first.close()
            await second.close()


@contextlib.asynccontextmanager
async def _joined_without_answering(url: str, address: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A client that joins and never answers its offer: its join stays in progress."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session, session.ws_connect(url) as ws:
        await ws.send_str(encode(Join("r", "silent")))
        assert isinstance(parse_server_message((await ws.receive(timeout=10)).data), Joined)
        yield ws
