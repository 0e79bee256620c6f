"""The receive meter's bookkeeping, and a real receiving peer that counts media without decoding it."""

from __future__ import annotations

import threading

import pytest
from aiortc import RTCPeerConnection

from sfu_geofence.rtc.tap import decoder_thread_of
from sfu_geofence.synthetic.media import AudioClipParams, OpusTrack, VideoClipParams, Vp8Track
from sfu_geofence.synthetic.meter import GapStats, ReceiveMeter, TrackMeter
from sfu_geofence.testing.peers import connect_pair
from sfu_geofence.testing.wait import eventually

SSRC = 1234


def feed(meter: TrackMeter, packets: list[tuple[int, int, float]], size: int = 100) -> None:
    """Record (sequence number, RTP timestamp, arrival time) triples."""
    for sequence_number, timestamp, now in packets:
        meter.record(SSRC, sequence_number, timestamp, size, now)


def test_in_order_packets_across_the_sequence_wrap_lose_nothing() -> None:
    meter = TrackMeter("audio", "alice")
    feed(meter, [(65533 + i & 0xFFFF, 960 * i, i * 0.02) for i in range(6)])
    assert (meter.packets, meter.frames, meter.lost, meter.bytes) == (6, 6, 0, 600)


def test_a_gap_across_the_sequence_wrap_counts_the_missing_packets() -> None:
    meter = TrackMeter("audio", "alice")
    feed(meter, [(65534, 0, 0.0), (65535, 960, 0.02), (2, 3840, 0.08)])  # 0 and 1 missing
    assert meter.lost == 2


def test_reordered_packets_are_not_lost_and_late_ones_cancel_their_loss() -> None:
    meter = TrackMeter("audio", "alice")
    feed(meter, [(10, 0, 0.0), (12, 1920, 0.04), (11, 960, 0.041)])
    assert meter.lost == 0
    feed(meter, [(15, 4800, 0.1)])  # 13, 14 missing
    assert meter.lost == 2
    feed(meter, [(13, 2880, 0.11)])  # late
    assert meter.lost == 1
    assert meter.packets == 5


def test_duplicates_neither_add_loss_nor_frames() -> None:
    meter = TrackMeter("audio", "alice")
    feed(meter, [(1, 0, 0.0), (1, 0, 0.001), (2, 960, 0.02)])
    assert (meter.packets, meter.frames, meter.lost) == (3, 2, 0)


def test_a_video_frame_is_the_first_packet_with_a_newer_timestamp_across_the_timestamp_wrap() -> None:
    meter = TrackMeter("video", "alice")
    ts0 = 2**32 - 6000
    packets = [
        (1, ts0, 0.0),
        (2, ts0, 0.001),
        (3, ts0, 0.002),  # frame 1: three packets
        (4, 0, 0.066),  # frame 2, after the 32-bit wrap
        (6, 6000, 0.133),  # frame 3 (5 is late)
        (5, 0, 0.134),  # late packet of frame 2: not a new frame
    ]
    feed(meter, packets)
    assert (meter.packets, meter.frames, meter.lost) == (6, 3, 0)
    assert meter.frame_times() == [0.0, 0.066, 0.133]


def test_a_new_ssrc_restarts_sequence_tracking_and_keeps_earlier_loss() -> None:
    meter = TrackMeter("audio", "alice")
    feed(meter, [(1, 0, 0.0), (3, 1920, 0.04)])
    meter.record(999, 40000, 7, 100, 0.06)
    meter.record(999, 40001, 967, 100, 0.08)
    assert (meter.lost, meter.frames) == (1, 4)


