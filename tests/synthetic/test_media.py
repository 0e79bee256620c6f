"""Synthetic media sources: encoded once, looped in real time, sent by aiortc without encoding."""

from __future__ import annotations

import fractions

import av
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError

from sfu_geofence.synthetic.media import (
    AudioClipParams,
    ClipTrack,
    EncodedClip,
    OpusTrack,
    VideoClipParams,
    Vp8Track,
    encode_opus_clip,
    encode_vp8_clip,
    publish,
)
from sfu_geofence.synthetic.meter import ReceiveMeter
from sfu_geofence.testing.peers import connect_pair
from sfu_geofence.testing.wait import eventually

SMALL_VIDEO = VideoClipParams(
    width=160, height=120, fps=10, bitrate=100_000, keyframe_interval_s=1.0, clip_s=2.0
)


def test_the_vp8_clip_has_one_picture_per_frame_and_a_keyframe_every_interval() -> None:
    clip = encode_vp8_clip(SMALL_VIDEO)
    assert (clip.kind, clip.clock_rate, clip.frame_rate) == ("video", 90_000, 10)
    assert len(clip.payloads) == 20
    assert [i for i, key in enumerate(clip.keyframes) if key] == [0, 10]
    assert clip.duration == pytest.approx(2.0)


def test_the_default_vp8_clip_spends_roughly_its_target_bitrate() -> None:
    clip = encode_vp8_clip()
    assert (len(clip.payloads), clip.frame_rate) == (60, 15)
    assert 0.5 * 250_000 <= clip.bitrate <= 1.5 * 250_000


def test_the_vp8_clip_decodes_to_the_configured_size() -> None:
    decoder = av.CodecContext.create("libvpx", "r")
    frames = []
    for payload in encode_vp8_clip(SMALL_VIDEO).payloads:
        frames.extend(decoder.decode(av.Packet(payload)))
    assert len(frames) == 20
    assert {(f.width, f.height) for f in frames} == {(160, 120)}


def test_the_opus_clip_is_fifty_constant_rate_packets_per_second() -> None:
    clip = encode_opus_clip(AudioClipParams(bitrate=32_000, clip_s=1.0))
    assert (clip.kind, clip.clock_rate, clip.frame_rate, len(clip.payloads)) == (
        "audio",
        48_000,
        50,
        50,
    )
    assert clip.bitrate == pytest.approx(32_000, rel=0.1)


def test_longer_opus_packets_cut_the_packet_rate() -> None:
    clip = encode_opus_clip(AudioClipParams(frame_ms=60, clip_s=0.6))
    assert (clip.frame_rate, len(clip.payloads), clip.ticks_per_frame) == (
        fractions.Fraction(50, 3),
        10,
        2880,
    )
    assert clip.bitrate == pytest.approx(32_000, rel=0.1)


def test_video_at_a_rate_that_does_not_divide_90_khz_keeps_exact_timestamps() -> None:
    clip = EncodedClip("video", (b"K",), (True,), 90_000, fractions.Fraction(7))
    assert [int(i * clip.ticks_per_frame) for i in (1, 7)] == [12857, 90000]


def test_a_clip_is_encoded_once_per_parameters_and_shared_by_every_track() -> None:
    assert Vp8Track(SMALL_VIDEO).clip is Vp8Track(SMALL_VIDEO).clip
    assert OpusTrack().clip is OpusTrack().clip


