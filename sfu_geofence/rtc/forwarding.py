"""Taking over aiortc's media path so an SFU forwards RTP packets instead of decoding them.

aiortc 1.16.0 ends every received packet in a decoder thread and feeds every sent packet from an
encoder. An SFU wants neither, so this module swaps the receiver and sender of a transceiver for
subclasses that keep aiortc's RTCP machinery (receiver reports, NACK generation, SR/SDES, feedback
routing) and replace the media:

* :class:`ForwardingReceiver` registers itself in the DTLS transport's ``RtpRouter`` (the receiver
  protocol of ``rtcdtlstransport.py``) and hands each packet to a sink. No decoder thread ever starts:
  the stock ``receive()`` would start one, and closing a connection whose decoder has a backlog joins
  that thread on the event loop (measured: a 3.9 s freeze of every participant).
* :class:`ForwardingSender` sends a track that never yields, so ``_run_rtp`` parks; packets are written
  by the SFU through :class:`RtpEgress`. Keyframe requests and NACKs from the subscriber go to
  callables the SFU sets, and sender reports are rewritten from the forwarder's own counters.
* :class:`RtpEgress` builds each packet in the DTLS transport's SRTP session buffer, protects it there
  and ``sendto``s it on the nominated ICE pair through the loop's C ``sendto`` bound to the pair's
  address: one Python frame per subscriber packet (see docs/sfu.md for what was measured).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import secrets
import struct
import time
from collections.abc import Callable
from typing import Any

from aioice import Connection
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
)

from . import codecs, require_pinned_versions
from .fanout import Line, SocketHandle, bind_line, is_c_line, new_line, socket_handle, unbind_line
from .inbound import InboundStreams
from .nack import NackTracker
from .srtp import Protect, SrtpError, SrtpWriter, fast_protect, srtp_writer

logger = logging.getLogger(__name__)

NTP_UNIX_OFFSET = 2208988800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""

FORWARDED_CODECS = frozenset({"audio/opus", "video/vp8", "video/h264", "video/rtx"})
"""What the SFU offers: WebRTC's mandatory codecs (RTX for video retransmissions). aiortc would also
offer PCMU/PCMA, which a publisher could pick and every subscriber would then have to accept."""

REPORT_INTERVAL_S = {"audio": 5.0, "video": 1.0}
"""Mean interval between a sending m-line's sender reports: libwebrtc's defaults
(``kDefaultAudioReportInterval``, ``kDefaultVideoReportInterval``). The stock sender reports every
second whatever the kind: at K subscribers that is 2K reports a second, each a Python round trip."""

PacketSink = Callable[[RtpPacket], None]
"""Called once per received (and RTX-unwrapped) RTP packet, synchronously, on the event loop."""


def ntp_now() -> int:
    """Current wall-clock time as a 64-bit NTP timestamp (cheaper than ``aiortc.clock``)."""
    return int((time.time() + NTP_UNIX_OFFSET) * 4294967296.0)


class ForwardingReceiver(RTCRtpReceiver):
    """An RTP receiver that forwards packets to a sink instead of decoding them."""

    def __init__(self, kind: str, transport: RTCDtlsTransport) -> None:
        super().__init__(kind, transport)
        # The stock receiver's decoding state is never used (_handle_rtp_packet is ours): its bitrate
        # estimator alone is 1,000 one-millisecond buckets, i.e. ~2,000 live objects per video m-line,
        # sendonly ones included, for every full garbage collection to walk (162,000 in a room of 9:
        # 30-100 ms pauses of every forwarded stream, measured after an ejection).
        for name in ("jitter_buffer", "nack_generator", "remote_bitrate_estimator"):
            setattr(self, f"_RTCRtpReceiver__{name}", None)
        self.kind = kind
        self.sink: PacketSink | None = None
        """Where packets go; None drops them (a publication with no producer yet)."""
        self.media_ssrc: int | None = None
        """The publisher's media SSRC, once a packet has arrived (keyframe requests name it)."""
        self.packets_received = 0
        self.foreign_packets = 0
        """Packets dropped because their SSRC is not the publisher's (see :class:`InboundStreams`)."""
        self._nack = NackTracker() if kind == "video" else None
        self._video = kind == "video"
        self._bitrate: RemoteBitrateEstimator | None = None
        """REMB for the publisher's congestion control: made at the first video packet (an m-line
        that only sends never gets one)."""
        # The stock RTCP loop (receiver reports) reads the private statistics dict: share it.
        self._inbound = InboundStreams({}, {}, getattr(self, "_RTCRtpReceiver__remote_streams"))  # noqa: B009
        self._receiving = False
        self._feedback: set[asyncio.Future[None]] = set()

    @property
    def codecs(self) -> dict[int, RTCRtpCodecParameters]:
        """Negotiated codecs by payload type."""
        return self._inbound.codecs

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        """Register in the transport's RTP router and start receiver reports; start no decoder."""
        if self._receiving:
            return
        self._inbound.configure(parameters)
        self.transport._register_rtp_receiver(self, parameters)
        # Let the stock stop() unregister us and cancel the RTCP task.
        setattr(self, "_RTCRtpReceiver__rtcp_task", asyncio.ensure_future(self._run_rtcp()))  # noqa: B010
        setattr(self, "_RTCRtpReceiver__started", True)  # noqa: B010
        self._receiving = True

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """Once per received packet: REMB, statistics, RTX unwrap, NACKs, then the sink."""
        if not self._inbound.admits(packet):
            self.foreign_packets += 1
            # The router learnt this SSRC for us on the way in: forget it, or its table grows unbounded.
            ssrc_table = self.transport._rtp_router.ssrc_table
            if ssrc_table.get(packet.ssrc) is self:
                del ssrc_table[packet.ssrc]
            return
        if self._video and packet.extensions.abs_send_time is not None:
            # As the stock receiver does: the publisher's congestion control needs REMB (no transport-cc).
            bitrate = self._bitrate
            if bitrate is None:
                bitrate = self._bitrate = RemoteBitrateEstimator()
            remb = bitrate.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if remb is not None:
                await self._send_remb(*remb)
        media = self._inbound.accept(packet)
        if media is None:
            return
        packet = media
        self.media_ssrc = packet.ssrc
        self.packets_received += 1
        nack = self._nack
        if nack is not None and nack.add(packet.sequence_number):
            await self._send_rtcp_nack(packet.ssrc, sorted(nack.missing))
        sink = self.sink
        if sink is not None:
            sink(packet)

    async def _send_remb(self, bitrate: int, ssrcs: list[int]) -> None:
        rtcp_ssrc = getattr(self, "_RTCRtpReceiver__rtcp_ssrc", None)
        if rtcp_ssrc is not None:
            fci = pack_remb_fci(bitrate, ssrcs)
            await self._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=fci))

    def request_keyframe(self) -> None:
        """Send a PLI to the publisher (callers rate-limit)."""
        if self.media_ssrc is not None:
            task = asyncio.ensure_future(self._send_rtcp_pli(self.media_ssrc))
            self._feedback.add(task)
            task.add_done_callback(self._feedback.discard)


