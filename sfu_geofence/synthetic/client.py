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
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from ..protocol import (
    Answer,
    ClientMessage,
    CloseCode,
    Join,
    Joined,
    Leave,
    OfferedTrack,
    OfferMessage,
    ParticipantLeft,
    PublishSlot,
    Redirect,
    ServerMessage,
    encode,
    server_message,
)
from ..rtc.ice import LOOPBACK_NETWORKS, IcePolicy, IPNetwork, use_policy
from ..rtc.keyframe import on_keyframe_request
from ..rtc.tap import tap_of
from .media import AudioClipParams, ClipTrack, OpusTrack, VideoClipParams, Vp8Track
from .meter import ReceiveMeter, TrackMeter

logger = logging.getLogger(__name__)


@dataclass
class Received:
    """One forwarded track as the client sees it."""

    mid: str
    participant: str
    kind: str
    producer: str
    meter: TrackMeter
    """Counts what arrives, without decoding (frames, gaps, loss)."""


VIDEO = VideoClipParams(width=160, height=120, fps=20, bitrate=100_000)
"""Small and cheap: many peers fit in one test process."""
VIDEO_INTERVAL = Fraction(1, VIDEO.fps)
AUDIO = AudioClipParams()
AUDIO_INTERVAL = Fraction(AUDIO.frame_ms, 1000)


def synthetic_tracks(audio: AudioClipParams = AUDIO, video: VideoClipParams = VIDEO) -> list[ClipTrack]:
    """Pre-encoded Opus (20 ms packets) and VP8 (160x120, 20 fps) clips: aiortc only packetizes them."""
    return [OpusTrack(audio), Vp8Track(video)]


