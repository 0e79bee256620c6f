"""Count the media a synthetic peer receives, per track, without depayloading or decoding it.

A :class:`ReceiveMeter` taps the receivers of a client :class:`aiortc.RTCPeerConnection`
(:mod:`sfu_geofence.rtc.tap`: no decoder thread, RTCP receiver reports still sent, no NACK) and gives
each incoming track a :class:`TrackMeter` labelled with the *source* the caller names (the publishing
participant's id). A track meter keeps, per packet, only counters and appends to bounded arrays:

* packets, bytes, frames (a frame is the first packet carrying a newer RTP timestamp: one per video
  picture, one per audio packet), lost packets (RFC 3550 style: extended highest sequence number minus
  packets received, so reordering and 16-bit wrap-around are handled and late packets cancel their loss);
* the arrival time of every frame (a ring of ``gap_capacity`` frames) from which
  :meth:`TrackMeter.gap_stats` computes inter-frame gaps in any time window (before vs. around an event);
* a received-rate time series in buckets of ``bucket_s`` aligned to the clock (so series of different
  tracks, even in different processes, line up bucket for bucket).

Clock: :func:`time.monotonic` seconds (CLOCK_MONOTONIC on Linux, shared by all processes of a machine,
so arrival times measured by receivers in different worker processes are comparable). Everything runs
on one event loop; nothing is thread-safe.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

from ..rtc.tap import ReceiverTap, tap_of, tap_receiver

Clock = Callable[[], float]

MAX_DROPOUT = 3000
"A forward sequence jump this large or larger is believed only when the next packet continues it."
MAX_MISORDER = 100
"A packet at most this far behind the highest sequence number is late, not a restart (RFC 3550 A.1)."
LATE_TIMESTAMP_LIMIT = (1 << 32) - (1 << 20)
"An RTP timestamp up to 2**20 ticks (11 s of video, 21 s of audio) older than the newest is a late packet."

DEFAULT_BUCKET_S = 0.25
DEFAULT_GAP_CAPACITY = 1 << 15
"""Frame arrival times kept per track: 36 min of 15 fps video, 11 min of 50 packet/s audio (8 B each)."""


@dataclass(frozen=True)
class GapStats:
    """Inter-frame gaps that ended inside a time window."""

    count: int
    "Number of gaps (frames that arrived in the window and had a predecessor)."
    max_ms: float
    "Largest gap, 0 when there is none."
    p99_ms: float
    "99th percentile (nearest rank) of the gaps, 0 when there is none."
    complete: bool
    "False when the window reaches back before the oldest frame time still kept (ring overwritten)."


@dataclass(frozen=True)
class RateSample:
    """What arrived during one bucket of the rate time series."""

    start: float
    "Bucket start, monotonic seconds (a multiple of the bucket length)."
    duration: float
    "Bucket length in seconds."
    packets: int
    bytes: int
    "RTP payload bytes."
    frames: int

    @property
    def bitrate(self) -> float:
        """Payload bits per second during the bucket."""
        return self.bytes * 8 / self.duration

    @property
    def frame_rate(self) -> float:
        """Frames per second during the bucket."""
        return self.frames / self.duration


@dataclass(frozen=True)
class TrackCounts:
    """A snapshot of a :class:`TrackMeter`'s counters."""

    source: str
    kind: str
    packets: int
    bytes: int
    frames: int
    lost: int
    first_arrival: float | None
    "Monotonic seconds of the first packet, None before any."
    last_arrival: float | None
    "Monotonic seconds of the last packet, None before any."