@pytest.mark.parametrize(
    "params",
    [
        {"width": 161},
        {"width": 32},
        {"fps": 0},
        {"bitrate": 1000},
        {"keyframe_interval_s": 0},
    ],
)
def test_unusable_video_parameters_are_refused(params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        VideoClipParams(**params)  # type: ignore[arg-type]


async def test_a_track_loops_its_clip_with_continuous_timestamps() -> None:
    clip = EncodedClip("audio", (b"a", b"b", b"c"), (True, False, False), 48_000, fractions.Fraction(50))
    track = ClipTrack(clip)
    packets = [await track.recv() for _ in range(7)]
    assert [bytes(p) for p in packets] == [b"a", b"b", b"c", b"a", b"b", b"c", b"a"]
    assert [p.pts for p in packets] == [960 * i for i in range(7)]
    assert {p.time_base for p in packets} == {fractions.Fraction(1, 48_000)}
    assert [p.is_keyframe for p in packets] == [True, False, False, True, False, False, True]
    assert track.frames_sent == 7


async def test_video_timestamps_advance_by_the_frame_interval_at_90_khz() -> None:
    track = Vp8Track(SMALL_VIDEO)
    pts = [(await track.recv()).pts for _ in range(3)]
    assert pts == [0, 9000, 18000]


async def test_a_stopped_track_yields_nothing() -> None:
    track = OpusTrack()
    await track.recv()
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_the_sender_packetizes_the_clip_without_ever_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    encode_calls: list[str] = []

    def refuse_to_encode(self: object, frame: object, force_keyframe: bool = False) -> None:
        encode_calls.append(type(self).__name__)
        raise AssertionError("a synthetic sender must not encode")

    monkeypatch.setattr(Vp8Encoder, "encode", refuse_to_encode)
    monkeypatch.setattr(OpusEncoder, "encode", refuse_to_encode)
    meter = ReceiveMeter()

    def publish(pc: RTCPeerConnection) -> None:
        pc.addTrack(Vp8Track(SMALL_VIDEO))
        pc.addTrack(OpusTrack())

    sender, receiver = await connect_pair(
        publish, meter.watch, offerer_bind="127.86.0.7", answerer_bind="127.86.0.8"
    )
    try:

        def media_flows() -> str | None:
            frames = {m.kind: m.frames for m in meter.tracks}
            return None if frames and min(frames.values()) >= 10 else f"frames received: {frames}"

        await eventually(media_flows, within=60)
        assert encode_calls == []
        encoders = {s.track.kind: s._RTCRtpSender__encoder for s in sender.getSenders()}  # type: ignore[attr-defined]
        assert encoders["video"].codec is None  # no libvpx context was ever created
        assert not encoders["audio"].codec.is_open  # libopus context created by aiortc, never opened
    finally:
        await sender.close()
        await receiver.close()


async def test_a_keyframe_request_skips_ahead_to_the_next_keyframe_once_per_interval() -> None:
    clip = EncodedClip(
        "video",
        (b"K0", b"d1", b"d2", b"d3", b"K4", b"d5"),
        (True, False, False, False, True, False),
        90_000,
        60,
    )
    track = ClipTrack(clip)
    sent = [bytes(await track.recv()) for _ in range(2)]
    track.request_keyframe()
    track.request_keyframe()  # within KEYFRAME_MIN_INTERVAL_S: ignored
    packets = [await track.recv() for _ in range(4)]
    assert sent + [bytes(p) for p in packets] == [b"K0", b"d1", b"K4", b"d5", b"K0", b"d1"]
    assert [p.pts for p in packets] == [3000, 4500, 6000, 7500]  # time goes on, the picture jumps
    assert track.keyframes_forced == 1


async def test_a_keyframe_request_when_the_next_frame_is_a_keyframe_changes_nothing() -> None:
    track = OpusTrack()  # every Opus packet stands alone
    track.request_keyframe()
    await track.recv()
    assert (track.keyframes_forced, track.frames_sent) == (0, 1)


async def test_a_pli_from_a_viewer_reaches_a_published_clip_track() -> None:
    meter = ReceiveMeter()
    tracks: list[Vp8Track] = []

    def publish_video(pc: RTCPeerConnection) -> None:
        tracks.append(Vp8Track(SMALL_VIDEO))
        publish(pc, tracks[0])

    sender, receiver = await connect_pair(
        publish_video, meter.watch, offerer_bind="127.86.0.9", answerer_bind="127.86.0.10"
    )
    try:
        await eventually(lambda: None if meter.tracks[0].frames else "no video yet", within=30)
        await meter.request_keyframes()
        await eventually(lambda: None if tracks[0].keyframes_forced else "keyframe not forced", within=30)
        assert tracks[0].keyframes_forced == 1
    finally:
        await sender.close()
        await receiver.close()