class ParkedTrack(MediaStreamTrack):
    """A track that never yields a frame: the stock sender's RTP loop waits on it forever."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    async def recv(self) -> Any:
        await self._never
        raise MediaStreamError  # never reached: stop() cancels the waiter

    def stop(self) -> None:
        if not self._never.done():
            self._never.cancel()
        super().stop()


class ForwardingSender(RTCRtpSender):
    """An RTP sender whose packets are written by the SFU; it answers feedback through callables."""

    def __init__(self, kind: str, transport: RTCDtlsTransport) -> None:
        super().__init__(ParkedTrack(kind), transport)
        self.on_keyframe_request: Callable[[], None] | None = None
        """Called when the subscriber sends PLI or FIR."""
        self.on_nack: Callable[[list[int]], None] | None = None
        """Called once per NACK with the sequence numbers (as sent) it names, as parsed: duplicates and
        all (the callee bounds the work, see :mod:`sfu_geofence.sfu.retransmission`)."""
        self.line: Line = new_line()
        """This m-line's SSRC state, kept by the forwarder (the stock fields are only fed by the encoder):
        sender-report counters, and continuity across the consumers that successively use it (m-line
        recycling). A C line when the C fan-out is built (:mod:`.fanout`), which updates it per packet."""
        # Below 32768, as aiortc and Chrome do, so that SRTP's rollover guess cannot go wrong early on.
        self.line.next_sequence_number = secrets.randbelow(32768)
        self.line.next_timestamp = secrets.randbits(32)

    # The line's fields, as continuity (``sfu.continuity.SsrcLine``), metrics and tests read them.
    @property
    def packets_sent(self) -> int:
        return int(self.line.packets_sent)

    @property
    def octets_sent(self) -> int:
        return int(self.line.octets_sent)

    @property
    def last_rtp_timestamp(self) -> int:
        return int(self.line.last_rtp_timestamp)

    @last_rtp_timestamp.setter
    def last_rtp_timestamp(self, value: int) -> None:
        self.line.last_rtp_timestamp = value

    @property
    def last_ntp_timestamp(self) -> int:
        return int(self.line.last_ntp_timestamp)

    @last_ntp_timestamp.setter
    def last_ntp_timestamp(self, value: int) -> None:
        self.line.last_ntp_timestamp = value

    @property
    def next_sequence_number(self) -> int:
        return int(self.line.next_sequence_number)

    @next_sequence_number.setter
    def next_sequence_number(self, value: int) -> None:
        self.line.next_sequence_number = value

    @property
    def next_timestamp(self) -> int:
        return int(self.line.next_timestamp)

    @next_timestamp.setter
    def next_timestamp(self, value: int) -> None:
        self.line.next_timestamp = value

    @property
    def used(self) -> bool:
        return bool(self.line.used)

    @used.setter
    def used(self, value: bool) -> None:
        self.line.used = value

    def _send_keyframe(self) -> None:
        callback = self.on_keyframe_request
        if callback is not None:
            callback()

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        # The stock sender awaits one retransmission per entry of a NACK, duplicates included.
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            callback = self.on_nack
            if callback is not None:
                callback(packet.lost)
            return
        await super()._handle_rtcp_packet(packet)

    async def _run_rtcp(self) -> None:
        """The stock sender's RTCP loop, at libwebrtc's report intervals (audio 5 s, video 1 s; the stock
        loop reports every 0.5-1.5 s whatever the kind), with the forwarder's own counters."""
        getattr(self, "_RTCRtpSender__rtcp_started").set()  # noqa: B009
        interval = REPORT_INTERVAL_S[self.kind]
        try:
            while True:
                # As RFC 3550 (and the stock loop): randomized over [0.5, 1.5] times the interval.
                await asyncio.sleep(interval * (0.5 + random.random()))
                await super()._send_rtcp(self._report())
        except asyncio.CancelledError:
            pass
        await super()._send_rtcp([RtcpByePacket(sources=[self._ssrc])])
        getattr(self, "_RTCRtpSender__rtcp_exited").set()  # noqa: B009

    def _report(self) -> list[AnyRtcpPacket]:
        """A sender report of what was really forwarded on this line, and the SDES with its CNAME."""
        line = self.line
        ntp = int(line.last_ntp_timestamp)
        packets: list[AnyRtcpPacket] = [
            RtcpSrPacket(
                ssrc=self._ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=ntp,
                    rtp_timestamp=int(line.last_rtp_timestamp),
                    packet_count=int(line.packets_sent) & 0xFFFFFFFF,
                    octet_count=int(line.octets_sent) & 0xFFFFFFFF,
                ),
            )
        ]
        # Round-trip estimates from the subscriber's reports need the SR we really sent.
        setattr(self, "_RTCRtpSender__lsr", (ntp >> 16) & 0xFFFFFFFF)  # noqa: B010
        setattr(self, "_RTCRtpSender__lsr_time", time.time())  # noqa: B010
        cname = getattr(self, "_RTCRtpSender__cname", None)
        if cname is not None:
            chunk = RtcpSourceInfo(ssrc=self._ssrc, items=[(1, cname.encode("utf8"))])
            packets.append(RtcpSdesPacket(chunks=[chunk]))
        return packets