class TrackMeter:
    """Counters, frame arrival times and a rate series for one incoming track (see module docstring)."""

    def __init__(
        self,
        kind: str,
        source: str,
        *,
        bucket_s: float = DEFAULT_BUCKET_S,
        gap_capacity: int = DEFAULT_GAP_CAPACITY,
        clock: Clock = time.monotonic,
    ) -> None:
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, got {bucket_s}")
        if gap_capacity < 2:
            raise ValueError(f"gap_capacity must be at least 2, got {gap_capacity}")
        self.kind = kind
        self.source = source
        "The publishing participant's id, as the caller names it (a plain attribute: relabel freely)."
        self.bucket_s = bucket_s
        self.gap_capacity = gap_capacity
        self._clock = clock

        self.packets = 0
        self.bytes = 0
        self.frames = 0
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None

        # Loss, RFC 3550 A.1: extended sequence numbers, restarted on a new SSRC or a confirmed jump.
        self._ssrc: int | None = None
        self._max_seq = 0
        self._extended_max = -1  # nothing expected yet
        self._extended_base = 0
        self._received = 0
        self._bad_seq = -1  # after a very large jump: the sequence number that would confirm it
        self._lost_before = 0  # from before the last restart

        self._last_timestamp = 0
        self._frame_times = array("d")  # ring once full; _frame_count is the next write position
        self._frame_count = 0

        self._buckets_per_s = 1.0 / bucket_s
        self._bucket_base = 0
        self._bucket_packets = array("I")
        self._bucket_bytes = array("I")
        self._bucket_frames = array("I")

    # -- once per packet ------------------------------------------------------------------------------

    def observe(self, packet: RtpPacket) -> None:
        """Account for one packet arriving now (the :data:`~sfu_geofence.rtc.tap.RtpObserver`)."""
        self.record(packet.ssrc, packet.sequence_number, packet.timestamp, len(packet.payload), self._clock())

    def record(self, ssrc: int, sequence_number: int, timestamp: int, size: int, now: float) -> None:
        """Account for one packet of ``size`` payload bytes that arrived at ``now`` (monotonic s)."""
        self.packets += 1
        self.bytes += size
        self.last_arrival = now
        if ssrc != self._ssrc:
            if self._ssrc is None:
                self.first_arrival = now
                self._bucket_base = int(now * self._buckets_per_s)
            self._ssrc = ssrc
            self._restart_sequence(sequence_number)
            new_frame = True
        else:
            delta = (sequence_number - self._max_seq) & 0xFFFF
            if delta < MAX_DROPOUT:  # in order, possibly after a gap (0: duplicate)
                self._received += 1
                if delta:
                    self._max_seq = sequence_number
                    self._extended_max += delta
            elif delta <= 0x10000 - MAX_MISORDER:  # a very large jump: believe it once it continues
                if sequence_number == self._bad_seq:
                    self._restart_sequence((sequence_number - 1) & 0xFFFF)
                    self._received = 2
                    self._max_seq = sequence_number
                    self._extended_max += 1
                else:
                    self._bad_seq = (sequence_number + 1) & 0xFFFF
            else:  # late (reordered) or duplicate
                self._received += 1
            # Newer timestamp: a new frame. Slightly older: a late packet. Much older: a new timeline.
            new_frame = 0 < ((timestamp - self._last_timestamp) & 0xFFFFFFFF) < LATE_TIMESTAMP_LIMIT
        if new_frame:
            self._last_timestamp = timestamp

        bucket = int(now * self._buckets_per_s) - self._bucket_base
        if bucket >= len(self._bucket_packets):
            self._grow_buckets(bucket + 1)
        self._bucket_packets[bucket] += 1
        self._bucket_bytes[bucket] += size
        if new_frame:  # (the timeline bookkeeping above is per packet; this is per frame)
            self.frames += 1
            self._bucket_frames[bucket] += 1
            if self._frame_count < self.gap_capacity:
                self._frame_times.append(now)
            else:
                self._frame_times[self._frame_count % self.gap_capacity] = now
            self._frame_count += 1

    def _restart_sequence(self, sequence_number: int) -> None:
        """First packet, a new SSRC or a confirmed jump: count loss afresh from ``sequence_number``."""
        self._lost_before = self.lost
        self._max_seq = sequence_number
        self._extended_max = self._extended_base = sequence_number
        self._received = 1
        self._bad_seq = -1

    def _grow_buckets(self, length: int) -> None:
        missing = length - len(self._bucket_packets)
        zeros = array("I", [0]) * missing
        self._bucket_packets.extend(zeros)
        self._bucket_bytes.extend(zeros)
        self._bucket_frames.extend(zeros)

    # -- queries --------------------------------------------------------------------------------------

    @property
    def lost(self) -> int:
        """Packets never received so far: late arrivals are not lost; as in RFC 3550, duplicates count
        as received, so they can hide loss."""
        expected = self._extended_max - self._extended_base + 1
        return self._lost_before + max(0, expected - self._received)

    def counts(self) -> TrackCounts:
        """A snapshot of the counters."""
        return TrackCounts(
            source=self.source,
            kind=self.kind,
            packets=self.packets,
            bytes=self.bytes,
            frames=self.frames,
            lost=self.lost,
            first_arrival=self.first_arrival,
            last_arrival=self.last_arrival,
        )

    def frame_times(self) -> list[float]:
        """Arrival times (monotonic s) of the frames still kept, oldest first."""
        times = self._frame_times
        if self._frame_count <= self.gap_capacity:
            return times.tolist()
        split = self._frame_count % self.gap_capacity
        return times[split:].tolist() + times[:split].tolist()

    def frames_in(self, start: float = -math.inf, end: float = math.inf) -> int:
        """Frames that arrived in ``[start, end)`` (among those still kept)."""
        times = self.frame_times()
        return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)

    def gaps(self, start: float = -math.inf, end: float = math.inf) -> list[float]:
        """Inter-frame gaps in seconds, for frames that arrived in ``[start, end)``, in arrival order."""
        times = self.frame_times()
        return [b - a for a, b in itertools.pairwise(times) if start <= b < end]

    def gap_stats(self, start: float = -math.inf, end: float = math.inf) -> GapStats:
        """Count, max and p99 of the inter-frame gaps that ended in ``[start, end)``."""
        gaps = sorted(self.gaps(start, end))
        # the oldest kept frame's own gap is unknown (its predecessor was overwritten)
        complete = self._frame_count <= self.gap_capacity or start > self._frame_times_oldest()
        if not gaps:
            return GapStats(count=0, max_ms=0.0, p99_ms=0.0, complete=complete)
        p99 = gaps[math.ceil(0.99 * len(gaps)) - 1]
        return GapStats(count=len(gaps), max_ms=gaps[-1] * 1000, p99_ms=p99 * 1000, complete=complete)

    def stalled_for(self, now: float | None = None) -> float | None:
        """Seconds since the last frame arrived (a gap still open), None before the first frame."""
        if self._frame_count == 0:
            return None
        last = self._frame_times[(self._frame_count - 1) % self.gap_capacity]
        return (self._clock() if now is None else now) - last

    def rates(self) -> list[RateSample]:
        """The received-rate time series, one sample per bucket from the first packet's to the last's.

        Nothing follows the last packet's bucket: a source that stopped shows no trailing zeros, so
        callers comparing series align them by :attr:`RateSample.start`.
        """
        return [
            RateSample(
                start=(self._bucket_base + i) * self.bucket_s,
                duration=self.bucket_s,
                packets=packets,
                bytes=size,
                frames=frames,
            )
            for i, (packets, size, frames) in enumerate(
                zip(self._bucket_packets, self._bucket_bytes, self._bucket_frames, strict=True)
            )
        ]

    def _frame_times_oldest(self) -> float:
        return self._frame_times[self._frame_count % self.gap_capacity]

    def __repr__(self) -> str:
        return (
            f"TrackMeter({self.kind} from {self.source!r}: {self.packets} packets, "
            f"{self.frames} frames, {self.lost} lost)"
        )


