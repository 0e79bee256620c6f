"""One subscription: which producer goes to which subscriber's m-line, from activation to close, and
the answers to that subscriber's NACKs.

The rewriting itself is elsewhere: the header and extension block in :mod:`.rtp_header`, sequence and
timestamp continuity in :mod:`.continuity`, the NACK history and budgets in :mod:`.history` and
:mod:`.retransmission`, the socket in ``rtc.forwarding.RtpEgress``.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpTransceiver
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from ..rtc.access import header_extension_ids, negotiated_codecs, sender_ssrc
from ..rtc.fanout import is_c_line, set_mapping, set_offsets
from ..rtc.forwarding import ForwardingSender, RtpEgress, ntp_now
from .continuity import Continuity
from .retransmission import RetransmissionBudget, requested
from .rtp_header import ExtensionBlock, abs_send_time_of, rewrite

if TYPE_CHECKING:
    from .producer import Producer

logger = logging.getLogger(__name__)

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
        self._sent_before = 0
        """The line's packets_sent when this consumer began on it (see :attr:`packets_forwarded`)."""
        self._c_line = is_c_line(sender.line)
        """The line can join the producer's C fan-out (:mod:`~sfu_geofence.rtc.fanout`)."""
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
        self.continuity = Continuity()
        """The publisher's numbers and timestamps onto this m-line's SSRC."""
        self._extensions: ExtensionBlock | None = None
        self._keyframe_due = False

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid

    @property
    def packets_forwarded(self) -> int:
        """Packets handed to the subscriber's socket by this consumer (a bench reads this)."""
        return self.sender.packets_sent - self._sent_before

    @property
    def fast_ready(self) -> bool:
        """Ready for the producer's C fan-out: started, its first packet sent (and keyframe asked for),
        and its line bound to a socket and SRTP session the C code can use."""
        return (
            self._c_line
            and self.active
            and self.continuity.started
            and not self._keyframe_due
            and self.sender.line.fd >= 0
        )

    def still_bound(self) -> bool:
        """Rebind the egress if its pair, socket or session changed; whether the line can send."""
        egress = self._egress
        return egress is not None and egress.still_bound()

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
        extensions = self._extensions = ExtensionBlock(
            transceiver.mid, header_extension_ids(transceiver), self.kind
        )
        line = self.sender.line
        set_mapping(
            line,
            self._ssrc,
            self._pt_map,
            (1 if extensions.video else 2) if extensions.variable else 0,
            extensions.prefix,
            len(extensions.suffix),
            extensions.without,
        )
        self._sent_before = self.sender.packets_sent
        self._egress = RtpEgress(self.sender.transport, line)
        self.sender.on_keyframe_request = self.producer.request_keyframe
        self.sender.on_nack = self.retransmit
        self.active = True
        # Asked for on the first packet really sent: before the subscriber's DTLS is up, the keyframe
        # would be dropped and the request limiter would then delay the subscriber's own PLI.
        self._keyframe_due = True
        self.producer.add_consumer(self)
        return True

    def forward(self, packet: RtpPacket, abs_send_time: bytes, ntp: int) -> bool:
        """Rewrite the header of one producer packet for this subscriber and send it (the Python path:
        until :attr:`fast_ready`, and for padding); whether it is now :attr:`fast_ready`."""
        pt = self._pt_map.get(packet.payload_type)
        if pt is None:
            return False
        continuity = self.continuity
        if continuity.sequence_offset is None:
            self._start(packet, ntp)
        # Continuity.sequence_number/timestamp inline: the per-packet path (measured by bench/forwarding).
        sequence_number = (packet.sequence_number + continuity.sequence_offset) & 0xFFFF  # type: ignore[operator]
        timestamp = (packet.timestamp + continuity.timestamp_offset) & 0xFFFFFFFF
        # Set together at activation, which precedes any forward.
        block = self._extensions.for_packet(packet, abs_send_time)  # type: ignore[union-attr]
        if packet.padding_size:
            sent = self._egress.send(rewrite(packet, pt, sequence_number, timestamp, self._ssrc, block))  # type: ignore[union-attr]
        else:  # built in the SRTP buffer, as rewrite() would (measured by bench/forwarding)
            sent = self._egress.write(  # type: ignore[union-attr]
                0x90 if block else 0x80,
                (packet.marker << 7) | pt,
                sequence_number,
                timestamp,
                self._ssrc,
                block,
                packet.payload,
            )
        if not sent:
            return False
        line = self.sender.line  # as fanout.c counts
        line.packets_sent += 1
        line.octets_sent += len(packet.payload)
        line.last_rtp_timestamp = timestamp
        line.last_ntp_timestamp = ntp
        # The SSRC's next number moves forward only (a reordered packet leaves it).
        if (sequence_number - line.next_sequence_number) & 0xFFFF < 0x8000:
            line.next_sequence_number = (sequence_number + 1) & 0xFFFF
        if self._keyframe_due:
            self._keyframe_due = False
            self.producer.request_keyframe()
        return self._c_line and line.fd >= 0

    def _start(self, packet: RtpPacket, ntp: int) -> None:
        """Continue this SSRC's numbers and timestamps from ``packet`` on (at the codec's clock rate)."""
        codec = self.producer.codecs.get(packet.payload_type)
        clock_rate = codec.clockRate if codec is not None else (90000 if self.kind == "video" else 48000)
        continuity = self.continuity
        continuity.start(self.sender, packet.sequence_number, packet.timestamp, clock_rate, ntp)
        set_offsets(self.sender.line, continuity.sequence_offset or 0, continuity.timestamp_offset)

    def restart(self) -> None:
        """The producer's stream was reset: number its next packet as the continuation of ours."""
        self.continuity.restart()

    def retransmit(self, lost: list[int]) -> None:
        """Answer one NACK (sequence numbers as this subscriber saw them) from the producer's history.

        Each number once, at most ``MAX_NACK_ENTRIES`` of them, within this consumer's budget.
        """
        continuity = self.continuity
        if not self.active or not continuity.started:
            return
        wanted = requested(lost)
        granted = self._budget.take(len(wanted))
        self.nacks_over_budget += len(lost) - granted
        extensions = self._extensions
        egress = self._egress
        assert extensions is not None
        assert egress is not None
        block = extensions.for_retransmission(abs_send_time_of(ntp_now()))
        unanswered = 0
        for sequence_number in wanted[:granted]:
            # None for numbers from before this consumer started: a recycled m-line's previous producer's.
            published = continuity.published(sequence_number)
            original = None if published is None else self.producer.from_history(published)
            pt = None if original is None else self._pt_map.get(original.payload_type)
            if original is None or pt is None:
                unanswered += 1
                continue
            data = rewrite(
                original, pt, sequence_number, continuity.timestamp(original.timestamp), self._ssrc, block
            )
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
        if self._egress is not None:
            self._egress.unbind()
        if self.sender.on_nack == self.retransmit:
            self.sender.on_nack = None
            self.sender.on_keyframe_request = None
