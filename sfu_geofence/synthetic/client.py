"""A Python client of the signaling protocol (docs/protocol.md): a synthetic participant.

It joins a room from a given loopback address (both its WebSocket's local address and its ICE bind
address, unless ``media_address`` binds ICE elsewhere), publishes the tracks it is given, and
counts what it receives at RTP level, never decoding.
``python -m sfu_geofence.synthetic.client URL ROOM ADDRESS`` runs one that publishes until killed
(the abrupt-death tests kill it with SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import aiohttp
import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket
from av import AudioFrame, VideoFrame

from ..rtc.forwarding import PacketSink, make_receivers_forward
from ..rtc.ice import IcePolicy, use_policy

logger = logging.getLogger(__name__)


class FrameCounter:
    """Counts packets and frames (a new RTP timestamp is a new frame) and the longest gap between frames.

    Deliberately tiny: sfu_geofence.synthetic.meter is the full, non-decoding meter.
    """

    def __init__(self) -> None:
        self.packets = 0
        self.frames = 0
        self.max_gap = 0.0
        """Longest time between two consecutive new frames since the last :meth:`reset_gap`."""
        self.last_sequence_number: int | None = None
        self._timestamp: int | None = None
        self._last_frame_at = 0.0

    def __call__(self, packet: RtpPacket) -> None:
        self.packets += 1
        self.last_sequence_number = packet.sequence_number
        if packet.timestamp != self._timestamp:
            now = time.monotonic()
            if self._timestamp is not None:
                self.max_gap = max(self.max_gap, now - self._last_frame_at)
            self._timestamp = packet.timestamp
            self._last_frame_at = now
            self.frames += 1

    def reset_gap(self) -> None:
        self.max_gap = 0.0


@dataclass
class Received:
    """One forwarded track as the client sees it."""

    mid: str
    participant: str
    kind: str
    producer: str
    counter: FrameCounter = field(default_factory=FrameCounter)


class PacketLoopTrack(MediaStreamTrack):
    """Yields pre-encoded packets in a loop at a fixed rate: aiortc only packetizes them.

    A stand-in until sfu_geofence.synthetic.media (full pre-encoded clips) is merged. Encoding in the
    sending process would put encoder threads (which hold the GIL) on the measured path.
    """

    def __init__(self, kind: str, payloads: Sequence[bytes], interval: Fraction, clock_rate: int) -> None:
        super().__init__()
        self.kind = kind
        self.interval = interval
        self._payloads = payloads
        self._ticks = int(interval * clock_rate)
        self._time_base = Fraction(1, clock_rate)
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + float(self._count * self.interval)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        packet = av.Packet(self._payloads[self._count % len(self._payloads)])
        packet.pts = self._count * self._ticks
        packet.time_base = self._time_base
        self._count += 1
        return packet


VIDEO_INTERVAL = Fraction(1, 20)
AUDIO_INTERVAL = Fraction(1, 50)


@functools.cache
def _vp8_loop(frames: int = 40, width: int = 64, height: int = 48) -> tuple[bytes, ...]:
    """Two seconds of small VP8 frames, a keyframe every second (encoded once per process)."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, 20)
    codec.options = {"g": "20", "deadline": "realtime", "cpu-used": "8"}
    payloads: list[bytes] = []
    for index in range(frames):
        frame = VideoFrame(width=width, height=height, format="yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(index * 5) % 256]) * plane.buffer_size)
        frame.pts = index
        payloads += [bytes(p) for p in codec.encode(frame)]
    payloads += [bytes(p) for p in codec.encode(None)]
    return tuple(payloads)


@functools.cache
def _opus_loop(frames: int = 50) -> tuple[bytes, ...]:
    """One second of 20 ms Opus packets of a quiet tone (encoded once per process)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48000, "stereo", "s16"
    payloads: list[bytes] = []
    for index in range(frames):
        frame = AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(bytes(frame.planes[0].buffer_size))
        frame.sample_rate = 48000
        frame.pts = index * 960
        payloads += [bytes(p) for p in codec.encode(frame)]
    return tuple(payloads)


def tiny_tracks() -> list[MediaStreamTrack]:
    """Pre-encoded Opus (20 ms packets) and VP8 (64x48, 20 fps) that cost aiortc no encoding."""
    return [
        PacketLoopTrack("audio", _opus_loop(), AUDIO_INTERVAL, 48000),
        PacketLoopTrack("video", _vp8_loop(), VIDEO_INTERVAL, 90000),
    ]


class SyntheticPeer:
    """One participant: signaling over WebSocket, media over its own RTCPeerConnection."""

    def __init__(
        self,
        url: str,
        room: str,
        address: str,
        name: str = "",
        tracks: Sequence[MediaStreamTrack] = (),
        media_address: str | None = None,
        on_packet: Callable[[Received, RtpPacket], None] | None = None,
    ) -> None:
        self.url = url
        self.room = room
        self.address = address
        self.name = name or address
        self.tracks = list(tracks)
        self.participant_id: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.received: dict[str, Received] = {}
        """What this peer receives, by producer id."""
        self.messages: list[dict[str, Any]] = []
        """Every message from the server except offers, in order."""
        self.transcript: list[str] = []
        """Every text frame from the server, offers included, as received (for privacy checks)."""
        self.offers = 0
        self.answers = 0
        self.close_code: int | None = None
        self.joined = asyncio.Event()
        self.closed = asyncio.Event()
        self._by_mid: dict[str, Received] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._published = False
        self._closing = False
        self.media_address = media_address or address
        """Where ICE binds: the signaling address unless told otherwise (media from elsewhere)."""
        self._policy = IcePolicy(bind=(self.media_address,))
        self.on_packet = on_packet
        """Also called with every received packet (the load tester meters with it), on the event loop."""

    # signaling ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the WebSocket from this peer's address (no message sent yet)."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(self.address, 0)))
        self._ws = await self._session.ws_connect(self.url, max_msg_size=0)
        self._reader = asyncio.ensure_future(self._read())

    async def join(self, publish: dict[str, bool] | None = None, within: float = 10) -> None:
        """Connect, join and wait for ``joined`` (or a refusal: then ``closed`` is set)."""
        if self._ws is None:
            await self.connect()
        if publish is None:
            publish = {t.kind: True for t in self.tracks}
        await self.send({"type": "join", "room": self.room, "name": self.name, "publish": publish})
        joined = asyncio.ensure_future(self.joined.wait())
        closed = asyncio.ensure_future(self.closed.wait())
        await asyncio.wait({joined, closed}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        joined.cancel()
        closed.cancel()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                self.transcript.append(message.data)
                data = json.loads(message.data)
                if data.get("type") == "offer":
                    await self._answer(data)
                    continue
                self.messages.append(data)
                if data.get("type") == "joined":
                    self.participant_id = data["participant"]
                    self.joined.set()
        except Exception:
            logger.exception("synthetic peer %s: reading signaling failed", self.name)
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()

    async def _answer(self, offer: dict[str, Any]) -> None:
        self.offers += 1
        if self._closing:
            return
        for track in offer["tracks"]:
            received = self.received.get(track["producer"])
            if received is None:
                received = self.received[track["producer"]] = Received(
                    mid=track["mid"],
                    participant=track["participant"],
                    kind=track["kind"],
                    producer=track["producer"],
                )
            self._by_mid[track["mid"]] = received
        live = {track["mid"] for track in offer["tracks"]}
        for mid in list(self._by_mid):
            if mid not in live:
                del self._by_mid[mid]
        with use_policy(self._policy):
            if self.pc is None:
                self.pc = RTCPeerConnection(
                    RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
                )
            pc = self.pc
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            make_receivers_forward(pc, self._sink_for)
            if not self._published:
                self._published = True
                self._attach_tracks(pc, offer["publish"])
            await pc.setLocalDescription(await pc.createAnswer())
        await self.send({"type": "answer", "sdp": pc.localDescription.sdp})
        self.answers += 1

    def _attach_tracks(self, pc: RTCPeerConnection, publish: list[dict[str, str]]) -> None:
        by_mid: dict[str | None, RTCRtpTransceiver] = {t.mid: t for t in pc.getTransceivers()}
        tracks = list(self.tracks)
        for slot in publish:
            transceiver = by_mid.get(slot["mid"])
            track = next((t for t in tracks if t.kind == slot["kind"]), None)
            if transceiver is None or track is None:
                continue
            tracks.remove(track)
            transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendonly"

    def _sink_for(self, transceiver: RTCRtpTransceiver) -> PacketSink:
        mid = transceiver.mid

        def sink(packet: RtpPacket) -> None:
            received = self._by_mid.get(mid) if mid is not None else None
            if received is not None:
                received.counter(packet)
                if self.on_packet is not None:
                    self.on_packet(received, packet)

        return sink

    # leaving ------------------------------------------------------------------------------------

    async def leave(self) -> None:
        """Say goodbye and close everything."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.send({"type": "leave"})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 5)
        await self.close()

    async def close(self) -> None:
        """Close the connection and the WebSocket without a goodbye (idempotent)."""
        self._closing = True
        if self.pc is not None:
            await self.pc.close()
        for track in self.tracks:
            track.stop()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()

    def counters(self, participant: str, kind: str) -> list[FrameCounter]:
        """Counters of the tracks of ``kind`` received from ``participant``."""
        return [r.counter for r in self.received.values() if r.participant == participant and r.kind == kind]

    def live_tracks(self) -> list[Received]:
        """Tracks currently mapped to an m-line (producers still in the room)."""
        return list(self._by_mid.values())


async def _run_forever(url: str, room: str, address: str, name: str) -> None:
    peer = SyntheticPeer(url, room, address, name=name, tracks=tiny_tracks())
    await peer.join()
    print("joined" if peer.participant_id else "not-joined", peer.participant_id, flush=True)
    await peer.closed.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Join a room and publish tiny audio+video until killed.")
    parser.add_argument("url")
    parser.add_argument("room")
    parser.add_argument("address", help="loopback address to connect and bind ICE from")
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)
    asyncio.run(_run_forever(args.url, args.room, args.address, args.name))


if __name__ == "__main__":
    main()
