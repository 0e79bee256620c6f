"""What every non-decoding receiver does first with a packet: reception statistics, then RTX unwrapping.

Shared by :class:`~sfu_geofence.rtc.forwarding.ForwardingReceiver` (the SFU's ingress) and
:class:`~sfu_geofence.rtc.tap.ReceiverTap` (synthetic peers), so that both feed aiortc's receiver
reports the same way the stock ``RTCRtpReceiver._handle_rtp_packet`` does.
"""

from __future__ import annotations

from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket, unwrap_rtx


class InboundStreams:
    """Negotiated codecs and per-SSRC statistics of one receiver (the dicts its RTCP loop reads).

    Only the SSRCs the remote signalled (``a=ssrc``: the media SSRC and its RTX) are accepted. aiortc's
    router hands a receiver any unknown SSRC whose payload type matches: without this, a sender
    spraying random SSRCs would grow the statistics (and the router's table) without bound and move
    the media SSRC that NACKs and keyframe requests name. When the remote signalled none (``a=ssrc`` is
    optional), the first media SSRC and then the first RTX SSRC are latched and every other dropped.
    """

    __slots__ = ("_latched_media", "codecs", "rtx_payload_types", "rtx_ssrc", "signalled", "ssrcs", "streams")

    def __init__(
        self,
        codecs: dict[int, RTCRtpCodecParameters],
        rtx_ssrc: dict[int, int],
        streams: dict[int, StreamStatistics],
    ) -> None:
        self.codecs = codecs
        """Payload type -> codec."""
        self.rtx_ssrc = rtx_ssrc
        """RTX SSRC -> media SSRC."""
        self.streams = streams
        """SSRC -> reception statistics (the stock RTCP loop reports these)."""
        self.rtx_payload_types: set[int] = set()
        self.ssrcs: set[int] = set()
        """SSRCs accepted: signalled, or latched."""
        self.signalled = False
        self._latched_media: int | None = None

    def configure(self, parameters: RTCRtpReceiveParameters) -> None:
        """Take the negotiated receive parameters (what ``RTCRtpReceiver.receive`` does with them)."""
        for codec in parameters.codecs:
            if codec.payloadType is None:  # never for negotiated codecs
                continue
            self.codecs[codec.payloadType] = codec
            if is_rtx(codec):
                self.rtx_payload_types.add(codec.payloadType)
        for encoding in parameters.encodings:
            self.signalled = True
            self.ssrcs.add(encoding.ssrc)
            if encoding.rtx:
                self.rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
                self.ssrcs.add(encoding.rtx.ssrc)

    def admits(self, packet: RtpPacket) -> bool:
        """Whether the packet's SSRC is one of this receiver's (latching it if none was signalled)."""
        ssrc = packet.ssrc
        if ssrc in self.ssrcs:
            return True
        if self.signalled or packet.payload_type not in self.codecs:
            return False
        if packet.payload_type in self.rtx_payload_types:
            media = self._latched_media
            if media is None or media in self.rtx_ssrc.values():
                return False  # RTX before any media, or a second RTX stream
            self.rtx_ssrc[ssrc] = media
        elif self._latched_media is None:
            self._latched_media = ssrc
        else:
            return False
        self.ssrcs.add(ssrc)
        return True

    def accept(self, packet: RtpPacket) -> RtpPacket | None:
        """Once per packet: count it; return the media packet (RTX unwrapped), None to drop it."""
        payload_type = packet.payload_type
        codec = self.codecs.get(payload_type)
        if codec is None or not self.admits(packet):
            return None
        stream = self.streams.get(packet.ssrc)
        if stream is None:
            stream = self.streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if payload_type in self.rtx_payload_types:
            original_ssrc = self.rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or not isinstance(apt, int):
                return None
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
        return packet