def bound_sendto(transport: Any, addr: tuple[str, int]) -> Callable[[bytes], None]:
    """``transport.sendto`` bound to ``addr``: the loop's C function for a uvloop transport. Under the
    tests' loopback guard (``netguard``), its own ``sender_to``, which checks ``addr`` before binding."""
    sender_to = getattr(transport, "sender_to", None)
    if sender_to is not None:
        bound: Callable[[bytes], None] = sender_to(addr)
        return bound
    return functools.partial(transport.sendto, addr=addr)


_HEADER = struct.Struct("!BBHII")


class RtpEgress:
    """Writes RTP onto one DTLS transport, bypassing the stock sender.

    Everything a packet needs is bound once and checked per packet by identity only: the nominated
    pair (its address and socket give a bound ``sendto``, see :func:`bound_sendto`) and the DTLS
    transport's SRTP session (its buffer, see :class:`~.srtp.SrtpWriter`). :meth:`write` builds the
    packet in that buffer, protects it in place and sends it, in one Python frame.
    """

    __slots__ = (
        "_c_line",
        "_dtls",
        "_handle",
        "_line",
        "_nominated",
        "_pair",
        "_protect",
        "_send",
        "_session",
        "_transport",
        "_writer",
        "send_errors",
    )

    def __init__(self, dtls: RTCDtlsTransport, line: Line | None = None) -> None:
        """``line``: the sending m-line's state, bound along (for the C fan-out, see :mod:`.fanout`)."""
        self._dtls = dtls
        self._line: Any = line
        self._c_line = line is not None and is_c_line(line)
        self._handle: SocketHandle | None = None
        """The socket handle ``_line`` is bound to (acquired while bound, released when unbound)."""
        self._nominated: dict[int, Any] = dtls._transport._connection._nominated
        """aioice's nominated pairs by component (cleared, never replaced, by aioice)."""
        self._pair: Any = None
        self._transport: Any = None
        """The pair's socket transport when ``_send`` was bound."""
        self._send: Callable[[bytes], None] | None = None
        """``sendto`` bound to the pair's remote address; None when not bound."""
        self._session: Any = None
        self._writer: SrtpWriter | None = None
        """:class:`~.srtp.SrtpWriter` of the DTLS transport's SRTP session ``_session`` (None for a
        session of another pylibsrtp, which only ``_protect`` knows how to use)."""
        self._protect: Protect | None = None
        self.send_errors = 0

    def _bound(self) -> bool:
        """Still bound to the current pair, socket and session (identity checks only)."""
        dtls, pair = self._dtls, self._pair
        return (
            self._send is not None
            and dtls._state is State.CONNECTED
            and pair.protocol.transport is self._transport
            and self._nominated.get(1) is pair
            and dtls._tx_srtp is self._session
        )

    def _bind(self) -> bool:
        """Bind to the current pair, socket and session; False (send nothing) until all exist."""
        self._send = None
        line = self._line
        if line is not None:
            self._unbind_line()
        if self._dtls._state is not State.CONNECTED:
            return False
        pair = self._nominated.get(1)
        transport = None if pair is None else pair.protocol.transport
        session = self._dtls._tx_srtp
        if pair is None or transport is None or session is None:
            return False
        if session is not self._session:
            self._session, self._writer, self._protect = session, srtp_writer(session), fast_protect(session)
        try:
            send = bound_sendto(transport, pair.remote_addr)  # the loopback guard's check, C line included
        except Exception:  # a destination the loopback guard refuses: as a failed send, not raised
            self.send_errors += 1
            return False
        self._pair, self._transport, self._send = pair, transport, send
        if self._c_line:  # a Python line never sends from C: no descriptor of its own (a dup) for it
            relayed = pair.local_candidate.type == "relay"
            handle = socket_handle(pair.protocol, transport, relayed)
            if handle is not None and bind_line(line, handle, pair.remote_addr, session):
                handle.acquire()
                self._handle = handle
        return True

    def still_bound(self) -> bool:
        """Rebind if the pair, socket or session changed, or the line lost its binding (the C fan-out's
        periodic check); whether bound, the line included."""
        if not self._c_line:
            return self._bound() or self._bind()
        line = self._line
        return (self._bound() and line.fd >= 0) or (self._bind() and line.fd >= 0)

    def unbind(self) -> None:
        """Forget the binding (a closing consumer): the line sends nothing until bound again."""
        self._send = None
        if self._line is not None:
            self._unbind_line()

    def _unbind_line(self) -> None:
        """The line sends nothing from C (first), then its socket handle is released."""
        unbind_line(self._line)
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.release()

    def write(
        self,
        first: int,
        second: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        block: bytes,
        payload: bytes,
    ) -> bool:
        """Send one RTP packet made of a header (``first``, ``second``: its first two bytes), ``block``
        (its extension block, or empty) and ``payload``; False (nothing sent) until connected."""
        dtls, pair = self._dtls, self._pair
        if (
            not (  # self._bound(), inline: this runs once per forwarded packet
                self._send is not None
                and dtls._state is State.CONNECTED
                and pair.protocol.transport is self._transport
                and self._nominated.get(1) is pair
                and dtls._tx_srtp is self._session
            )
            and not self._bind()
        ):
            return False
        writer = self._writer
        if writer is None:
            return self.send(rewritten(first, second, sequence_number, timestamp, ssrc, block, payload))
        buffer = writer.buffer
        end = 12 + len(block)
        size = end + len(payload)
        if size > writer.limit:
            self.send_errors += 1
            return False
        _HEADER.pack_into(buffer, 0, first, second, sequence_number, timestamp, ssrc)
        buffer[12:end] = block
        buffer[end:size] = payload
        length = writer.length
        length[0] = size
        try:
            if writer.call(writer.srtp, writer.cdata, length):
                raise SrtpError("srtp_protect refused a packet")
            self._send(buffer[0 : length[0]])  # type: ignore[misc]
        except Exception:  # a closing socket or an SRTP error: count it, never raise into the fan-out
            self.send_errors += 1
            return False
        return True

    def send(self, data: bytes) -> bool:
        """Protect and send one serialized RTP packet (retransmissions); False until connected."""
        if not self._bound() and not self._bind():
            return False
        try:
            self._send(self._protect(data))  # type: ignore[misc]
        except Exception:  # as in write()
            self.send_errors += 1
            return False
        return True


