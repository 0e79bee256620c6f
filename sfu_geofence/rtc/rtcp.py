"""A bound on the RTCP a peer can make the SFU parse: one datagram at most :data:`MAX_RTCP_DATAGRAM` bytes.

aiortc parses a whole compound RTCP datagram in Python before routing it, and a generic NACK's parser
expands every 4-byte FCI entry into up to 17 numbers. On loopback a datagram can be 64 KiB: one such
NACK datagram is ~270 000 parser steps (tens of ms of event loop) before any per-NACK cap applies.
Real compound RTCP fits in one MTU (libwebrtc splits it to do so), so larger datagrams are dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiortc.rtcdtlstransport import RTCDtlsTransport

MAX_RTCP_DATAGRAM = 1500
"""Largest (decrypted) RTCP datagram parsed; larger ones are dropped and counted."""


class RtcpLimit:
    """Installed once per DTLS transport: drops oversized RTCP datagrams before aiortc parses them."""

    __slots__ = ("_handle", "dropped")

    def __init__(self, handle: Callable[[bytes], Awaitable[None]]) -> None:
        self._handle = handle
        self.dropped = 0

    async def __call__(self, data: bytes) -> None:
        if len(data) > MAX_RTCP_DATAGRAM:
            self.dropped += 1
            return
        await self._handle(data)


def limit_rtcp(transport: RTCDtlsTransport) -> RtcpLimit:
    """Bound the RTCP datagrams ``transport`` parses (idempotent; returns the limit and its counter)."""
    current = transport.__dict__.get("_handle_rtcp_data")
    if isinstance(current, RtcpLimit):
        return current
    limit = RtcpLimit(transport._handle_rtcp_data)
    transport._handle_rtcp_data = limit  # type: ignore[method-assign]
    return limit