def test_a_very_large_sequence_jump_is_believed_once_the_next_packet_continues_it() -> None:
    meter = TrackMeter("audio", "alice")
    feed(meter, [(100, 0, 0.0), (101, 960, 0.02), (103, 2880, 0.06)])  # 102 lost
    feed(meter, [(30000, 3840, 0.08)])  # a stray packet far ahead: not yet believed
    assert meter.lost == 1
    feed(meter, [(30001, 4800, 0.10), (30002, 5760, 0.12)])  # the sender really jumped
    assert (meter.lost, meter.packets, meter.frames) == (1, 6, 6)
    feed(meter, [(30004, 7680, 0.16)])
    assert meter.lost == 2


def test_a_much_older_timestamp_starts_a_new_timeline_rather_than_looking_late() -> None:
    meter = TrackMeter("video", "alice")
    feed(meter, [(1, 5_000_000, 0.0), (2, 5_006_000, 0.066), (3, 6000, 0.133), (4, 12000, 0.2)])
    assert meter.frames == 4


def test_no_packet_no_loss() -> None:
    meter = TrackMeter("video", "alice")
    assert (meter.lost, meter.frames, meter.stalled_for(now=1.0), meter.rates()) == (0, 0, None, [])
    assert meter.gap_stats() == GapStats(count=0, max_ms=0.0, p99_ms=0.0, complete=True)


def test_gap_statistics_cover_only_gaps_ending_inside_the_window() -> None:
    meter = TrackMeter("audio", "alice")
    arrivals = [0.0, 0.02, 0.04, 0.06, 0.30, 0.32, 0.34]  # one 240 ms stall ending at 0.30
    feed(meter, [(i, 960 * i, t) for i, t in enumerate(arrivals)])
    before = meter.gap_stats(0.0, 0.1)
    around = meter.gap_stats(0.1, 0.4)
    assert (before.count, round(before.max_ms, 6), round(before.p99_ms, 6)) == (3, 20.0, 20.0)
    assert (around.count, round(around.max_ms, 6)) == (3, 240.0)
    assert meter.gap_stats().count == 6
    assert (meter.frames_in(0.0, 0.1), meter.frames_in(0.1, 0.4), meter.frames_in()) == (4, 3, 7)
    assert before.complete
    assert around.complete
    assert meter.stalled_for(now=1.34) == pytest.approx(1.0)


def test_p99_is_the_nearest_rank_of_the_gaps() -> None:
    meter = TrackMeter("audio", "alice")
    # 200 gaps: 197 of 10 ms, then 50, 60, 70 ms
    times = [0.0]
    for gap in [0.01] * 197 + [0.05, 0.06, 0.07]:
        times.append(times[-1] + gap)
    feed(meter, [(i, 960 * i, t) for i, t in enumerate(times)])
    stats = meter.gap_stats()
    assert stats.count == 200
    assert stats.p99_ms == pytest.approx(50.0)  # rank ceil(0.99 * 200) = 198 of 200
    assert stats.max_ms == pytest.approx(70.0)


def test_the_frame_time_ring_keeps_the_newest_frames_and_says_when_a_window_is_incomplete() -> None:
    meter = TrackMeter("audio", "alice", gap_capacity=4)
    feed(meter, [(i, 960 * i, i * 0.02) for i in range(10)])
    assert meter.frame_times() == pytest.approx([0.12, 0.14, 0.16, 0.18])
    assert meter.frames == 10
    assert not meter.gap_stats(0.0, 1.0).complete
    assert not meter.gap_stats(0.12, 1.0).complete  # the gap ending at 0.12 is forgotten
    assert meter.gap_stats(0.13, 1.0).complete
    assert meter.gap_stats(0.13, 1.0).count == 3


def test_the_rate_series_has_one_bucket_per_period_aligned_to_the_clock_including_empty_ones() -> None:
    meter = TrackMeter("video", "alice", bucket_s=0.25)
    feed(meter, [(1, 0, 10.1), (2, 0, 10.2), (3, 6000, 10.3), (4, 12000, 10.8)], size=500)
    samples = [(s.start, s.packets, s.bytes, s.frames) for s in meter.rates()]
    assert samples == [(10.0, 2, 1000, 1), (10.25, 1, 500, 1), (10.5, 0, 0, 0), (10.75, 1, 500, 1)]
    assert meter.rates()[0].bitrate == 32000.0
    assert meter.rates()[0].frame_rate == 4.0


