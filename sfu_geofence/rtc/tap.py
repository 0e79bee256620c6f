"""Observe the RTP packets of a receiver without depayloading or decoding them.

A stock :class:`aiortc.RTCRtpReceiver` starts a decoder thread in ``receive()`` and, for every packet,
runs the bandwidth estimator, NACK generator, depayloader and jitter buffer before queueing whole
frames to that thread. A synthetic peer that only wants to know *that* media arrives cannot afford this
for dozens of incoming tracks. :func:`tap_receiver` replaces, on one receiver instance, two methods:

* ``receive()`` does the stock bookkeeping (codecs, RTX SSRCs, registration with the DTLS transport's
  ``RtpRouter``, the RTCP task) but starts no decoder thread;
* ``_handle_rtp_packet()`` (called by ``RtpRouter`` once per incoming RTP packet) feeds the receiver's
  RTCP reception statistics, unwraps RTX, and hands the packet to an observer. Nothing is depayloaded,
  buffered or decoded, and the receiver's track never yields a frame.

RTCP kept and lost, compared with a stock receiver:

* kept: receiver reports (RR, every 0.5-1.5 s, with loss, jitter, highest sequence and LSR/DLSR from
  the sender's SRs), so the far end sees a live receiver and its loss; PLI on request
  (:meth:`ReceiverTap.request_keyframe`);
* lost: NACK (missing packets are counted, never re-requested: loss measured is loss suffered), automatic
  PLI on jitter-buffer loss or decode error, REMB (no receive-side bandwidth estimate is sent) and
  ``getSynchronizationSources()``.

Everything here is written against aiortc 1.16.0 (see :func:`~sfu_geofence.rtc.require_pinned_versions`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtp import RtpPacket

from . import require_pinned_versions
from .inbound import InboundStreams

logger = logging.getLogger(__name__)

RtpObserver = Callable[[RtpPacket], None]
"""Called once per incoming media RTP packet (RTX already unwrapped), on the event loop; keep it cheap."""

_TAP_ATTRIBUTE = "_sfu_geofence_tap"


class ReceiverTap:
    """The observing side of one tapped :class:`aiortc.RTCRtpReceiver` (see the module docstring)."""

    def __init__(self, receiver: RTCRtpReceiver, observer: RtpObserver) -> None:
        self.receiver = receiver
        self.observer = observer
        self.media_ssrc: int | None = None
        """SSRC of the last media packet observed (the target of :meth:`request_keyframe`)."""

        # The stock receiver's own dicts: its RTCP loop reports these statistics.
        self._inbound = InboundStreams(
            _private(receiver, "codecs"), _private(receiver, "rtx_ssrc"), _private(receiver, "remote_streams")
        )
        self._track_ended = False

    @property
    def started(self) -> bool:
        """True once aiortc has started the receiver (media can arrive)."""
        started: bool = _private(self.receiver, "started")
        return started

    async def request_keyframe(self) -> None:
        """Send a PLI for the observed media SSRC (nothing before the first packet arrives)."""
        if self.media_ssrc is not None:
            await self.receiver._send_rtcp_pli(self.media_ssrc)

    async def _receive(self, parameters: RTCRtpReceiveParameters) -> None:
        """``RTCRtpReceiver.receive`` minus the decoder thread."""
        receiver = self.receiver
        if self.started:
            return
        self._inbound.configure(parameters)
        receiver.transport._register_rtp_receiver(receiver, parameters)
        _set_private(receiver, "rtcp_task", asyncio.ensure_future(receiver._run_rtcp()))
        _set_private(receiver, "started", True)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """Once per incoming RTP packet: RTCP statistics, RTX unwrap, observer. No depayloading."""
        if not self.receiver._enabled:
            return
        media = self._inbound.accept(packet)
        if media is None:
            return
        packet = media
        self.media_ssrc = packet.ssrc
        self.observer(packet)

    def _stop_decoder(self) -> None:
        """Where the stock receiver stops its decoder: end the track the same way, once."""
        track = self.receiver._track
        if track is not None and not self._track_ended:
            self._track_ended = True
            track._queue.put_nowait(None)


def tap_receiver(receiver: RTCRtpReceiver, observer: RtpObserver) -> ReceiverTap:
    """Make ``receiver`` hand its RTP packets to ``observer`` instead of decoding them.

    Call before aiortc starts the receiver: in the connection's ``"track"`` handler or right after
    ``setRemoteDescription`` returns (aiortc starts receivers later, once DTLS is up). Raises
    RuntimeError if the receiver was already started (its decoder thread would already be running) or
    already tapped.
    """
    require_pinned_versions()
    if getattr(receiver, _TAP_ATTRIBUTE, None) is not None:
        raise RuntimeError("this RTCRtpReceiver is already tapped")
    tap = ReceiverTap(receiver, observer)
    if tap.started:
        raise RuntimeError("tap the RTCRtpReceiver before it starts: its decoder thread is already running")
    # Instance attributes shadow the class's methods; aiortc looks all three up on the instance.
    setattr(receiver, "receive", tap._receive)  # noqa: B010
    setattr(receiver, "_handle_rtp_packet", tap._handle_rtp_packet)  # noqa: B010
    setattr(receiver, "_RTCRtpReceiver__stop_decoder", tap._stop_decoder)  # noqa: B010
    setattr(receiver, _TAP_ATTRIBUTE, tap)
    logger.debug("tapped %r", receiver)
    return tap


def tap_of(receiver: RTCRtpReceiver) -> ReceiverTap | None:
    """The tap installed on ``receiver``, if any."""
    tap: ReceiverTap | None = getattr(receiver, _TAP_ATTRIBUTE, None)
    return tap


def decoder_thread_of(receiver: RTCRtpReceiver) -> Any:
    """The receiver's decoder thread (None when never started or stopped), for tests and diagnostics."""
    return _private(receiver, "decoder_thread")


def _private(receiver: RTCRtpReceiver, name: str) -> Any:
    return getattr(receiver, f"_RTCRtpReceiver__{name}")


def _set_private(receiver: RTCRtpReceiver, name: str, value: object) -> None:
    setattr(receiver, f"_RTCRtpReceiver__{name}", value)
