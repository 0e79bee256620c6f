"""One forwarding of a producer to one subscriber: SSRC/PT/sequence/timestamp rewriting, NACK answers."""

from __future__ import annotations

import itertools
import logging
import struct
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from ..rtc.access import header_extension_ids, negotiated_codecs, sender_ssrc
from ..rtc.forwarding import ForwardingSender, RtpEgress, ntp_now
from .history import StoredPacket
from .retransmission import RetransmissionBudget, requested

if TYPE_CHECKING:
    from .producer import Producer

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_ONE_BYTE_PROFILE = 0xBEDE
_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
_ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

_ids = itertools.count(1)


def codec_key(codec: RTCRtpCodecParameters) -> tuple[str, int, str, str]:
    """What must match for a payload to be forwarded unchanged under another payload type."""
    parameters = codec.parameters
    return (
        codec.mimeType.lower(),
        codec.clockRate,
        str(parameters.get("packetization-mode", "")),
        str(parameters.get("profile-level-id", "")).lower(),
    )


class ExtensionBlock:
    """Header-extension bytes for one subscriber: its ``mid``, plus abs-send-time or audio level.

    Precomputed at activation (one-byte header form, RFC 8285) so that the per-packet work is two
    concatenations. ``ids`` maps extension URIs to the ids the subscriber negotiated.
    """

    def __init__(self, mid: str, ids: dict[str, int], kind: str) -> None:
        mid_id = ids.get(_MID_URI)
        encoded_mid = mid.encode()
        fixed = bytes([(mid_id << 4) | (len(encoded_mid) - 1)]) + encoded_mid if mid_id else b""
        variable_uri, variable_length = (_ABS_SEND_TIME_URI, 3) if kind == "video" else (_AUDIO_LEVEL_URI, 1)
        variable_id = ids.get(variable_uri)
        self.video = kind == "video"
        self.without = self._block(fixed)
        """The whole block when the variable element is absent (or not negotiated)."""
        self.variable = variable_id is not None
        if variable_id is not None:
            body_length = len(fixed) + 1 + variable_length
            pad = (-body_length) % 4
            self.prefix = (
                _EXTENSION_HEADER.pack(_ONE_BYTE_PROFILE, (body_length + pad) // 4)
                + fixed
                + bytes([(variable_id << 4) | (variable_length - 1)])
            )
            self.suffix = bytes(pad)
        else:
            self.prefix = self.suffix = b""

    def for_packet(self, packet: RtpPacket, abs_send_time: bytes) -> bytes:
        """The block for one forwarded packet (``abs_send_time``: 3 bytes, used for video)."""
        if not self.variable:
            return self.without
        if self.video:
            return self.prefix + abs_send_time + self.suffix
        level = packet.extensions.audio_level
        if level is None:
            return self.without
        return self.prefix + bytes(((level[0] << 7) | level[1],)) + self.suffix

    def for_retransmission(self, abs_send_time: bytes) -> bytes:
        """The block for a packet sent again from the history (which keeps no audio level)."""
        if self.variable and self.video:
            return self.prefix + abs_send_time + self.suffix
        return self.without

    @staticmethod
    def _block(body: bytes) -> bytes:
        if not body:
            return b""
        pad = (-len(body)) % 4
        return _EXTENSION_HEADER.pack(_ONE_BYTE_PROFILE, (len(body) + pad) // 4) + body + bytes(pad)


def rewrite(
    packet: RtpPacket | StoredPacket, pt: int, sequence_number: int, timestamp: int, ssrc: int, block: bytes
) -> bytes:
    """Serialize ``packet`` with one subscriber's header fields and extension block; payload, padding kept."""
    padding = packet.padding_size
    first = 0x80 | (0x10 if block else 0) | (0x20 if padding else 0)
    header = _HEADER.pack(first, (packet.marker << 7) | pt, sequence_number, timestamp, ssrc)
    if padding:
        return b"".join((header, block, packet.payload, bytes(padding - 1), bytes((padding,))))
    return b"".join((header, block, packet.payload))


class Consumer:
    """Forwards one producer's packets to one subscriber's send m-line.

    Created inactive when the subscription is decided; :meth:`activate` (after the subscriber's
    answer) joins the producer's fan-out. Closing never touches the producer or other consumers.
    """

    def __init__(
        self,
        producer: Producer,
        subscriber_id: str,
        transceiver: RTCRtpTransceiver,
        subscriber_budget: RetransmissionBudget | None = None,
    ) -> None:
        """``subscriber_budget`` is shared by all of the subscriber's consumers (their NACKs arrive
        together, one compound RTCP datagram can name every stream)."""
        sender = transceiver.sender
        if not isinstance(sender, ForwardingSender):
            raise TypeError("a consumer needs a transceiver made by add_forwarding_transceiver")
        self.id = f"co{next(_ids)}"
        self.producer = producer
        self.subscriber_id = subscriber_id
        self.transceiver = transceiver
        self.sender = sender
        self.kind = producer.kind
        self.app_data: dict[str, Any] = {}
        self.active = False
        self.closed = False
        self.packets_forwarded = 0
        """Packets handed to the subscriber's socket (a bench reads this)."""
        self.retransmissions = 0
        self.nacks_unanswerable = 0
        """NACKed numbers not answered: not ours, or no longer (or never) in the producer's history."""
        self.nacks_over_budget = 0
        """NACK entries dropped by :mod:`~sfu_geofence.sfu.retransmission`: repeats, beyond the cap per
        NACK, or over the budget."""
        self._budget = RetransmissionBudget(shared=subscriber_budget)
        self._egress: RtpEgress | None = None
        self._ssrc = sender_ssrc(sender)
        self._pt_map: dict[int, int] = {}
        self._seq_offset: int | None = None
        self._ts_offset = 0
        self._extensions: ExtensionBlock | None = None
        self._first_sequence_number = 0
        """The first sequence number this consumer sent (as the subscriber numbers them)."""
        self._keyframe_due = False

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    def activate(self) -> bool:
        """Start forwarding after the subscriber accepted the m-line; False if no codec in common."""
        if self.closed or self.active:
            return self.active
        transceiver = self.transceiver
        theirs = {
            codec_key(c): c.payloadType
            for c in negotiated_codecs(transceiver)
            if c.payloadType is not None and not is_rtx(c)
        }
        self._pt_map = {
            pt: theirs[codec_key(codec)]
            for pt, codec in self.producer.codecs.items()
            if not is_rtx(codec) and codec_key(codec) in theirs
        }
        if not self._pt_map or transceiver.mid is None:
            logger.debug("consumer %s: no codec in common with the subscriber", self.id)
            return False
        self._extensions = ExtensionBlock(transceiver.mid, header_extension_ids(transceiver), self.kind)
        self._egress = RtpEgress(self.sender.transport)
        self.sender.on_keyframe_request = self.producer.request_keyframe
        self.sender.on_nack = self.retransmit
        self.active = True
        # Asked for on the first packet really sent: before the subscriber's DTLS is up, the keyframe
        # would be dropped and the request limiter would then delay the subscriber's own PLI.
        self._keyframe_due = True
        self.producer.add_consumer(self)
        return True

    def forward(self, packet: RtpPacket, abs_send_time: bytes, ntp: int) -> None:
        """Once per producer packet: rewrite the header for this subscriber and send."""
        pt = self._pt_map.get(packet.payload_type)
        if pt is None:
            return
        if self._seq_offset is None:
            self._start(packet, ntp)
        sequence_number = (packet.sequence_number + self._seq_offset) & 0xFFFF  # type: ignore[operator]
        timestamp = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        # _send without its call and checks: set together at activation, which precedes any forward
        block = self._extensions.for_packet(packet, abs_send_time)  # type: ignore[union-attr]
        data = rewrite(packet, pt, sequence_number, timestamp, self._ssrc, block)
        if self._egress.send(data):  # type: ignore[union-attr]
            sender = self.sender
            self.packets_forwarded += 1
            sender.packets_sent += 1
            sender.octets_sent += len(packet.payload)
            sender.last_rtp_timestamp = timestamp
            sender.last_ntp_timestamp = ntp
            if (sequence_number - sender.next_sequence_number) & 0xFFFF < 0x8000:
                sender.next_sequence_number = (sequence_number + 1) & 0xFFFF
            if self._keyframe_due:
                self._keyframe_due = False
                self.producer.request_keyframe()

    def _send(
        self, packet: RtpPacket, pt: int, sequence_number: int, timestamp: int, abs_send_time: bytes
    ) -> bool:
        extensions = self._extensions
        assert extensions is not None
        assert self._egress is not None
        block = extensions.for_packet(packet, abs_send_time)
        return self._egress.send(rewrite(packet, pt, sequence_number, timestamp, self._ssrc, block))

    def _start(self, packet: RtpPacket, ntp: int) -> None:
        """Pick offsets so this SSRC's sequence numbers and timestamps continue where they were."""
        sender = self.sender
        codec = self.producer.codecs.get(packet.payload_type)
        clock_rate = codec.clockRate if codec is not None else (90000 if self.kind == "video" else 48000)
        if sender.used:
            elapsed = max(0.0, (ntp - sender.last_ntp_timestamp) / 4294967296.0)
            next_timestamp = sender.last_rtp_timestamp + max(1, int(elapsed * clock_rate))
        else:
            next_timestamp = sender.next_timestamp
            sender.used = True
        self._seq_offset = (sender.next_sequence_number - packet.sequence_number) & 0xFFFF
        self._first_sequence_number = sender.next_sequence_number
        self._ts_offset = (next_timestamp - packet.timestamp) & 0xFFFFFFFF

    def restart(self) -> None:
        """The producer's stream was reset: number its next packet as the continuation of ours."""
        self._seq_offset = None

    def retransmit(self, lost: list[int]) -> None:
        """Answer one NACK (sequence numbers as this subscriber saw them) from the producer's history.

        Each number once, at most ``MAX_NACK_ENTRIES`` of them, within this consumer's budget.
        """
        if not self.active or self._seq_offset is None:
            return
        wanted = requested(lost)
        granted = self._budget.take(len(wanted))
        self.nacks_over_budget += len(lost) - granted
        seq_offset = self._seq_offset
        first = self._first_sequence_number
        extensions = self._extensions
        egress = self._egress
        assert extensions is not None
        assert egress is not None
        block = extensions.for_retransmission(((ntp_now() >> 14) & 0x00FFFFFF).to_bytes(3, "big"))
        unanswered = 0
        for sequence_number in wanted[:granted]:
            original = None
            # Numbers from before this consumer started are a recycled m-line's previous producer's.
            if (sequence_number - first) & 0xFFFF < 0x8000:
                original = self.producer.from_history((sequence_number - seq_offset) & 0xFFFF)
            pt = None if original is None else self._pt_map.get(original.payload_type)
            if original is None or pt is None:
                unanswered += 1
                continue
            timestamp = (original.timestamp + self._ts_offset) & 0xFFFFFFFF
            data = rewrite(original, pt, sequence_number, timestamp, self._ssrc, block)
            if egress.send(data):
                self.retransmissions += 1
        self.nacks_unanswerable += unanswered
        self._budget.refund(unanswered)

    def close(self) -> None:
        """Leave the producer's fan-out and stop answering feedback (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.active = False
        self.producer.remove_consumer(self)
        if self.sender.on_nack == self.retransmit:
            self.sender.on_nack = None
            self.sender.on_keyframe_request = None
