"""Media in from one participant: one track, its NACK-able history, keyframe requests to its publisher."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from ..rtc.access import negotiated_codecs
from ..rtc.fanout import Fanout
from ..rtc.forwarding import ForwardingReceiver, ntp_now
from ..rtc.nack import STREAM_RESET_DISTANCE
from .history import PacketHistory, StoredPacket
from .rtp_header import abs_send_time_of

if TYPE_CHECKING:
    from .consumer import Consumer

KEYFRAME_REQUEST_INTERVAL = 0.5
"""At most one PLI per producer per this many seconds; requests in between are merged into one."""

BINDING_CHECK_INTERVAL = 0.1
"""How often (s) the consumers on the C fan-out have their binding checked (pair, socket, SRTP session):
the Python path checks per packet, C trusts a binding this long (a renominated pair, say). Timed on the
wall clock the packets carry (NTP): a step back makes a check due at once, not after the step."""
_BINDING_CHECK_NTP = int(BINDING_CHECK_INTERVAL * 4294967296)

logger = logging.getLogger(__name__)

_ids = itertools.count(1)


class Producer:
    """One published track. Packets fan out to its consumers synchronously, on the event loop."""

    def __init__(
        self,
        participant_id: str,
        participant_name: str,
        kind: str,
        transceiver: RTCRtpTransceiver,
        receiver: ForwardingReceiver,
    ) -> None:
        self.id = f"pr{next(_ids)}"
        self.participant_id = participant_id
        self.participant_name = participant_name
        self.kind = kind
        self.receiver = receiver
        self._transceiver = transceiver
        self.app_data: dict[str, Any] = {}
        """The application's own tags (mediasoup's ``appData``)."""
        self.closed = False
        self.packets_received = 0
        self.keyframe_requests_sent = 0
        self.forwarding_errors = 0
        self.stream_resets = 0
        """Sequence-number jumps taken as a new stream (farther than ``STREAM_RESET_DISTANCE``)."""
        self._history = PacketHistory()
        self._highest: int | None = None
        self._consumers: dict[str, Consumer] = {}
        self._fanout: tuple[Consumer, ...] = ()
        self._c = Fanout()
        """The consumers that are :attr:`Consumer.fast_ready`, by their lines (one C call per packet)."""
        self._python: tuple[Consumer, ...] = ()
        """The others: forwarded one by one in Python."""
        self._fast: tuple[Consumer, ...] = ()
        """The consumers on the C fan-out (whose bindings are checked)."""
        self._checked_ntp = 0
        self._last_keyframe_request = -KEYFRAME_REQUEST_INTERVAL
        self._keyframe_timer: asyncio.TimerHandle | None = None
        receiver.sink = self.on_packet

    @property
    def codecs(self) -> dict[int, RTCRtpCodecParameters]:
        """Codecs the publisher may send, by payload type (negotiated in its answer)."""
        return {c.payloadType: c for c in negotiated_codecs(self._transceiver) if c.payloadType is not None}

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return self._fanout

    @property
    def consumers_in_c(self) -> tuple[Consumer, ...]:
        """The consumers whose packets the C fan-out sends (the others take the Python path)."""
        return self._fast

    def on_packet(self, packet: RtpPacket) -> None:
        """Once per received packet: remember it, then hand it to every consumer."""
        self.packets_received += 1
        sequence_number = packet.sequence_number
        highest = self._highest
        if highest is None:
            self._highest = sequence_number
        else:
            distance = (sequence_number - highest) & 0xFFFF
            if distance <= STREAM_RESET_DISTANCE:
                self._highest = sequence_number
            elif distance < 0x10000 - STREAM_RESET_DISTANCE:
                self._reset(sequence_number)
        self._history.add(packet)
        if not self._fanout:
            return
        ntp = ntp_now()
        abs_send_time = abs_send_time_of(ntp)
        if not 0 <= ntp - self._checked_ntp <= _BINDING_CHECK_NTP:
            self._check_bindings(ntp)  # may regroup: read the groups after it, or a consumer gets it twice
        python = self._python
        if self._c.count:
            if packet.padding_size:  # rare (bandwidth probes): rewrite() keeps the padding
                python = self._fanout
            else:
                self._c.send(packet, abs_send_time, ntp)
        promote = False
        for consumer in python:
            try:  # free unless raised (Python 3.11): one broken forwarding must not stop the others
                promote |= consumer.forward(packet, abs_send_time, ntp)
            except Exception:
                self.forwarding_errors += 1
                if self.forwarding_errors == 1:
                    logger.exception("forwarding %s to %s failed", self.id, consumer.subscriber_id)
        if promote and python is self._python:
            self._regroup()

    def _check_bindings(self, ntp: int) -> None:
        """Every :data:`BINDING_CHECK_INTERVAL`: consumers on the C fan-out whose binding is gone leave
        it (the Python path binds again per packet), ready ones join it."""
        self._checked_ntp = ntp
        changed = False
        for consumer in self._fast:
            if not consumer.still_bound():
                changed = True
        if changed or any(c.fast_ready for c in self._python):
            self._regroup()

    def _regroup(self) -> None:
        """Split the consumers between the C fan-out and the Python path by :attr:`Consumer.fast_ready`."""
        fast: list[Consumer] = []
        python: list[Consumer] = []
        for consumer in self._fanout:  # one pass: a join regroups every producer of the room
            (fast if consumer.fast_ready else python).append(consumer)
        self._fast, self._python = tuple(fast), tuple(python)
        self._c.set([c.sender.line for c in fast])

    def _reset(self, sequence_number: int) -> None:
        """A jump too far to be loss: a new stream. Subscribers see it continue their numbering, and
        get a keyframe; old numbers are forgotten, so no NACK can fetch a packet of the old stream."""
        self.stream_resets += 1
        self._highest = sequence_number
        self._history.clear()
        for consumer in self._fanout:
            consumer.restart()
        self._regroup()
        self.request_keyframe()

    def from_history(self, sequence_number: int) -> StoredPacket | None:
        """The packet with this (publisher-side) sequence number, if still remembered."""
        return self._history.get(sequence_number)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, merging requests that come faster than the limit."""
        if self.closed or self.kind != "video" or self._keyframe_timer is not None:
            return
        wait = self._last_keyframe_request + KEYFRAME_REQUEST_INTERVAL - time.monotonic()
        if wait <= 0:
            self._send_keyframe_request()
        else:
            self._keyframe_timer = asyncio.get_running_loop().call_later(wait, self._send_keyframe_request)

    def _send_keyframe_request(self) -> None:
        self._keyframe_timer = None
        if self.closed:
            return
        self._last_keyframe_request = time.monotonic()
        self.keyframe_requests_sent += 1
        self.receiver.request_keyframe()

    def add_consumer(self, consumer: Consumer) -> None:
        self._consumers[consumer.id] = consumer
        self._fanout = tuple(self._consumers.values())
        self._regroup()

    def remove_consumer(self, consumer: Consumer) -> None:
        if self._consumers.pop(consumer.id, None) is not None:
            self._fanout = tuple(self._consumers.values())
            self._regroup()

    def close(self) -> list[Consumer]:
        """Stop forwarding; returns the consumers that were attached (the caller closes them)."""
        if self.closed:
            return []
        self.closed = True
        self.receiver.sink = None
        if self._keyframe_timer is not None:
            self._keyframe_timer.cancel()
            self._keyframe_timer = None
        consumers = list(self._fanout)
        self._consumers.clear()
        self._fanout = ()
        self._regroup()
        self._history.clear()
        return consumers
