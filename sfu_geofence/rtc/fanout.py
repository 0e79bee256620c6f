"""The SFU's fan-out in C: one published packet to every ready subscriber line in one call.

Forwarding in Python cost ~9 us of interpreter per subscriber packet on top of the floor (SRTP protect
and one ``sendto``); ``fanout.c`` does the same per-line work (header, extension block, payload copy,
``srtp_protect``, ``sendto``) for all lines in one call, as Janus and mediasoup do it in C/C++. It is
built by ``pip install`` with cffi (``fanout_build.py``, as aiortc builds its codec bindings).

Python keeps every decision: a :class:`Line` holds one sending m-line's state (SSRC continuity and
sender-report counters, the current consumer's mapping, the binding to a socket and SRTP session); a
consumer joins its producer's :class:`Fanout` only once it is started, bound and has sent its first
packet from Python (which asks for its keyframe). Everything else (padding, retransmissions, a line not
bound yet) stays on the Python path, :class:`~sfu_geofence.rtc.forwarding.RtpEgress`.

Without the compiled module, with a pylibsrtp whose ``srtp_protect`` is not the call ``fanout.c`` makes
(:func:`protect_signature_matches`), or with ``SFU_GEOFENCE_FANOUT=python``, lines are :class:`PyLine`
(same fields, no C) and every packet takes the Python path.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import weakref
from collections.abc import Sequence
from typing import Any

from pylibsrtp import SRTP_MAX_TRAILER_LEN


def protect_signature_matches(ctype: Any) -> bool:
    """Whether ``ctype`` (a cffi function type) is libsrtp 2's ``srtp_protect(srtp_t, void *, int *)``.

    ``fanout.c`` calls pylibsrtp's ``srtp_protect`` through a bare pointer, with no type check: a
    pylibsrtp built on another libsrtp API (libsrtp 3's takes six arguments; pylibsrtp is not pinned)
    must keep the C fan-out off, not have it write wherever the wrong arguments point.
    """
    args = ctype.args
    return (
        len(args) == 3
        and not ctype.ellipsis
        and all(a.kind == "pointer" for a in args)
        and [a.cname for a in args[1:]] == ["void *", "int *"]
        and ctype.result.kind in ("enum", "primitive")
    )


def _pylibsrtp_protect_matches() -> bool:
    from pylibsrtp._binding import ffi as srtp_ffi
    from pylibsrtp._binding import lib as srtp_lib

    return protect_signature_matches(srtp_ffi.typeof(srtp_lib.srtp_protect))


try:  # built by pip install (setup.py); a compiled module, so no types for mypy to read
    _compiled: Any = importlib.import_module(f"{__package__}._fanout")
    _ffi, _lib = _compiled.ffi, _compiled.lib
except ImportError:  # not built (a source checkout without pip install): the Python path only
    _ffi = _lib = None
if _lib is not None and not _pylibsrtp_protect_matches():
    _ffi = _lib = None  # this pylibsrtp's srtp_protect is not the one fanout.c calls: Python path only

FANOUT_ENV = "SFU_GEOFENCE_FANOUT"
"""``python`` keeps every packet on the Python path (comparisons, or a platform where C misbehaves)."""

SCRATCH_SIZE = 1500
"""As pylibsrtp's session buffer: room for the clear packet plus the SRTP trailer."""
SCRATCH_LIMIT = SCRATCH_SIZE - SRTP_MAX_TRAILER_LEN

Line = Any
"""One sending m-line's state: a C ``sfu_line`` (cffi) or a :class:`PyLine`, with the same fields."""


class PyLine:
    """A line's state without the C module (its fields are the C struct's that Python reads)."""

    __slots__ = (
        "fd",
        "last_ntp_timestamp",
        "last_rtp_timestamp",
        "next_sequence_number",
        "next_timestamp",
        "octets_sent",
        "packets_sent",
        "send_errors",
        "used",
    )

    def __init__(self) -> None:
        self.fd = -1
        self.used = 0
        self.next_sequence_number = 0
        self.next_timestamp = 0
        self.last_rtp_timestamp = 0
        self.last_ntp_timestamp = 0
        self.packets_sent = 0
        self.octets_sent = 0
        self.send_errors = 0


def c_fanout_enabled() -> bool:
    """Whether new lines are C lines (the module is built and not switched off)."""
    return _lib is not None and os.environ.get(FANOUT_ENV, "c").lower() != "python"


def descriptors_per_socket() -> int:
    """Open files each ICE socket costs: the event loop's, plus the C fan-out's own (a ``dup``, see
    :class:`SocketHandle`) when it is on; the open-file budget (``server.fdlimit``) counts them."""
    return 2 if c_fanout_enabled() else 1


def new_line() -> Line:
    """A fresh line (C when enabled), unbound."""
    if not c_fanout_enabled():
        return PyLine()
    line = _ffi.new("sfu_line *")
    line.fd = -1
    return line


def is_c_line(line: Line) -> bool:
    return not isinstance(line, PyLine)


def set_mapping(
    line: Line,
    ssrc: int,
    pt_map: dict[int, int],
    extension_mode: int,
    prefix: bytes,
    suffix_length: int,
    without: bytes,
) -> None:
    """Write a consumer's payload types and extension block onto its (C) line, at activation.

    ``extension_mode``: 0 the fixed block ``without`` only, 1 video (``prefix`` + abs-send-time +
    ``suffix_length`` zeros), 2 audio (the same with the audio level, or ``without`` if a packet has none).
    """
    if not is_c_line(line):
        return
    if len(prefix) > 32 or len(without) > 32:
        raise ValueError("extension block too long for the C line")
    line.ssrc = ssrc
    for pt in range(128):
        line.pt_map[pt] = 0
    for theirs, ours in pt_map.items():
        line.pt_map[theirs & 0x7F] = 0x80 | ours
    line.extension_mode = extension_mode
    line.prefix_length = len(prefix)
    line.prefix[0 : len(prefix)] = prefix
    line.suffix_length = suffix_length
    line.without_length = len(without)
    line.without[0 : len(without)] = without


def set_offsets(line: Line, sequence_offset: int, timestamp_offset: int) -> None:
    """Write a started consumer's continuity offsets onto its (C) line."""
    if is_c_line(line):
        line.sequence_offset = sequence_offset
        line.timestamp_offset = timestamp_offset


class SocketHandle:
    """The fan-out's own descriptor of a datagram socket (a ``dup``): it stays this socket until released,
    whatever the event loop does with the original (a closed, reused number would send elsewhere).

    Closed when the last line bound to it is unbound (:meth:`acquire`/:meth:`release`, by the egress),
    as the event loop closes its own: left to the cyclic collector, a departed participant's socket (its
    port, its descriptor) would outlive it until the next full collection."""

    __slots__ = ("__weakref__", "_close", "family", "fd", "users")

    def __init__(self, sock: Any) -> None:
        self.family: int = sock.family
        self.fd = os.dup(sock.fileno())
        self.users = 0
        """Lines bound to ``fd``: it is closed when none is (or when the handle is collected)."""
        self._close = weakref.finalize(self, os.close, self.fd)

    @property
    def closed(self) -> bool:
        return not self._close.alive

    def acquire(self) -> None:
        """A line is now bound to ``fd``."""
        self.users += 1

    def release(self) -> None:
        """A line bound to ``fd`` was unbound (its ``fd`` is -1 already); the last one closes it."""
        self.users -= 1
        if self.users <= 0:
            self._close()


def socket_handle(protocol: Any, transport: Any, relayed: bool) -> SocketHandle | None:
    """The handle of the socket under ``transport`` (kept on aioice's ``protocol``, one per socket), or
    None when the C fan-out must not or cannot write to it: a TURN allocation (data must go through the
    relay's framing), anything that is not a plain datagram socket, or no descriptor to be had (EMFILE:
    the Python path needs none, so the line stays there)."""
    if relayed:
        return None
    cached: tuple[Any, SocketHandle] | None = getattr(protocol, "_sfu_geofence_socket", None)
    if cached is not None and cached[0] is transport and not cached[1].closed:
        return cached[1]
    sock = transport.get_extra_info("socket")
    if sock is None or getattr(sock, "type", None) != socket.SOCK_DGRAM:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        handle = SocketHandle(sock)
    except OSError:
        return None
    protocol._sfu_geofence_socket = (transport, handle)
    return handle


def sockaddr(family: int, address: tuple[Any, ...]) -> bytes | None:
    """``address`` (host, port) as the C ``struct sockaddr_in``/``sockaddr_in6`` bytes, or None if it is
    not a plain numeric address of ``family`` (scoped IPv6 ones stay on the Python path). The family is
    in the machine's byte order (``sa_family_t``), the port and address in network order."""
    host, port = str(address[0]), int(address[1])
    try:
        if family == socket.AF_INET:
            packed = socket.inet_pton(socket.AF_INET, host)
            return socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + packed + bytes(8)
        if family == socket.AF_INET6 and "%" not in host:
            packed = socket.inet_pton(socket.AF_INET6, host)
            family_port = socket.AF_INET6.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
            return family_port + bytes(4) + packed + bytes(4)  # flow info, address, scope id
    except (OSError, ValueError):
        return None
    return None


def bind_line(line: Line, handle: SocketHandle | None, address: tuple[Any, ...], session: Any) -> bool:
    """Point a C line at a socket, destination and SRTP session (a ``pylibsrtp.Session``, kept alive by
    the caller); False (the line stays unbound) when any of them cannot be used from C."""
    if not is_c_line(line):
        return False
    line.fd = -1
    if handle is None:
        return False
    packed = sockaddr(handle.family, address)
    srtp = _srtp_pointer(session)
    if packed is None or srtp is None:
        return False
    line.address[0 : len(packed)] = packed
    line.address_length = len(packed)
    line.srtp = srtp
    line.fd = handle.fd
    return True


def unbind_line(line: Line) -> None:
    line.fd = -1


def _srtp_pointer(session: Any) -> Any:
    """The ``srtp_t`` of a ``pylibsrtp.Session`` as this module's ``void *`` (None for another kind)."""
    try:
        from pylibsrtp._binding import ffi as srtp_ffi

        return _ffi.cast("void *", int(srtp_ffi.cast("uintptr_t", session._srtp[0])))
    except (AttributeError, TypeError, ImportError):
        return None


class Fanout:
    """The C lines a producer's packets go to, in one call per packet (see the module docstring)."""

    __slots__ = ("_array", "_call", "_protect", "_scratch", "count", "lines")

    def __init__(self) -> None:
        self.lines: tuple[Line, ...] = ()
        self.count = 0
        self._array: Any = None
        self._scratch: Any = None
        self._protect: Any = None
        self._call: Any = None

    def set(self, lines: Sequence[Line]) -> None:
        """Fan out to exactly these (bound, started) C lines from now on."""
        self.lines = tuple(lines)
        self.count = len(self.lines)
        if not self.lines:
            self._array = None
            return
        if self._call is None:
            from pylibsrtp._binding import ffi as srtp_ffi
            from pylibsrtp._binding import lib as srtp_lib

            address = int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, "srtp_protect")))
            self._protect = _ffi.cast("sfu_protect_fn", address)
            self._scratch = _ffi.new("unsigned char[]", SCRATCH_SIZE)
            self._call = _lib.sfu_fanout
        self._array = _ffi.new("sfu_line *[]", list(self.lines))

    def send(self, packet: Any, abs_send_time: bytes, ntp: int) -> int:
        """Forward one packet (no padding) to every line; how many were sent."""
        level = packet.extensions.audio_level
        payload = packet.payload
        sent: int = self._call(
            self._array,
            self.count,
            self._protect,
            self._scratch,
            SCRATCH_LIMIT,
            payload,
            len(payload),
            packet.marker,
            packet.payload_type,
            packet.sequence_number,
            packet.timestamp,
            -1 if level is None else (level[0] << 7) | level[1],
            abs_send_time,
            ntp,
        )
        return sent
