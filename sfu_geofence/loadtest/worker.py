"""A worker process: runs a share of the participants and meters everything they receive.

Each participant is a :class:`~sfu_geofence.synthetic.client.SyntheticPeer` bound to its own loopback
address (WebSocket and ICE), publishing the shared pre-encoded VP8 + Opus clips and counting received
RTP packets in a :class:`~sfu_geofence.synthetic.meter.TrackMeter` per received track, never decoding.
The coordinator talks to the worker over a pipe (:class:`multiprocessing.connection.Connection`):

* coordinator -> worker: :class:`Add` (join one more participant), :class:`Mark` (the scenario clock
  starts: snapshot loss counters), :class:`Finish` (send the results, close everybody, exit);
* worker -> coordinator: :class:`PeerEvent` as they happen, :class:`Progress` every interval,
  :class:`WorkerResult` once at the end.

Times are ``time.monotonic()`` seconds, one clock for every process on Linux, so the coordinator can
compare a receiver's last packet with the moment it sent a policy change.

A participant killed by a ``kill`` step runs alone in a worker of its own, which the coordinator
SIGKILLs: the kernel closes its TCP connection and its media stops mid-stream, as when a laptop dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Literal

from .. import eventloop
from ..netguard import loopback_only
from ..protocol import ClosingMessage, EjectedMessage, RefusedMessage
from ..rtc.ice import networks
from ..synthetic.client import SyntheticPeer
from ..synthetic.janus_peer import JanusPeer
from ..synthetic.media import (
    AudioClipParams,
    OpusTrack,
    VideoClipParams,
    Vp8Track,
    encode_opus_clip,
    encode_vp8_clip,
)
from ..synthetic.meter import TrackMeter
from .scenario import PeerSpec

logger = logging.getLogger(__name__)

LAG_TICK_S = 0.02
LAG_RECORDED_S = 0.005
"Event-loop stalls at least this long are kept (start, length), to be set beside the gaps measured."
MAX_STALLS = 10_000

EventKind = Literal["joined", "refused", "ejected", "closed", "failed"]


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    video: VideoClipParams
    audio: AudioClipParams
    peers: tuple[PeerSpec, ...]
    """Joined at once when the worker starts."""
    join_timeout: float = 30.0
    progress_interval: float = 1.0
    uvloop: bool = True
    janus_ice: str | None = None
    """``url`` is a geofenced Janus's HTTP API (``--janus``): participants are :class:`JanusPeer` whose
    media goes from this address (where that Janus gathers, e.g. a LAN namespace's 198.18.0.1)."""
    room_urls: Mapping[str, str] = field(default_factory=dict)
    """With several nodes (``--nodes``): the signaling URL of the node hosting each room (else ``url``)."""


@dataclass(frozen=True)
class Add:
    peer: PeerSpec


@dataclass(frozen=True)
class Mark:
    """The scenario clock starts now: loss is counted from here."""


@dataclass(frozen=True)
class Finish:
    pass


@dataclass(frozen=True)
class PeerEvent:
    peer: str
    kind: EventKind
    at: float
    participant: str | None = None
    """The SFU's id of the participant (``joined``)."""
    close_code: int | None = None
    join_ms: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class PeerProgress:
    joined: bool
    sources: tuple[str, ...]
    """Participant ids from which both audio and video arrived (at any time)."""
    packets: int
    bytes: int


@dataclass(frozen=True)
class Progress:
    at: float
    peers: dict[str, PeerProgress]
    cpu_s: float


@dataclass(frozen=True)
class TrackRecord:
    """One received track, as a receiver saw it."""

    receiver: str
    source: str
    """The publishing participant's SFU id."""
    kind: str
    packets: int
    lost: int
    lost_at_mark: int
    first_arrival: float | None
    last_arrival: float | None
    frame_times: tuple[float, ...]
    bucket_s: float
    bucket_starts: tuple[float, ...]
    bucket_bytes: tuple[int, ...]
    bucket_packets: tuple[int, ...]


@dataclass(frozen=True)
class WorkerResult:
    tracks: tuple[TrackRecord, ...]
    cpu_s: float
    loop_lag_max_ms: float
    """The longest this worker's event loop stalled (a 20 ms timer fired this much late)."""
    stalls: tuple[tuple[float, float, float], ...] = ()
    """(monotonic start, seconds, CPU seconds used meanwhile) of each stall >= :data:`LAG_RECORDED_S`."""


@dataclass
class _Metered:
    spec: PeerSpec
    peer: SyntheticPeer | JanusPeer
    lost_at_mark: dict[str, int] = field(default_factory=dict)
    """Loss counters by producer id when the scenario clock started."""

    @property
    def meters(self) -> dict[str, TrackMeter]:
        """The peer's meter of each received track, by producer id (an m-line recycled for another
        producer gets a meter of its own)."""
        return {producer: received.meter for producer, received in self.peer.received.items()}


class Worker:
    """The participants of one worker process, driven by the coordinator's messages."""

    def __init__(self, conn: Connection, config: WorkerConfig) -> None:
        self.conn = conn
        self.config = config
        self.peers: dict[str, _Metered] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._finish = asyncio.Event()
        self._loop_lag = 0.0
        self._stopping = False
        self._stalls: list[tuple[float, float, float]] = []

    async def run(self) -> None:
        encode_vp8_clip(self.config.video)  # once per process, before anybody joins
        encode_opus_clip(self.config.audio)
        loop = asyncio.get_running_loop()
        eventloop.add_blocking_reader(self.conn.fileno(), self._on_readable)
        try:
            for spec in self.config.peers:
                self._start(spec)
            progress = asyncio.ensure_future(self._progress())
            await self._finish.wait()
            progress.cancel()
            self._send(
                WorkerResult(
                    tuple(self._records()), time.process_time(), self._loop_lag * 1000, tuple(self._stalls)
                )
            )
        finally:
            loop.remove_reader(self.conn.fileno())
            await self._close_all()

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if isinstance(message, Add):
                    self._start(message.peer)
                elif isinstance(message, Mark):
                    for metered in self.peers.values():
                        metered.lost_at_mark = {p: m.lost for p, m in metered.meters.items()}
                elif isinstance(message, Finish):
                    self._finish.set()
        except (EOFError, OSError):  # the coordinator is gone: stop
            self._finish.set()
            asyncio.get_running_loop().remove_reader(self.conn.fileno())

    def _send(self, message: object) -> None:
        with contextlib.suppress(OSError):  # a coordinator that died cannot be told
            self.conn.send(message)

    def _start(self, spec: PeerSpec) -> None:
        task = asyncio.ensure_future(self._run_peer(spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_peer(self, spec: PeerSpec) -> None:
        tracks = [Vp8Track(self.config.video), OpusTrack(self.config.audio)]
        peer: SyntheticPeer | JanusPeer
        if self.config.janus_ice is not None:
            ice = self.config.janus_ice
            peer = JanusPeer(
                self.config.url,
                spec.room,
                spec.address,
                name=spec.name,
                tracks=tracks,
                media_address=ice,
                allowed_remote=networks([f"{ice}/32"]),
            )
        else:
            url = self.config.room_urls.get(spec.room, self.config.url)
            peer = SyntheticPeer(url, spec.room, spec.address, name=spec.name, tracks=tracks)
        self.peers[spec.name] = _Metered(spec, peer)
        started = time.monotonic()
        try:
            await peer.join(within=self.config.join_timeout)
        except Exception as exc:  # e.g. connection refused: say so, never hang
            self._send(
                PeerEvent(spec.name, "failed", time.monotonic(), detail=f"{type(exc).__name__}: {exc}")
            )
            await peer.close()
            return
        if peer.participant_id is not None:
            self._send(
                PeerEvent(
                    spec.name,
                    "joined",
                    time.monotonic(),
                    participant=peer.participant_id,
                    join_ms=(time.monotonic() - started) * 1000,
                )
            )
        elif not peer.closed.is_set():
            self._send(
                PeerEvent(
                    spec.name,
                    "failed",
                    time.monotonic(),
                    detail=f"no answer to join in {self.config.join_timeout:g} s",
                )
            )
            await peer.close()
            return
        await peer.closed.wait()
        at = time.monotonic()
        if self._stopping:  # we closed it ourselves at the end
            return
        ends = [m for m in peer.parsed if isinstance(m, RefusedMessage | EjectedMessage | ClosingMessage)]
        refused = any(isinstance(m, RefusedMessage) for m in ends)
        ejected = any(isinstance(m, EjectedMessage) for m in ends)
        kind: EventKind = "refused" if refused else "ejected" if ejected else "closed"
        detail = ends[0].reason if ends else ""
        self._send(PeerEvent(spec.name, kind, at, close_code=peer.close_code, detail=detail))
        await peer.close()

    async def _progress(self) -> None:
        loop = asyncio.get_running_loop()
        next_report = loop.time() + self.config.progress_interval
        while True:
            # a 20 ms ticker: how late it fires is how long this process's event loop stalled
            due, cpu = loop.time() + LAG_TICK_S, time.process_time()
            await asyncio.sleep(LAG_TICK_S)
            now = loop.time()
            lag = now - due
            self._loop_lag = max(self._loop_lag, lag)
            if lag >= LAG_RECORDED_S and len(self._stalls) < MAX_STALLS:
                # the CPU this process used meanwhile tells a busy worker (close to the stall) from a
                # machine that did not run it (close to 0)
                self._stalls.append((time.monotonic() - lag, lag, time.process_time() - cpu))
            if now >= next_report:
                next_report = now + self.config.progress_interval
                self._send(Progress(time.monotonic(), self._peer_progress(), time.process_time()))

    def _peer_progress(self) -> dict[str, PeerProgress]:
        result: dict[str, PeerProgress] = {}
        for name, metered in self.peers.items():
            kinds: dict[str, set[str]] = defaultdict(set)
            for meter in metered.meters.values():
                if meter.packets:
                    kinds[meter.source].add(meter.kind)
            result[name] = PeerProgress(
                joined=metered.peer.participant_id is not None and not metered.peer.closed.is_set(),
                sources=tuple(sorted(s for s, k in kinds.items() if len(k) == 2)),
                packets=sum(m.packets for m in metered.meters.values()),
                bytes=sum(m.bytes for m in metered.meters.values()),
            )
        return result

    def _records(self) -> list[TrackRecord]:
        records: list[TrackRecord] = []
        for name, metered in self.peers.items():
            for producer, meter in metered.meters.items():
                rates = meter.rates()
                records.append(
                    TrackRecord(
                        receiver=name,
                        source=meter.source,
                        kind=meter.kind,
                        packets=meter.packets,
                        lost=meter.lost,
                        lost_at_mark=metered.lost_at_mark.get(producer, 0),
                        first_arrival=meter.first_arrival,
                        last_arrival=meter.last_arrival,
                        frame_times=tuple(meter.frame_times()),
                        bucket_s=meter.bucket_s,
                        bucket_starts=tuple(r.start for r in rates),
                        bucket_bytes=tuple(r.bytes for r in rates),
                        bucket_packets=tuple(r.packets for r in rates),
                    )
                )
        return records

    async def _close_all(self) -> None:
        self._stopping = True
        closing = [m.peer.close() for m in self.peers.values()]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 10)
        for task in list(self._tasks):
            task.cancel()


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of a worker process (``multiprocessing`` spawn context)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    logging.basicConfig(
        level=logging.WARNING, format=f"worker {os.getpid()} %(levelname)s %(name)s %(message)s"
    )
    # Janus never gathers on loopback: media goes to the address of this machine it gathers on (a LAN
    # namespace's dummy in the tests), and to nothing else.
    ice = config.janus_ice
    with loopback_only(None if ice is None else ice.__eq__) as guard:
        eventloop.run(Worker(conn, config).run(), factory=guard.loop_factory(config.uvloop))
