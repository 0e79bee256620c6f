"""What a hostile participant puts on the media path, crafted byte by byte (for tests and bench/hostile.py).

Each attack is sent by the attacker's own aiortc peer connection, SRTP-protected by its DTLS transport:
the SFU sees authenticated packets from a participant it admitted, which is the case the SFU's bounds
are for (what fails authentication never reaches the RTP/RTCP parsers).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable

from aiortc import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RTCP_RTPFB, RTCP_RTPFB_NACK, is_rtcp, pack_rtcp_packet

from ..rtc.access import RtpSend, intercept_rtp, send_rtp

NACK_STORM_BYTES = 1172
"""The size of the NACK packets of the measured storm (issue 9): 290 FCI entries."""


def nack(sender_ssrc: int, media_ssrc: int, entries: Iterable[tuple[int, int]]) -> bytes:
    """One generic NACK (RFC 4585 6.2.1) with these ``(pid, blp)`` FCI entries, as written: no merging."""
    fci = b"".join(struct.pack("!HH", pid & 0xFFFF, blp) for pid, blp in entries)
    return pack_rtcp_packet(RTCP_RTPFB, RTCP_RTPFB_NACK, struct.pack("!LL", sender_ssrc, media_ssrc) + fci)


def nack_storm_packet(sender_ssrc: int, media_ssrc: int, first: int, size: int = NACK_STORM_BYTES) -> bytes:
    """A NACK of ``size`` bytes naming the 17 numbers from ``first`` again in every FCI entry."""
    count = (size - 12) // 4
    return nack(sender_ssrc, media_ssrc, [(first, 0xFFFF)] * count)


def nack_wide_packet(sender_ssrc: int, media_ssrc: int, first: int, count: int) -> bytes:
    """A NACK naming ``count`` * 17 distinct consecutive numbers from ``first``."""
    return nack(sender_ssrc, media_ssrc, [(first + 17 * i, 0xFFFF) for i in range(count)])


def jumped_rtp(data: bytes, jump: int) -> bytes:
    """An RTP packet (clear text) with its sequence number moved ``jump`` ahead; all else unchanged."""
    (sequence_number,) = struct.unpack_from("!H", data, 2)
    return data[:2] + struct.pack("!H", (sequence_number + jump) & 0xFFFF) + data[4:]


class OutgoingRtp:
    """The last clear-text RTP packet the attacker's own transport sent, per SSRC (a template to alter)."""

    def __init__(self, transport: RTCDtlsTransport) -> None:
        self.transport = transport
        self.last: dict[int, bytes] = {}

        def recording(send: RtpSend) -> RtpSend:
            async def record(data: bytes) -> None:
                if not is_rtcp(data) and len(data) >= 12:
                    self.last[struct.unpack_from("!I", data, 8)[0]] = data
                await send(data)

            return record

        intercept_rtp(transport, recording)


def silence(track: MediaStreamTrack) -> None:
    """Make the attacker's own encoder-side track stop yielding: from now on it sends only crafted packets.

    Its SRTP session would otherwise refuse to protect the real numbering after a forward jump (libsrtp's
    replay check), as a hostile client's own SRTP would not have to.
    """
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv() -> None:
        await never

    track.recv = recv  # type: ignore[method-assign,assignment]


async def send_protected(transport: RTCDtlsTransport, data: bytes) -> None:
    """Send one RTP or RTCP packet (as bytes) SRTP-protected on the attacker's own DTLS transport."""
    await send_rtp(transport, data)
