"""Media sources for synthetic peers: short VP8 and Opus clips, encoded once per process, looped forever.

A track here yields :class:`av.Packet` objects, not frames. aiortc's ``RTCRtpSender`` hands a packet to
its codec's ``pack()`` (RTP payloading only) instead of ``encode()``, so a synthetic publisher costs no
encoding at all: N peers share one encoded clip (cached per parameters in this process) and each pays
only for payloading, SRTP and the socket.

The video clip is a visibly moving picture (a bar sweeping across a textured background, and the frame
number in large digits) so that a person watching it in a browser sees motion. The background texture is
there to make libvpx spend the configured bitrate instead of a few kbit/s. Keyframes come at the start of
the clip and every ``keyframe_interval_s`` after (a clip is a whole number of keyframe intervals, so the
loop stays regular). A keyframe request (:meth:`ClipTrack.request_keyframe`, wired to the sender's
PLI/FIR by :func:`publish`) is honoured by skipping ahead in the clip to its next keyframe, at most once
per :data:`KEYFRAME_MIN_INTERVAL_S`: no encoding, only a bigger frame. Without :func:`publish` (plain
``addTrack``) requests are ignored and a new viewer waits at most one keyframe interval.

Pacing is real time from the first ``recv()``: frame *i* is released at ``start + i * frame_duration``
(event-loop clock, monotonic) and carries pts ``i * ticks_per_frame``, so RTP timestamps advance
continuously across loops. A peer that falls behind (overloaded machine) sends late frames back to
back rather than skipping them: skipping VP8 delta frames would corrupt the picture.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..rtc.keyframe import on_keyframe_request

VIDEO_CLOCK_RATE = 90_000
AUDIO_CLOCK_RATE = 48_000
OPUS_FRAME_DURATIONS_MS = (10, 20, 40, 60)
KEYFRAME_MIN_INTERVAL_S = 0.5
"A storm of requests (many viewers joining) is answered by at most one forced keyframe per interval."


@dataclass(frozen=True)
class VideoClipParams:
    """How the synthetic VP8 clip is encoded. Defaults fit many peers on a 2-core machine."""

    width: int = 320
    height: int = 240
    fps: int = 15
    bitrate: int = 250_000
    "Target bits per second (libvpx CBR; the encoded clip's real average is :attr:`EncodedClip.bitrate`)."
    keyframe_interval_s: float = 2.0
    clip_s: float = 4.0
    "Loop length, rounded up to a whole number of keyframe intervals."

    def __post_init__(self) -> None:
        if self.width < 64 or self.height < 48 or self.width % 2 or self.height % 2:
            raise ValueError(f"video size must be even and at least 64x48, got {self.width}x{self.height}")
        if not 1 <= self.fps <= 60:
            raise ValueError(f"fps must be within 1..60, got {self.fps}")
        if self.bitrate < 10_000:
            raise ValueError(f"bitrate below 10 kbit/s makes no sense for video, got {self.bitrate}")
        if self.keyframe_interval_s <= 0 or self.clip_s <= 0:
            raise ValueError("keyframe_interval_s and clip_s must be positive")

    @property
    def keyframe_interval_frames(self) -> int:
        return max(1, round(self.keyframe_interval_s * self.fps))

    @property
    def frame_count(self) -> int:
        gop = self.keyframe_interval_frames
        return math.ceil(self.clip_s * self.fps / gop) * gop


@dataclass(frozen=True)
class AudioClipParams:
    """How the synthetic Opus clip is encoded: a quiet stereo tone, one Opus frame per packet."""

    bitrate: int = 32_000
    "Constant bitrate (hard CBR: every packet the same size)."
    frame_ms: int = 20
    "Packet duration: 20 ms is what browsers send; 60 ms cuts the audio packet rate (and its cost) by 3."
    tone_hz: float = 440.0
    level_dbfs: float = -30.0
    clip_s: float = 1.0
    "Loop length, rounded to whole packets (and the tone to whole periods per loop, to avoid a click)."

    def __post_init__(self) -> None:
        if not 6_000 <= self.bitrate <= 510_000:
            raise ValueError(f"Opus bitrate must be within 6..510 kbit/s, got {self.bitrate}")
        if self.frame_ms not in OPUS_FRAME_DURATIONS_MS:
            raise ValueError(f"Opus frame_ms must be one of {OPUS_FRAME_DURATIONS_MS}, got {self.frame_ms}")
        if self.clip_s < self.frame_ms / 1000:
            raise ValueError(f"clip_s must be at least one {self.frame_ms} ms packet, got {self.clip_s}")

    @property
    def frame_samples(self) -> int:
        return AUDIO_CLOCK_RATE * self.frame_ms // 1000

    @property
    def frame_count(self) -> int:
        return max(1, round(self.clip_s * 1000 / self.frame_ms))


@dataclass(frozen=True)
class EncodedClip:
    """A loop of encoded frames, shared read-only by every track playing it."""

    kind: str
    "'video' or 'audio'."
    payloads: tuple[bytes, ...]
    "One encoded frame (VP8 picture / Opus packet) per entry."
    keyframes: tuple[bool, ...]
    clock_rate: int
    "RTP clock rate, also the pts time base denominator."
    frame_rate: fractions.Fraction
    "Nominal frames per second (50 for 20 ms Opus packets)."

    @property
    def frame_duration(self) -> float:
        return float(1 / self.frame_rate)

    @property
    def ticks_per_frame(self) -> fractions.Fraction:
        """RTP clock ticks from one frame to the next (may be fractional, e.g. 7 fps at 90 kHz)."""
        return self.clock_rate / self.frame_rate

    @property
    def duration(self) -> float:
        return len(self.payloads) * self.frame_duration

    @property
    def bitrate(self) -> float:
        """Average encoded bits per second over the loop (RTP/SRTP overhead not included)."""
        return sum(len(p) for p in self.payloads) * 8 / self.duration


@functools.lru_cache(maxsize=8)
def encode_vp8_clip(params: VideoClipParams = VideoClipParams()) -> EncodedClip:
    """Encode the moving test picture with libvpx once per process and parameters."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = params.width
    codec.height = params.height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = params.bitrate
    codec.time_base = fractions.Fraction(1, params.fps)
    codec.framerate = fractions.Fraction(params.fps, 1)
    codec.gop_size = params.keyframe_interval_frames
    codec.qmin = 2
    codec.qmax = 56
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",  # one packet out per frame in
        "minrate": str(params.bitrate),  # minrate = maxrate = bit_rate: CBR, like a live sender
        "maxrate": str(params.bitrate),
        "bufsize": str(params.bitrate),
        "undershoot-pct": "95",
        "overshoot-pct": "15",
    }
    gop = params.keyframe_interval_frames
    painter = _Painter(params.width, params.height)
    payloads: list[bytes] = []
    keyframes: list[bool] = []
    for index in range(params.frame_count):
        frame = av.VideoFrame.from_ndarray(painter.paint(index), format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        frame.time_base = codec.time_base
        if index % gop == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in codec.encode(frame):
            payloads.append(bytes(packet))
            keyframes.append(bool(packet.is_keyframe))
    for packet in codec.encode(None):
        payloads.append(bytes(packet))
        keyframes.append(bool(packet.is_keyframe))
    if len(payloads) != params.frame_count or not keyframes[0]:
        raise RuntimeError(
            f"libvpx returned {len(payloads)} packets for {params.frame_count} frames "
            f"(first is keyframe: {keyframes[:1]}); expected one packet per frame"
        )
    return EncodedClip(
        "video", tuple(payloads), tuple(keyframes), VIDEO_CLOCK_RATE, fractions.Fraction(params.fps)
    )


@functools.lru_cache(maxsize=8)
def encode_opus_clip(params: AudioClipParams = AudioClipParams()) -> EncodedClip:
    """Encode a quiet tone with libopus once per process and parameters.

    Two loops are encoded and the second kept, so the encoder is in steady state at the loop point.
    """
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_CLOCK_RATE
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = params.bitrate
    codec.time_base = fractions.Fraction(1, AUDIO_CLOCK_RATE)
    codec.options = {"application": "audio", "frame_duration": str(params.frame_ms), "vbr": "off"}

    count = params.frame_count
    step = params.frame_samples
    samples_per_loop = count * step
    loop_s = samples_per_loop / AUDIO_CLOCK_RATE
    tone_hz = max(1, round(params.tone_hz * loop_s)) / loop_s  # whole periods per loop
    t = np.arange(2 * samples_per_loop) / AUDIO_CLOCK_RATE
    amplitude = 32767 * 10 ** (params.level_dbfs / 20)
    mono = (amplitude * np.sin(2 * np.pi * tone_hz * t)).astype(np.int16)
    stereo = np.repeat(mono, 2).reshape(1, -1)

    payloads: list[bytes] = []
    for start in range(0, 2 * samples_per_loop, step):
        frame = av.AudioFrame.from_ndarray(
            stereo[:, 2 * start : 2 * (start + step)], format="s16", layout="stereo"
        )
        frame.sample_rate = AUDIO_CLOCK_RATE
        frame.pts = start
        frame.time_base = codec.time_base
        payloads.extend(bytes(packet) for packet in codec.encode(frame))
    loop = payloads[-count:]
    if len(loop) != count:
        raise RuntimeError(f"libopus returned {len(payloads)} packets, expected at least {count}")
    return EncodedClip(
        "audio", tuple(loop), (True,) * count, AUDIO_CLOCK_RATE, fractions.Fraction(1000, params.frame_ms)
    )


class ClipTrack(MediaStreamTrack):
    """Plays an :class:`EncodedClip` in a loop, in real time, as :class:`av.Packet` (never encoded)."""

    def __init__(self, clip: EncodedClip) -> None:
        super().__init__()
        self.kind = clip.kind
        self.clip = clip
        self.frames_sent = 0
        "Packets handed to the sender so far."
        self._time_base = fractions.Fraction(1, clip.clock_rate)
        self._ticks_per_frame = clip.ticks_per_frame
        self._start: float | None = None
        self._skipped = 0  # clip frames skipped to honour keyframe requests
        self._last_forced = -math.inf
        self.keyframes_forced = 0
        "Keyframe requests honoured by skipping ahead in the clip."

    def request_keyframe(self) -> None:
        """Make the next frame sent a keyframe by skipping ahead to the clip's next one (rate-limited)."""
        keyframes = self.clip.keyframes
        position = (self.frames_sent + self._skipped) % len(keyframes)
        now = time.monotonic()
        if keyframes[position] or now - self._last_forced < KEYFRAME_MIN_INTERVAL_S:
            return
        skip = next(
            step for step in range(1, len(keyframes) + 1) if keyframes[(position + step) % len(keyframes)]
        )
        self._skipped += skip
        self._last_forced = now
        self.keyframes_forced += 1

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        index = self.frames_sent
        if self._start is None:
            self._start = loop.time()
        else:
            wait = self._start + index * self.clip.frame_duration - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        position = (index + self._skipped) % len(self.clip.payloads)
        packet = av.Packet(self.clip.payloads[position])
        packet.pts = int(index * self._ticks_per_frame)
        packet.time_base = self._time_base
        packet.is_keyframe = self.clip.keyframes[position]
        self.frames_sent = index + 1
        return packet


def publish(pc: RTCPeerConnection, track: ClipTrack) -> RTCRtpSender:
    """Add ``track`` to ``pc`` and let the keyframe requests that reach its sender reach the track."""
    sender = pc.addTrack(track)
    on_keyframe_request(sender, track.request_keyframe)
    return sender


class Vp8Track(ClipTrack):
    """A synthetic camera: the shared VP8 clip for ``params``, looped."""

    kind = "video"

    def __init__(self, params: VideoClipParams = VideoClipParams()) -> None:
        super().__init__(encode_vp8_clip(params))


class OpusTrack(ClipTrack):
    """A synthetic microphone: the shared Opus clip for ``params``, looped."""

    kind = "audio"

    def __init__(self, params: AudioClipParams = AudioClipParams()) -> None:
        super().__init__(encode_opus_clip(params))


# A 3x5 bitmap font for the frame counter, one string of 15 cells per digit, row by row.
_DIGITS = (
    "111101101101111",
    "010110010010111",
    "111001111100111",
    "111001111001111",
    "101101111001001",
    "111100111001111",
    "111100111101111",
    "111001001001001",
    "111101111101111",
    "111101111001111",
)


class _Painter:
    """Draws frame ``index`` of the test picture as an RGB array."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        rng = np.random.default_rng(20200604)
        self._texture = rng.integers(0, 64, size=(height, width, 3), dtype=np.uint8)
        self._base = np.array([20, 40, 90], dtype=np.uint8)
        self._glyphs = [np.array([int(c) for c in d], dtype=bool).reshape(5, 3) for d in _DIGITS]
        self._rng = rng

    def paint(self, index: int) -> npt.NDArray[np.uint8]:
        image = self._texture + self._base
        # fresh low-amplitude noise keeps the encoder busy at its target rate in every frame
        image += self._rng.integers(0, 24, size=image.shape, dtype=np.uint8)
        bar = max(4, self.width // 16)
        x = (index * max(1, self.width // 40)) % (self.width - bar)
        image[:, x : x + bar] = (240, 220, 40)
        scale = max(1, min(self.height // 24, self.width // 36))
        y0 = x0 = scale
        for position, digit in enumerate(f"{index:04d}"):  # 4 digits: 17 x 7 scales with margins
            glyph = np.kron(self._glyphs[int(digit)], np.ones((scale, scale), dtype=bool))
            left = x0 + position * 4 * scale
            image[y0 : y0 + 5 * scale, left : left + 3 * scale][glyph] = 255
        return image
