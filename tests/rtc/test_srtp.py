"""Forwarded packets are protected by the session's own libsrtp call, in its own buffer, to the same bytes."""

from __future__ import annotations

import os
import struct

import pytest
from pylibsrtp import Error, Policy, Session

from sfu_geofence.rtc.srtp import SrtpError, fast_protect, srtp_writer

KEY = bytes(range(30))


def rtp(sequence: int, payload: bytes) -> bytes:
    return bytes([0x80, 96]) + sequence.to_bytes(2, "big") + bytes(4) + (42).to_bytes(4, "big") + payload


def session() -> Session:
    return Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))


def test_fast_protect_gives_what_session_protect_gives_and_a_receiver_reads_it() -> None:
    stock, ours = session(), session()
    protect = fast_protect(ours)
    assert protect is not ours.protect  # the fast path, not a fallback
    receiver = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    for sequence in range(200):
        packet = rtp(sequence, os.urandom(sequence * 7 % 1200))
        protected = protect(packet)
        assert protected == stock.protect(packet)
        assert receiver.unprotect(protected) == packet


def test_what_libsrtp_refuses_is_an_error_as_with_session_protect() -> None:
    ours = session()
    protect = fast_protect(ours)
    protect(rtp(1, b"x"))
    session_twice = session()
    session_twice.protect(rtp(1, b"x"))
    with pytest.raises(Error):
        session_twice.protect(rtp(1, b"x"))  # the same packet again: libsrtp's replay check
    with pytest.raises(SrtpError):
        protect(rtp(1, b"x"))
    with pytest.raises(ValueError, match="too long"):
        protect(rtp(2, bytes(1500)))


def test_a_session_without_the_internals_read_keeps_its_own_protect() -> None:
    class Other:
        def protect(self, packet: bytes) -> bytes:
            return packet[::-1]

    other = Other()
    assert fast_protect(other)(b"ab") == b"ba"


def test_a_packet_built_in_the_writers_buffer_is_protected_in_place_to_what_session_protect_gives() -> None:
    # The egress packs each subscriber's header into the session's buffer and copies the extension
    # block and payload after it: no clear packet is ever made as bytes.
    stock, ours = session(), session()
    writer = srtp_writer(ours)
    assert writer is not None
    receiver = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    block = bytes([0xBE, 0xDE, 0, 1, 0x10, ord("a"), 0, 0])
    for sequence in range(200):
        payload = os.urandom(sequence * 7 % 1200)
        struct.pack_into("!BBHII", writer.buffer, 0, 0x90, 96, sequence, 3000 * sequence, 42)
        writer.buffer[12:20] = block
        writer.buffer[20 : 20 + len(payload)] = payload
        clear = struct.pack("!BBHII", 0x90, 96, sequence, 3000 * sequence, 42) + block + payload
        protected = writer.protect(20 + len(payload))
        assert protected == stock.protect(clear)
        assert receiver.unprotect(protected) == clear
    with pytest.raises(ValueError, match="too long"):
        writer.protect(writer.limit + 1)


def test_a_session_without_the_internals_read_gets_no_writer() -> None:
    assert srtp_writer(object()) is None
