"""SRTP protection of forwarded packets without pylibsrtp's per-call Python layers.

``pylibsrtp.Session.protect`` (1.0.0) goes through three Python frames per packet (``protect``, its
private ``__process``, ``_srtp_assert``), type and length checks and a fresh ``int *`` each time:
1.5 of its 3.2 us per packet on the development machine, for every packet of every subscriber. The
egress calls :func:`fast_protect`'s closure instead: the same C call (``srtp_protect``) on the same
session, through the session's own buffer, in one frame. It returns the same bytes as
``Session.protect``; a session without the internals it reads (another pylibsrtp) keeps its own
``protect``.

:class:`SrtpWriter` goes one step further for forwarded packets: the egress writes the subscriber's
header, extension block and the publisher's payload straight into that buffer and protects them in
place, so no per-subscriber ``bytes`` of the clear packet is ever made (one copy of the payload instead
of two, one allocation instead of three).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pylibsrtp import SRTP_MAX_TRAILER_LEN
from pylibsrtp._binding import ffi, lib

Protect = Callable[[bytes], bytes]


class SrtpError(RuntimeError):
    """``srtp_protect`` refused a packet (its libsrtp status code)."""


class SrtpWriter:
    """The buffer of one ``pylibsrtp.Session`` and its C call: fill ``buffer[0:size]``, then :meth:`protect`.

    The fields are read inline by the egress (one Python frame per forwarded packet); :func:`srtp_writer`
    makes one, or None for a session without the internals read (the egress then uses its ``protect``).
    """

    __slots__ = ("_keep", "buffer", "call", "cdata", "length", "limit", "srtp")

    def __init__(self, session: Any) -> None:
        self._keep = session
        """The session owns ``srtp``, ``cdata`` and ``buffer``: kept alive as long as they are used."""
        self.srtp: Any = session._srtp[0]
        self.cdata: Any = session._cdata
        self.buffer: Any = session._buffer
        """Writable (``struct.pack_into``, slice assignment); what libsrtp protects in place."""
        self.limit: int = len(self.cdata) - SRTP_MAX_TRAILER_LEN
        """The longest clear packet the buffer takes (room is kept for the authentication tag)."""
        self.length: Any = ffi.new("int *")
        """In: the clear packet's size; out: the protected one's."""
        self.call: Callable[[Any, Any, Any], int] = lib.srtp_protect

    def protect(self, size: int) -> bytes:
        """Protect the clear packet in ``buffer[0:size]``; the protected bytes (a copy)."""
        if size > self.limit:
            raise ValueError("packet is too long")
        length = self.length
        length[0] = size
        status = self.call(self.srtp, self.cdata, length)
        if status:
            raise SrtpError(f"srtp_protect failed with status {status}")
        return self.buffer[0 : length[0]]  # type: ignore[no-any-return]


def srtp_writer(session: Any) -> SrtpWriter | None:
    """A :class:`SrtpWriter` on ``session`` (a ``pylibsrtp.Session``), or None if it is another kind."""
    try:
        return SrtpWriter(session)
    except (AttributeError, TypeError):
        return None


def fast_protect(session: Any) -> Protect:
    """A function protecting RTP packets in ``session`` (a ``pylibsrtp.Session``), as its ``protect``."""
    writer = srtp_writer(session)
    if writer is None:
        protect: Protect = session.protect
        return protect
    buffer, limit, protect_in_place = writer.buffer, writer.limit, writer.protect

    def protect_packet(data: bytes) -> bytes:
        size = len(data)
        if size > limit:
            raise ValueError("packet is too long")
        buffer[0:size] = data
        return protect_in_place(size)

    return protect_packet