SourceOf = Callable[[RTCRtpTransceiver], str]


def source_by_mid(transceiver: RTCRtpTransceiver) -> str:
    """Default source label: the transceiver's mid (callers usually map mids to participant ids)."""
    return transceiver.mid or ""


class ReceiveMeter:
    """The :class:`TrackMeter` of every incoming track of one (or more) client RTCPeerConnections."""

    def __init__(
        self,
        *,
        bucket_s: float = DEFAULT_BUCKET_S,
        gap_capacity: int = DEFAULT_GAP_CAPACITY,
        clock: Clock = time.monotonic,
    ) -> None:
        self.bucket_s = bucket_s
        self.gap_capacity = gap_capacity
        self._clock = clock
        self._meters: list[TrackMeter] = []
        self._taps: list[ReceiverTap] = []

    def attach(self, transceiver: RTCRtpTransceiver, source: str) -> TrackMeter:
        """Meter the transceiver's incoming media as coming from ``source``, from now on.

        The first attach taps the receiver, which must happen before aiortc starts it (see
        :func:`~sfu_geofence.rtc.tap.tap_receiver`): in the ``"track"`` handler, right after
        ``setRemoteDescription`` or after ``addTransceiver``. Attaching an already tapped transceiver
        again (an m-line recycled for another participant) gives it a fresh meter; the previous meter
        stops counting and stays in :attr:`tracks`.
        """
        meter = TrackMeter(
            transceiver.kind,
            source,
            bucket_s=self.bucket_s,
            gap_capacity=self.gap_capacity,
            clock=self._clock,
        )
        tap = tap_of(transceiver.receiver)
        if tap is None:
            tap = tap_receiver(transceiver.receiver, meter.observe)
        else:
            tap.observer = meter.observe
        self._taps.append(tap)
        self._meters.append(meter)
        return meter

    def watch(self, pc: RTCPeerConnection, source_of: SourceOf = source_by_mid) -> None:
        """Attach a meter to every track ``pc`` announces from now on, labelled by ``source_of``."""

        def on_track(track: MediaStreamTrack) -> None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track:
                    self.attach(transceiver, source_of(transceiver))
                    return

        pc.on("track", on_track)

    @property
    def tracks(self) -> list[TrackMeter]:
        """Every track meter, in attachment order."""
        return list(self._meters)

    def counts(self) -> list[TrackCounts]:
        """A snapshot of every track meter's counters (plain values, e.g. to send to another process)."""
        return [m.counts() for m in self._meters]

    def of_source(self, source: str) -> list[TrackMeter]:
        """The meters of the tracks received from ``source``."""
        return [m for m in self._meters if m.source == source]

    def last_arrival(self, source: str) -> float | None:
        """When the last packet from ``source`` arrived on any track (monotonic s), None if never."""
        return _latest(m.last_arrival for m in self.of_source(source))

    async def request_keyframes(self) -> None:
        """Send a PLI on every video receiver that has received media."""
        taps = {
            id(tap): tap for tap, meter in zip(self._taps, self._meters, strict=True) if meter.kind == "video"
        }
        for tap in taps.values():
            await tap.request_keyframe()


def _latest(times: Iterable[float | None]) -> float | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None