class SyntheticPeer:
    """One participant: signaling over WebSocket, media over its own RTCPeerConnection."""

    def __init__(
        self,
        url: str,
        room: str,
        address: str,
        name: str = "",
        tracks: Sequence[MediaStreamTrack] = (),
        clock: Callable[[], float] = time.monotonic,
        media_address: str | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        relay_only: bool = False,
        allowed_remote: tuple[IPNetwork, ...] = LOOPBACK_NETWORKS,
        rewrite_answer: Callable[[str], str] | None = None,
        prepare: Callable[[RTCPeerConnection], None] | None = None,
        max_redirects: int = 1,
    ) -> None:
        self.url = url
        """Where the peer signals: the URL given, or the one a ``redirect`` named."""
        self.max_redirects = max_redirects
        """``redirect`` messages followed at most (a cluster sends one at most; more is an error)."""
        self.redirects: list[str] = []
        """URLs of the redirects followed, in order."""
        self.meter = ReceiveMeter(clock=clock)
        """Meters every received track; ``clock`` is what arrival times and gaps are measured with."""
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
        self.parsed: list[ServerMessage] = []
        """:attr:`messages` of the types this client knows (all the server sends today), typed."""
        self.transcript: list[str] = []
        """Every text frame from the server, offers included, as received (for privacy checks)."""
        self.offers = 0
        self.answers = 0
        self.close_code: int | None = None
        self.joined = asyncio.Event()
        self.closed = asyncio.Event()
        self._live: set[str] = set()
        self._left: set[str] = set()
        """Participants seen leaving: their tracks ended, whether or not an offer has said so yet (the
        server marks a leaver's m-lines inactive only in the next offer made for another reason)."""
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answering: asyncio.Future[None] | None = None
        """The latest offer's answer, which waits for the previous one's."""
        self._published = False
        self._closing = False
        self.media_address = media_address or address
        """Where ICE binds: the signaling address unless told otherwise (media from elsewhere)."""
        self._policy = IcePolicy(bind=(self.media_address,), allowed_remote=allowed_remote)
        """ICE on the media address, with the server's candidates in ``allowed_remote`` (loopback)."""
        self._configuration = RTCConfiguration(
            iceServers=list(ice_servers),
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL,
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        )
        """No ICE server unless given one; ``relay_only``: offer only relayed candidates (a TURN
        server's), as a browser with ``iceTransportPolicy: "relay"`` does."""
        self._rewrite_answer = rewrite_answer
        """Applied to each answer's SDP before it is sent: how a hostile client lies (tests only)."""
        self._prepare = prepare
        """Called with the peer connection once its first answer is set, before it is sent (tests only)."""

    # signaling ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the WebSocket from this peer's address (no message sent yet)."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(self.address, 0)))
        self._ws = await self._session.ws_connect(self.url, max_msg_size=0)
        self._reader = asyncio.ensure_future(self._read())

    async def join(self, publish: dict[str, bool] | None = None, within: float = 10) -> None:
        """Connect, join and wait for ``joined`` (or a refusal: then ``closed`` is set).

        A ``redirect`` (the room is hosted by another node of a cluster) is followed: the same join
        is sent to the URL it names, at most :attr:`max_redirects` times; one more is left as it
        is (``closed`` set, close code 4302) and logged."""
        if self._ws is None:
            await self.connect()
        if publish is None:
            publish = {t.kind: True for t in self.tracks}
        kinds = frozenset(kind for kind, on in publish.items() if on)
        while True:
            await self.send(Join(self.room, self.name, kinds))
            joined = asyncio.ensure_future(self.joined.wait())
            closed = asyncio.ensure_future(self.closed.wait())
            await asyncio.wait({joined, closed}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
            joined.cancel()
            closed.cancel()
            redirect = self._redirect()
            if redirect is None:
                return
            if len(self.redirects) >= self.max_redirects:
                logger.warning(
                    "synthetic peer %s: redirected more than %d times", self.name, self.max_redirects
                )
                return
            await self._reconnect(redirect.url)

    def _redirect(self) -> Redirect | None:
        """The ``redirect`` that closed the session, if that is how it ended."""
        if not self.closed.is_set() or self.close_code != CloseCode.REDIRECT or not self.parsed:
            return None
        last = self.parsed[-1]
        return last if isinstance(last, Redirect) and last.url.startswith(("ws://", "wss://")) else None

    async def _reconnect(self, url: str) -> None:
        """Signal at ``url`` from now on, on a new WebSocket (nothing else was allocated yet)."""
        self.redirects.append(url)
        if self._reader is not None:
            await self._reader
        if self._session is not None:
            await self._session.close()
        self.url, self._ws, self.close_code = url, None, None
        self.closed.clear()
        await self.connect()

    async def send(self, message: ClientMessage) -> None:
        await self.send_raw(encode(message))

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
                try:
                    parsed: ServerMessage | None = server_message(data)
                except ValueError:
                    parsed = None  # not one this client knows: kept in messages, not acted on
                if isinstance(parsed, OfferMessage):
                    # Answered beside the reading, in order, as a browser does: a close (an ejection)
                    # that arrives meanwhile is read and acknowledged at once, its code kept.
                    self._answering = asyncio.ensure_future(self._answer_in_turn(self._answering, parsed))
                    continue
                self.messages.append(data)
                if parsed is not None:
                    self.parsed.append(parsed)
                if isinstance(parsed, Joined):
                    self.participant_id = parsed.participant
                    self.joined.set()
                elif isinstance(parsed, ParticipantLeft):
                    self._left.add(parsed.participant)
        except Exception:
            logger.exception("synthetic peer %s: reading signaling failed", self.name)
        finally:
            self.close_code = self._ws.close_code
            self.closed.set()

    async def _answer_in_turn(self, previous: asyncio.Future[None] | None, offer: OfferMessage) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        try:
            await self._answer(offer)
        except ConnectionError:
            logger.debug("synthetic peer %s: closed while answering an offer", self.name)
        except Exception:
            logger.exception("synthetic peer %s: answering an offer failed", self.name)

    async def _answer(self, offer: OfferMessage) -> None:
        self.offers += 1
        if self._closing:
            return
        self._live = {track.producer for track in offer.tracks}
        new = [track for track in offer.tracks if track.producer not in self.received]
        with use_policy(self._policy):
            if self.pc is None:
                self.pc = RTCPeerConnection(self._configuration)
            pc = self.pc
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            # Before aiortc starts the receivers (it does once this coroutine yields): no decoder.
            self._meter_new_tracks(pc, new, {slot.mid for slot in offer.publish})
            if not self._published:
                self._published = True
                self._attach_tracks(pc, offer.publish)
            await pc.setLocalDescription(await pc.createAnswer())
        if self._prepare is not None and self.answers == 0:
            self._prepare(pc)
        sdp = pc.localDescription.sdp
        if self._rewrite_answer is not None:
            sdp = self._rewrite_answer(sdp)
        await self.send(Answer(sdp))
        self.answers += 1

    def _attach_tracks(self, pc: RTCPeerConnection, publish: Sequence[PublishSlot]) -> None:
        by_mid: dict[str | None, RTCRtpTransceiver] = {t.mid: t for t in pc.getTransceivers()}
        tracks = list(self.tracks)
        for slot in publish:
            transceiver = by_mid.get(slot.mid)
            track = next((t for t in tracks if t.kind == slot.kind), None)
            if transceiver is None or track is None:
                continue
            tracks.remove(track)
            transceiver.sender.replaceTrack(track)
            transceiver.direction = "sendonly"
            if isinstance(track, ClipTrack):
                on_keyframe_request(transceiver.sender, track.request_keyframe)

    def _meter_new_tracks(self, pc: RTCPeerConnection, new: list[OfferedTrack], publish: set[str]) -> None:
        by_mid = {t.mid: t for t in pc.getTransceivers()}
        for track in new:
            transceiver = by_mid[track.mid]
            self.received[track.producer] = Received(
                mid=track.mid,
                participant=track.participant,
                kind=track.kind,
                producer=track.producer,
                meter=self.meter.attach(transceiver, track.participant),
            )
        for transceiver in by_mid.values():
            if transceiver.mid not in publish and tap_of(transceiver.receiver) is None:
                self.meter.attach(transceiver, "")  # not announced: still never decoded

    # leaving ------------------------------------------------------------------------------------

    async def leave(self) -> None:
        """Say goodbye and close everything."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.send(Leave())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 5)
        await self.close()

    async def close(self) -> None:
        """Close the connection and the WebSocket without a goodbye (idempotent)."""
        self._closing = True
        if self._answering is not None:  # not under an answer being made (later offers are skipped)
            await asyncio.wait({self._answering}, timeout=5)
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

    def meters(self, participant: str, kind: str) -> list[TrackMeter]:
        """Meters of the tracks of ``kind`` received from ``participant``."""
        return [r.meter for r in self.received.values() if r.participant == participant and r.kind == kind]

    def live_tracks(self) -> list[Received]:
        """Tracks on the m-lines of the last offer whose participants have not left since."""
        return [
            r for r in self.received.values() if r.producer in self._live and r.participant not in self._left
        ]


def everyone_receives(peers: Sequence[SyntheticPeer], minimum_frames: int = 10) -> str | None:
    """None when every peer has ``minimum_frames`` audio and video frames from every other, else who
    lacks what (a condition for :func:`~sfu_geofence.testing.wait.eventually`)."""
    for peer in peers:
        for source in peers:
            if source is not peer:
                for kind in ("audio", "video"):
                    meters = peer.meters(str(source.participant_id), kind)
                    if not meters or meters[0].frames < minimum_frames:
                        return f"{peer.name} has not {minimum_frames} {kind} frames from {source.name} yet"
    return None


async def _run_forever(url: str, room: str, address: str, name: str) -> None:
    peer = SyntheticPeer(url, room, address, name=name, tracks=synthetic_tracks())
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