def rewritten(
    first: int, second: int, sequence_number: int, timestamp: int, ssrc: int, block: bytes, payload: bytes
) -> bytes:
    """The clear packet :meth:`RtpEgress.write` builds in place, as bytes."""
    return b"".join((_HEADER.pack(first, second, sequence_number, timestamp, ssrc), block, payload))


def add_forwarding_transceiver(pc: RTCPeerConnection, kind: str, direction: str) -> RTCRtpTransceiver:
    """Add a transceiver whose receiver forwards and whose sender is written by the SFU.

    Must be called before the transceiver is first negotiated.
    """
    require_pinned_versions()
    codecs.install()
    transceiver = pc.addTransceiver(kind, direction=direction)
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() in FORWARDED_CODECS]
    )
    transport = transceiver.receiver.transport
    sender = ForwardingSender(kind, transport)
    sender._stream_id = transceiver.sender._stream_id
    receiver = ForwardingReceiver(kind, transport)
    receiver._set_rtcp_ssrc(sender._ssrc)
    setattr(transceiver, "_RTCRtpTransceiver__sender", sender)  # noqa: B010
    setattr(transceiver, "_RTCRtpTransceiver__receiver", receiver)  # noqa: B010
    return transceiver


def ice_connection_of(pc: RTCPeerConnection) -> Connection | None:
    """The aioice connection of a (bundled) peer connection, once it has a transceiver."""
    dtls = dtls_transport_of(pc)
    return None if dtls is None else dtls.transport._connection


def dtls_transport_of(pc: RTCPeerConnection) -> RTCDtlsTransport | None:
    """The (bundled) DTLS transport of a connection, once it has a transceiver."""
    transceivers = pc.getTransceivers()
    return transceivers[0].receiver.transport if transceivers else None
