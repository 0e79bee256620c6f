"""The C fan-out sends each line exactly the packet the Python path would, protected by the line's own
SRTP session, on the line's own socket, and counts what it sent as the Python path counts it.

Real sockets on loopback and real libsrtp sessions: each test unprotects what arrived and compares it
with :func:`sfu_geofence.sfu.rtp_header.rewrite`, the Python path's bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from aiortc.rtp import RtpPacket
from cffi import FFI
from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from sfu_geofence.rtc.fanout import (
    SCRATCH_LIMIT,
    Fanout,
    Line,
    SocketHandle,
    bind_line,
    new_line,
    protect_signature_matches,
    set_mapping,
    set_offsets,
    sockaddr,
)
from sfu_geofence.sfu.rtp_header import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    ExtensionBlock,
    abs_send_time_of,
    rewrite,
)

KEY = bytes(range(30))
NTP = 0xE1E2E3E4_A5A6A7A8
SSRC = 0x11223344

pytestmark = pytest.mark.usefixtures("c_fanout")


class Subscriber:
    """One subscriber's end: a loopback socket receiving, and the SRTP session that reads its packets."""

    def __init__(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> None:
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.socket.bind((host, 0))
        self.socket.settimeout(2)
        self.session = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    def receive(self) -> bytes:
        data, _ = self.socket.recvfrom(2048)
        return bytes(self.session.unprotect(data))

    def nothing_arrived(self) -> bool:
        self.socket.settimeout(0.2)
        try:
            self.socket.recvfrom(2048)
        except TimeoutError:
            return True
        return False


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def bound_line(
    sock: socket.socket, subscriber: Subscriber, block: ExtensionBlock, pt_map: dict[int, int]
) -> tuple[Line, tuple[Session, SocketHandle]]:
    """A line bound to ``subscriber``, and what must outlive it (as ``RtpEgress`` keeps them)."""
    line = new_line()
    session = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    handle = SocketHandle(sock)
    assert bind_line(line, handle, subscriber.address, session)
    set_mapping(
        line,
        SSRC,
        pt_map,
        (1 if block.video else 2) if block.variable else 0,
        block.prefix,
        len(block.suffix),
        block.without,
    )
    return line, (session, handle)


def packet(
    payload_type: int = 96,
    sequence_number: int = 1000,
    timestamp: int = 90_000,
    payload: bytes = b"frame data" * 40,
    marker: int = 1,
    audio_level: tuple[bool, int] | None = None,
) -> RtpPacket:
    p = RtpPacket(
        payload_type=payload_type,
        marker=marker,
        sequence_number=sequence_number,
        timestamp=timestamp,
        ssrc=0xAABBCCDD,
        payload=payload,
    )
    p.extensions.audio_level = audio_level
    return p


VIDEO = ExtensionBlock("1", {MID_URI: 1, ABS_SEND_TIME_URI: 3}, "video")
AUDIO = ExtensionBlock("0", {MID_URI: 1, AUDIO_LEVEL_URI: 2}, "audio")
MID_ONLY = ExtensionBlock("7", {MID_URI: 4}, "video")


@pytest.mark.parametrize(
    ("block", "audio_level"),
    [(VIDEO, None), (AUDIO, (True, 42)), (AUDIO, None), (MID_ONLY, None)],
    ids=["video-abs-send-time", "audio-level", "audio-without-level", "mid-only"],
)
def test_each_line_gets_the_python_paths_packet(
    sender: socket.socket, block: ExtensionBlock, audio_level: tuple[bool, int] | None
) -> None:
    subscriber = Subscriber()
    line, _session = bound_line(sender, subscriber, block, {96: 100, 111: 109})
    set_offsets(line, 0xFFFF - 1000 + 5, 0xFFFFFFFF - 90_000 + 7)  # both wrap
    fanout = Fanout()
    fanout.set([line])
    sent = packet(audio_level=audio_level)
    abs_send_time = abs_send_time_of(NTP)

    assert fanout.send(sent, abs_send_time, NTP) == 1

    expected = rewrite(sent, 100, 4, 6, SSRC, block.for_packet(sent, abs_send_time))
    assert subscriber.receive() == expected


def test_counters_feed_sender_reports_and_the_next_number_moves_forward_only(sender: socket.socket) -> None:
    subscriber = Subscriber()
    line, _session = bound_line(sender, subscriber, VIDEO, {96: 96})
    set_offsets(line, 10, 20)
    fanout = Fanout()
    fanout.set([line])
    first = packet(sequence_number=100, timestamp=1000, payload=b"a" * 300)
    late = packet(sequence_number=90, timestamp=900, payload=b"b" * 200)  # reordered

    fanout.send(first, abs_send_time_of(NTP), NTP)
    fanout.send(late, abs_send_time_of(NTP + 1), NTP + 1)

    assert subscriber.receive()[2:4] == (110).to_bytes(2, "big")
    assert subscriber.receive()[2:4] == (100).to_bytes(2, "big")
    assert (line.packets_sent, line.octets_sent) == (2, 500)
    assert (line.last_rtp_timestamp, line.last_ntp_timestamp) == (920, NTP + 1)
    assert line.next_sequence_number == 111  # not moved back by the late packet


def test_a_payload_type_the_subscriber_did_not_accept_is_not_sent(sender: socket.socket) -> None:
    subscriber = Subscriber()
    line, _session = bound_line(sender, subscriber, VIDEO, {96: 100})
    fanout = Fanout()
    fanout.set([line])

    assert fanout.send(packet(payload_type=97), abs_send_time_of(NTP), NTP) == 0

    assert subscriber.nothing_arrived()
    assert line.packets_sent == 0


def test_a_packet_too_long_for_the_buffer_is_counted_not_sent(sender: socket.socket) -> None:
    subscriber = Subscriber()
    line, _session = bound_line(sender, subscriber, VIDEO, {96: 96})
    fanout = Fanout()
    fanout.set([line])

    assert fanout.send(packet(payload=bytes(SCRATCH_LIMIT)), abs_send_time_of(NTP), NTP) == 0

    assert line.send_errors == 1
    assert subscriber.nothing_arrived()


def test_lines_have_their_own_socket_session_and_numbering_and_an_unbound_one_is_skipped(
    sender: socket.socket,
) -> None:
    first, second, unbound = Subscriber(), Subscriber(), Subscriber()
    other_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_socket.bind(("127.0.0.2", 0))
    a, _sa = bound_line(sender, first, VIDEO, {96: 96})
    b, _sb = bound_line(other_socket, second, VIDEO, {96: 98})
    c, _sc = bound_line(sender, unbound, VIDEO, {96: 96})
    set_offsets(b, 500, 0)
    c.fd = -1
    fanout = Fanout()
    fanout.set([a, b, c])

    assert fanout.send(packet(), abs_send_time_of(NTP), NTP) == 2

    _, from_second = second.socket.recvfrom(0, socket.MSG_PEEK)
    assert from_second[0] == "127.0.0.2"  # sent on the second line's own socket
    received = first.receive(), second.receive()
    assert [r[1] & 0x7F for r in received] == [96, 98]
    assert [int.from_bytes(r[2:4], "big") for r in received] == [1000, 1500]
    assert unbound.nothing_arrived()
    other_socket.close()


def test_a_line_keeps_its_socket_after_the_event_loop_closes_the_original() -> None:
    subscriber = Subscriber()
    original = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    original.bind(("127.0.0.1", 0))
    port = original.getsockname()[1]
    line, _session = bound_line(original, subscriber, VIDEO, {96: 96})
    fanout = Fanout()
    fanout.set([line])
    original.close()
    reused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # may take the closed descriptor's number

    assert fanout.send(packet(), abs_send_time_of(NTP), NTP) == 1

    _, source = subscriber.socket.recvfrom(0, socket.MSG_PEEK)
    assert source[1] == port  # still the line's socket, whatever took the old number
    reused.close()


def test_ipv6_loopback() -> None:
    subscriber = Subscriber(socket.AF_INET6, "::1")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    line, _session = bound_line(sock, subscriber, MID_ONLY, {96: 96})
    fanout = Fanout()
    fanout.set([line])

    assert fanout.send(packet(), abs_send_time_of(NTP), NTP) == 1

    assert subscriber.receive()[8:12] == SSRC.to_bytes(4, "big")
    sock.close()


def test_addresses_the_c_code_cannot_take_stay_on_the_python_path() -> None:
    assert sockaddr(socket.AF_INET6, ("fe80::1%lo", 5000)) is None  # scoped
    assert sockaddr(socket.AF_INET, ("::1", 5000)) is None  # another family
    assert sockaddr(socket.AF_INET, ("localhost", 5000)) is None  # a name
    line = new_line()
    assert not bind_line(line, None, ("127.0.0.1", 5000), object())  # no socket handle (TURN)
    assert line.fd == -1


def test_srtp_protect_is_called_only_with_the_signature_fanout_c_was_written_for() -> None:
    # fanout.c calls it through a bare pointer: a pylibsrtp on libsrtp 3 (six arguments) keeps C off.
    assert protect_signature_matches(srtp_ffi.typeof(srtp_lib.srtp_protect))  # this pylibsrtp's
    libsrtp3 = FFI().typeof("int(*)(void *, const uint8_t *, size_t, uint8_t *, size_t *, size_t)")
    assert not protect_signature_matches(libsrtp3)
    assert not protect_signature_matches(FFI().typeof("int(*)(void *, void *, size_t *)"))