def test_counts_snapshot() -> None:
    meter = TrackMeter("audio", "alice")
    assert meter.counts().last_arrival is None
    feed(meter, [(1, 0, 5.0), (3, 1920, 5.04)])
    counts = meter.counts()
    assert (counts.source, counts.packets, counts.frames, counts.lost) == ("alice", 2, 2, 1)
    assert (counts.first_arrival, counts.last_arrival) == (5.0, 5.04)


def _decoder_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.endswith("-decoder")}


async def test_a_metered_peer_counts_real_media_at_the_sent_rate_without_starting_a_decoder() -> None:
    video = VideoClipParams(width=160, height=120, fps=20, bitrate=100_000)
    audio = AudioClipParams()
    meter = ReceiveMeter()
    decoders_before = _decoder_threads()

    def publish(pc: RTCPeerConnection) -> None:
        pc.addTrack(Vp8Track(video))
        pc.addTrack(OpusTrack(audio))

    sender, receiver = await connect_pair(
        publish,
        lambda pc: meter.watch(pc, lambda t: f"alice/{t.kind}"),
        offerer_bind="127.86.0.5",
        answerer_bind="127.86.0.6",
    )
    try:
        by_kind = {m.kind: m for m in meter.tracks}
        assert sorted(by_kind) == ["audio", "video"]
        assert [m.source for m in meter.of_source("alice/video")] == ["alice/video"]

        def two_seconds_of_video() -> str | None:
            frames = by_kind["video"].frames
            return None if frames >= 40 else f"{frames} video frames so far"

        await eventually(two_seconds_of_video, within=60)

        for m in meter.tracks:
            counts = m.counts()
            assert counts.first_arrival is not None
            assert counts.last_arrival is not None
            span = counts.last_arrival - counts.first_arrival
            nominal = video.fps if m.kind == "video" else 50
            # generous: a loaded machine delays frames and then sends the late ones back to back
            assert 0.5 * nominal <= (counts.frames - 1) / span <= 2 * nominal, (m, span)
            assert counts.lost == 0
            assert m.gap_stats().count == counts.frames - 1
        assert by_kind["video"].packets >= by_kind["video"].frames  # a picture may span packets
        assert by_kind["audio"].packets == by_kind["audio"].frames

        for transceiver in receiver.getTransceivers():
            assert decoder_thread_of(transceiver.receiver) is None
        assert _decoder_threads() - decoders_before == set()
        assert receiver.getReceivers()[0].track.readyState == "live"
        assert meter.last_arrival("alice/audio") == by_kind["audio"].last_arrival
    finally:
        await sender.close()
        await receiver.close()
    assert _decoder_threads() - decoders_before == set()


async def test_attaching_a_recycled_transceiver_again_moves_its_media_to_a_new_source() -> None:
    meter = ReceiveMeter()
    sender, receiver = await connect_pair(
        lambda pc: pc.addTrack(OpusTrack()),
        lambda pc: meter.watch(pc, lambda t: "alice"),
        offerer_bind="127.86.0.11",
        answerer_bind="127.86.0.12",
    )
    try:
        (alice,) = meter.tracks
        await eventually(
            lambda: None if alice.frames >= 5 else f"{alice.frames} frames from alice", within=30
        )
        bob = meter.attach(receiver.getTransceivers()[0], "bob")
        frozen = alice.counts()
        await eventually(lambda: None if bob.frames >= 5 else f"{bob.frames} frames from bob", within=30)
        assert alice.counts() == frozen
        assert [m.source for m in meter.tracks] == ["alice", "bob"]
        assert [c.source for c in meter.counts()] == ["alice", "bob"]
        assert bob.lost == 0
    finally:
        await sender.close()
        await receiver.close()
