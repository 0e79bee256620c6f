"""What forwarding costs the SFU: CPU per forwarded packet, 1 publisher (audio + video) -> K subscribers.

Processes, all on loopback, each with the project's loopback guard installed:

* the SFU under test (``sfu_geofence.server`` in a process of its own): it reports its own CPU time
  (user + system, all threads) and its consumers' ``packets_forwarded`` counters, so the packet count
  is the SFU's own truth, not an estimate from what was sent;
* a publisher: one synthetic participant sending the pre-encoded VP8 + Opus clip (no encoder);
* real subscribers (``--real``, default 3): synthetic participants whose receive meters count every
  packet, frame and loss (aiortc's SRTP and RTP parsing, no decoder) and so verify delivery;
* cheap sinks, the other K - real subscribers: they join, complete ICE and DTLS, keep answering the
  WebSocket pings and ICE consent checks, and drop every RTP/RTCP datagram as it comes off the socket
  after counting packets and frames from its clear-text RTP header (SRTP encrypts only the payload).
  They cost the generator a few microseconds per packet, so it does not drown the SFU on 2 cores.

Subscribers are added in steps (K = 1, 5, 20, 50 by default). At each K, once every subscriber gets
media, the SFU's CPU and forwarded packets are measured over a window of ``--window`` seconds, and
every subscriber's received frame rate over the same window. Then the same publisher clip and
K = ``--relay-k`` subscribers go through ``bench/relay_sfu.py`` (an aiortc ``MediaRelay`` that decodes
once and re-encodes per subscriber), measured the same way.

The default input is what the project notes measured the prototype and Janus with: VP8 640x480 at
30 fps, ~1.45 Mbit/s (~150 packets/s) + Opus 20 ms (50 packets/s).

Figures (the last line with ``--json``; ``_k20`` ones are at K = ``--relay-k``):

* ``us_per_forwarded_packet[K]``: SFU CPU seconds x 1e6 / packets forwarded in the window (ingress and
  fixed costs included, hence high at small K); ``us_per_extra_forwarded_packet`` is the slope of CPU
  over forwarded packet rate across the K steps (the marginal cost of one more subscriber's packet);
* ``relay_cpu_ratio_k20``: relay CPU / SFU CPU. The relay wants more than the 2 shared cores, so what
  it gets depends on the neighbours' load; ``relay_cpu_per_delivered_frame_ratio_k20`` does not;
* ``fps_min_k20``: lowest video frame arrival rate over all K subscribers (sinks included);
  ``frames_missing`` counts, per subscriber, frames whose RTP timestamp falls inside the window but
  which never arrived: loss, as opposed to latency at the window's edges.

Goals (issue 3): us_per_forwarded_packet["50"] <= 40 (Janus, in C, on this machine),
relay_cpu_ratio_k20 >= 10, fps_min_k20 equal to the source's frame rate (checked as: no frame missing
at any subscriber, and fps_min_k20 within 1 fps of the measured source rate); issue 12:
gc_pause_max_ms <= 10 (the SFU's longest garbage-collector pause in any window, timed with
gc.callbacks; the SFU process freezes what exists once started, as ``serve`` does).

``--vs-janus`` (issue 12) then runs Debian's Janus VideoRoom with the same clip, K steps, real
subscribers and sinks (``bench/vs_janus.py``; the whole bench re-runs itself in a LAN namespace of its
own, as Janus gathers on no loopback interface, so it needs root), and adds ``janus`` (per K: both
servers' CPU per packet the subscribers counted, Janus's from ``/proc/<pid>/stat``) and
``vs_janus_ratio[K]`` (project / Janus; goal at K=50: <= 0.5). Without Janus (or a namespace) it
says so in ``janus.skipped`` and reports the project alone.

    python -m bench.forwarding [--json] [--vs-janus]   (from the repository root; bounded under 3
                                                        minutes, twice that with --vs-janus)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from sfu_geofence.eventloop import ENV_UVLOOP, add_uvloop_argument

GOAL_US_PER_PACKET_K50 = 40.0
GOAL_RELAY_RATIO_K20 = 10.0
GOAL_GC_PAUSE_MS = 10.0
ROOM = "bench"
PUBLISHER_ADDRESS = {"sfu": "127.70.0.1", "relay": "127.70.0.2", "janus": "127.70.0.3"}
SUBSCRIBER_NETWORK = {"sfu": 71, "relay": 72, "janus": 73}
DEFAULT_KS = (1, 5, 20, 50)
CONNECT_TIMEOUT = 90.0
"Generous: joins happen on a loaded 2-core machine (and, for the relay, next to a saturated process)."
DEFAULT_VIDEO = {"width": 640, "height": 480, "fps": 30, "bitrate": 1_500_000}
"What the project notes measured the prototype and Janus with: one 1.5 Mbit/s VP8 publisher at 30 fps."


def subscriber_address(target: str, index: int) -> str:
    return f"127.{SUBSCRIBER_NETWORK[target]}.{index // 250}.{index % 250 + 1}"


def progress(message: str) -> None:
    print(f"[forwarding bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- child processes -------------------------------------------------------------------------------


def _child(conn: Connection, main: Callable[[Connection], Any]) -> None:
    """Run ``main(conn)`` under the loopback guard; report a crash to the parent instead of dying mute."""
    import logging

    from sfu_geofence import eventloop
    from sfu_geofence.netguard import loopback_only
    from sfu_geofence.testing.netns import Namespace, current_namespace, is_own_lan_address

    logging.basicConfig(level=logging.WARNING, format="%(process)d %(levelname)s %(name)s %(message)s")
    # Ctrl-C reaches the whole process group: the parent alone handles it and stops the children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # In the LAN namespace of --vs-janus, Janus and its peers talk on the namespace's own dummy.
        lan = is_own_lan_address if current_namespace() is Namespace.LAN else None
        with loopback_only(lan) as guard:  # the children inherit --no-uvloop as SFU_GEOFENCE_UVLOOP=0
            eventloop.run(main(conn), factory=guard.loop_factory(eventloop.uvloop_enabled()))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))


async def _commands(conn: Connection) -> Any:
    """The next command from the parent, read in a daemon thread so that the event loop keeps running
    and the process can exit while the thread still waits (a parent that died reads as "stop")."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def read() -> None:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            command = ("stop",)
        loop.call_soon_threadsafe(lambda: future.done() or future.set_result(command))

    threading.Thread(target=read, daemon=True).start()
    return await future


def server_process(conn: Connection, kind: str) -> None:
    _child(conn, lambda c: _serve(c, kind))


async def _serve(conn: Connection, kind: str) -> None:
    """The SFU (``kind="sfu"``) or the MediaRelay baseline (``"relay"``) on 127.0.0.1, answering snapshots."""
    from aiohttp import web

    from sfu_geofence.testing.server import served_on_loopback

    if kind == "sfu":
        from sfu_geofence.pauses import GcPauses

        window, whole_run = GcPauses().install(), GcPauses().install()

        def snapshot() -> dict[str, Any]:
            # the collector's pauses since the previous snapshot (a window's start), and overall
            figures = {**_sfu_snapshot(served.sfu), **window.snapshot()}
            figures["gc_pause_max_ms_run"] = round(whole_run.max_ms, 3)
            window.reset()
            return figures

        async with served_on_loopback() as served:
            gc.collect()
            gc.freeze()  # as serve does once started
            conn.send(("ok", served.url))
            await _answer_snapshots(conn, snapshot)
        return
    from bench.relay_sfu import RELAY, create_relay_app

    app = create_relay_app()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        conn.send(("ok", f"http://127.0.0.1:{runner.addresses[0][1]}/ws"))
        state = app[RELAY]
        await _answer_snapshots(
            conn, lambda: {"connections": len(state.connections), "subscribers": state.subscribers}
        )
    finally:
        await runner.cleanup()


async def _answer_snapshots(conn: Connection, counters: Callable[[], dict[str, Any]]) -> None:
    profile: Any = None
    while True:
        command = await _commands(conn)
        if command[0] == "stop":
            conn.send(("ok", None))
            return
        if command[0] == "profile-start":
            import cProfile

            profile = cProfile.Profile(
                time.process_time
            )  # CPU, not wall: sends that wake a receiver get preempted
            profile.enable()
            conn.send(("ok", None))
        elif command[0] == "profile-stop" and profile is not None:
            profile.disable()
            profile.dump_stats(command[1])
            profile = None
            conn.send(("ok", None))
        else:  # snapshot, taken on the event loop: the counters are not touched meanwhile
            times = os.times()
            snapshot = {"t": time.monotonic(), "cpu_s": time.process_time(), "sys_s": times.system}
            conn.send(("ok", {**snapshot, **counters()}))


def _sfu_snapshot(sfu: Any) -> dict[str, Any]:
    """Counters kept by the SFU itself (read, never changed)."""
    forwarded = received = 0
    subscribers: dict[str, dict[str, int]] = {}
    for participant in sfu.participants.values():
        for producer in participant.producers.values():
            received += producer.packets_received
        if participant.producers:
            continue
        active = [c for c in participant.consumers.values() if c.active]
        sent = sum(c.packets_forwarded for c in participant.consumers.values())
        forwarded += sent
        subscribers[participant.name] = {"active_consumers": len(active), "forwarded": sent}
    # consumers of participants that left are gone; none leave during a window (checked by the caller)
    return {
        "participants": len(sfu.participants),
        "forwarded": forwarded,
        "received": received,
        "subscribers": subscribers,
    }


def peers_process(conn: Connection) -> None:
    _child(conn, _peers)


class SinkCounter:
    """Packets and frames (a new RTP timestamp) per payload type, read from the clear RTP header."""

    __slots__ = ("frames", "packets", "timestamps")

    def __init__(self) -> None:
        self.packets: dict[int, int] = {}
        self.frames: dict[int, int] = {}
        self.timestamps: dict[int, bytes] = {}

    def rtp(self, payload_type: int, timestamp: bytes) -> None:
        packets = self.packets
        packets[payload_type] = packets.get(payload_type, 0) + 1
        if self.timestamps.get(payload_type) != timestamp:
            self.timestamps[payload_type] = timestamp
            self.frames[payload_type] = self.frames.get(payload_type, 0) + 1


def drop_incoming_media(pc: Any, counter: SinkCounter) -> None:
    """Make a connected client drop incoming RTP and RTCP at its socket, STUN and DTLS still handled.

    Replaces ``datagram_received`` on the instances of aioice's ``StunProtocol`` (private, aioice 0.13.0):
    ICE consent checks and DTLS keep working, so the SFU sees a live subscriber, but no SRTP is
    decrypted and nothing is parsed beyond the RTP header.
    """
    from sfu_geofence.rtc.forwarding import ice_connection_of

    connection = ice_connection_of(pc)
    if connection is None:
        raise RuntimeError("the connection has no ICE transport yet")
    for protocol in connection._protocols:
        original = protocol.datagram_received

        def datagram_received(
            data: bytes, addr: tuple[Any, ...], original: Callable[..., None] = original
        ) -> None:
            if 127 < data[0] < 192:  # RTP or RTCP (RFC 7983)
                second = data[1]
                if not 191 < second < 224:  # RTCP packet types are 192-223 (RFC 5761)
                    counter.rtp(second & 0x7F, data[4:8])
                return
            original(data, addr)

        protocol.datagram_received = datagram_received


VP8_RTPMAP = re.compile(r"a=rtpmap:(\d+) VP8/90000", re.IGNORECASE)


@dataclass
class _Subscriber:
    peer: Any
    sink: SinkCounter | None
    video_payload_types: frozenset[int] = frozenset()


@dataclass
class _PeersState:
    publisher: Any = None
    tracks: list[Any] = field(default_factory=list)
    subscribers: dict[str, _Subscriber] = field(default_factory=dict)
    janus: Any = None
    """With --vs-janus, the process's Janus session (``bench.vs_janus.JanusClient``)."""


async def _peers(conn: Connection) -> None:
    """A generator process: a publisher and/or subscribers, driven by the parent's commands."""
    state = _PeersState()
    try:
        while True:
            command = await _commands(conn)
            if command[0] == "stop":
                await _close_peers(state)
                conn.send(("ok", None))
                return
            if command[0] == "publish":
                conn.send(("ok", await _publish(state, *command[1:])))
            elif command[0] == "subscribe":
                conn.send(("ok", await _subscribe(state, *command[1:])))
            elif command[0] == "snapshot":
                conn.send(("ok", _peers_snapshot(state)))
            elif command[0] in ("janus-publish", "janus-subscribe"):
                from bench import vs_janus

                action = vs_janus.janus_publish if command[0] == "janus-publish" else vs_janus.janus_subscribe
                conn.send(("ok", await action(state, *command[1:])))
    finally:
        await _close_peers(state)


async def _close_peers(state: _PeersState) -> None:
    peers = [s.peer for s in state.subscribers.values()]
    if state.publisher is not None:
        peers.append(state.publisher)
    state.subscribers.clear()
    state.publisher = None
    await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
    if state.janus is not None:
        janus, state.janus = state.janus, None
        await janus.close()


def publisher_tracks(state: _PeersState, video: dict[str, Any], audio: dict[str, Any]) -> int:
    """Make the publisher's clip (before anything is timed) and tracks, in ``state``; its bitrate."""
    from sfu_geofence.synthetic.media import (
        AudioClipParams,
        OpusTrack,
        VideoClipParams,
        Vp8Track,
        encode_vp8_clip,
    )

    video_params = VideoClipParams(**video)
    clip = encode_vp8_clip(video_params)
    state.tracks = [Vp8Track(video_params), OpusTrack(AudioClipParams(**audio))]
    return round(clip.bitrate)


async def _publish(
    state: _PeersState, url: str, address: str, video: dict[str, Any], audio: dict[str, Any]
) -> dict[str, Any]:
    from sfu_geofence.synthetic.client import SyntheticPeer

    bitrate = publisher_tracks(state, video, audio)
    peer = state.publisher = SyntheticPeer(url, ROOM, address, name="publisher", tracks=state.tracks)
    await peer.join(within=CONNECT_TIMEOUT)
    if peer.participant_id is None:
        raise RuntimeError(f"the publisher was not admitted: {peer.messages}")
    await _connected([peer])  # (the client lets PLI/FIR reach the clip: it skips to its next keyframe)
    return {"participant": peer.participant_id, "video_clip_bitrate": bitrate}


async def _subscribe(state: _PeersState, url: str, joining: list[tuple[str, str, bool]]) -> int:
    """Join subscribers (name, address, sink?) ten at a time; return once all are connected."""
    from sfu_geofence.synthetic.client import SyntheticPeer

    async def one(name: str, address: str, sink: bool) -> None:
        peer = SyntheticPeer(url, ROOM, address, name=name)
        state.subscribers[name] = subscriber = _Subscriber(peer, SinkCounter() if sink else None)
        await peer.join(within=CONNECT_TIMEOUT)
        if peer.participant_id is None:
            raise RuntimeError(f"subscriber {name} was not admitted: {peer.messages}")
        await _connected([peer])
        subscriber.video_payload_types = frozenset(
            int(pt) for pt in VP8_RTPMAP.findall(peer.pc.localDescription.sdp)
        )
        if subscriber.sink is not None:
            drop_incoming_media(peer.pc, subscriber.sink)

    for start in range(0, len(joining), 10):
        await asyncio.gather(*(one(*args) for args in joining[start : start + 10]))
    return len(state.subscribers)


async def _connected(peers: Sequence[Any]) -> None:
    from sfu_geofence.testing.wait import eventually

    def check() -> str | None:
        waiting = [
            p.name for p in peers if p.pc is None or p.pc.connectionState != "connected" or p.closed.is_set()
        ]
        return None if not waiting else f"not connected: {waiting[:5]} ({len(waiting)})"

    await eventually(check, within=CONNECT_TIMEOUT, interval=0.05)


def _peers_snapshot(state: _PeersState) -> dict[str, Any]:
    subscribers: dict[str, dict[str, Any]] = {}
    for name, subscriber in state.subscribers.items():
        peer = subscriber.peer
        row: dict[str, Any] = {
            "sink": subscriber.sink is not None,
            "state": peer.pc.connectionState if peer.pc is not None else "new",
            "closed": peer.closed.is_set(),
            "close_code": peer.close_code,
        }
        if subscriber.sink is None:
            for kind in ("video", "audio"):
                meters = [r.meter for r in peer.received.values() if r.kind == kind]
                row[f"{kind}_packets"] = sum(m.packets for m in meters)
                row[f"{kind}_frames"] = sum(m.frames for m in meters)
                row[f"{kind}_lost"] = sum(m.lost for m in meters)
                if kind == "video" and len(meters) == 1 and meters[0].packets:
                    # the TrackMeter keeps the newest RTP timestamp privately
                    row["video_timestamp"] = getattr(meters[0], "_last_timestamp", None)
        else:
            video = subscriber.video_payload_types
            sink = subscriber.sink
            row["video_packets"] = sum(n for pt, n in sink.packets.items() if pt in video)
            row["video_frames"] = sum(n for pt, n in sink.frames.items() if pt in video)
            row["audio_packets"] = sum(n for pt, n in sink.packets.items() if pt not in video)
            row["audio_frames"] = sum(n for pt, n in sink.frames.items() if pt not in video)
            timestamps = [t for pt, t in sink.timestamps.items() if pt in video]
            if len(timestamps) == 1:
                row["video_timestamp"] = int.from_bytes(timestamps[0], "big")
        subscribers[name] = row
    publisher = None
    if state.publisher is not None:
        publisher = {
            "closed": state.publisher.closed.is_set(),
            **{f"{t.kind}_frames_sent": t.frames_sent for t in state.tracks},
            "keyframes_forced": sum(getattr(t, "keyframes_forced", 0) for t in state.tracks),
        }
    return {
        "t": time.monotonic(),
        "cpu_s": time.process_time(),
        "subscribers": subscribers,
        "publisher": publisher,
    }


# --- the parent ------------------------------------------------------------------------------------


class Child:
    """One child process and its command pipe."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, there = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=target, args=(there, *args), name=name, daemon=True
        )
        self.process.start()
        there.close()

    def send(self, *command: Any) -> None:
        self.conn.send(command)

    def result(self, timeout: float = CONNECT_TIMEOUT + 30) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{self.name}: no answer within {timeout:g} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"{self.name} failed:\n{value}")
        return value

    def call(self, *command: Any, timeout: float = CONNECT_TIMEOUT + 30) -> Any:
        self.send(*command)
        return self.result(timeout)

    def request_stop(self) -> None:
        """Ask the child to close its connections and exit (without waiting)."""
        with contextlib.suppress(OSError):
            self.send("stop")

    def stop(self, deadline: float) -> None:
        """Wait for the child until ``deadline`` (monotonic), then terminate, then kill."""
        self.process.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


def udp_receive_buffer_errors() -> int:
    """Linux's UDP RcvbufErrors counter (all processes of the network namespace), 0 if unavailable."""
    try:
        with open("/proc/net/snmp") as snmp:
            rows = [line.split() for line in snmp if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return 0


def snapshot_all(children: Sequence[Child]) -> list[Any]:
    """Snapshot several processes as close together in time as the pipes allow."""
    for child in children:
        child.send("snapshot")
    return [child.result(30) for child in children]


@dataclass
class Window:
    """What one measurement window saw: the server's counters and every subscriber's."""

    k: int
    seconds: float
    server_cpu_s: float
    server_sys_s: float
    """The part of server_cpu_s spent in the kernel (sendto/recvfrom on loopback, epoll)."""
    forwarded: int | None
    received: int | None
    publisher_video_frames: int
    publisher_audio_frames: int
    fps: dict[str, float]
    """Video frames received per second of the window, per subscriber (arrival rate)."""
    audio_pps: dict[str, float]
    frames_missing: dict[str, int]
    """Per subscriber: frames whose RTP timestamp falls between its first and last frame of the window
    but that never arrived (loss, not latency: independent of where the window's edges fall)."""
    real_packets_lost: int
    udp_receive_buffer_drops: int
    """Machine-wide UDP datagrams dropped on full receive buffers during the window (/proc/net/snmp):
    a starved receiving process loses packets there, after the SFU sent them."""
    """RTP packets the real subscribers' meters counted as lost during the window (RFC 3550)."""
    real: list[str]
    generator_cpu_pct: float
    participants: int | None = None
    delivered: int | None = None
    """RTP packets (video and audio) the subscribers counted during the window: the same measure
    whatever the server (``--vs-janus`` compares CPU per delivered packet)."""
    gc_pause_max_ms: float | None = None
    """The SFU's longest garbage-collector pause during the window (gc.callbacks)."""
    gc_pause_max_ms_run: float | None = None
    """... since the SFU started (joins included)."""

    @property
    def server_cpu_pct(self) -> float:
        return 100 * self.server_cpu_s / self.seconds

    @property
    def source_fps(self) -> float:
        return self.publisher_video_frames / self.seconds

    @property
    def us_per_forwarded_packet(self) -> float | None:
        return None if not self.forwarded else self.server_cpu_s * 1e6 / self.forwarded


class Run:
    """One target (the SFU or the relay): a server process, a publisher, real subscribers and sinks."""

    def __init__(self, target: str, args: argparse.Namespace) -> None:
        self.target = target
        self.args = args
        self.children: list[Child] = []
        self.k = 0
        self.names: list[str] = []
        self.real_names: list[str] = []

    publish_command = "publish"

    def start(self) -> None:
        """Start the processes (call inside ``try``/``finally: close()``)."""
        self.server = self._start(self._start_server())
        self.publisher = self._start(Child(f"{self.target} publisher", peers_process))
        self.real = self._start(Child(f"{self.target} real subscribers", peers_process))
        self.sinks = self._start(Child(f"{self.target} sinks", peers_process))

    def _start_server(self) -> Any:
        """The server's process (the SFU or the relay, a child answering snapshots); sets ``url``."""
        server = Child(f"{self.target} server", server_process, self.target)
        self.url: str = server.result()
        progress(f"{self.target}: server process {server.process.pid} at {self.url}")
        return server

    def subscribe_command(self, batch: list[tuple[str, str, bool]]) -> tuple[Any, ...]:
        return ("subscribe", self.url, batch)

    def _start(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def close(self) -> None:
        """Stop the generators (their peers leave), then the server; never leave a process behind."""
        generators = [c for c in self.children if c is not self.children[0]]
        for group in (generators, self.children[:1]):
            for child in group:
                child.request_stop()
            deadline = time.monotonic() + 10
            for child in group:
                child.stop(deadline)

    def publish(self) -> dict[str, Any]:
        progress(
            f"{self.target}: publisher joins ({self.args.width}x{self.args.height} @ {self.args.fps} fps)"
        )
        video = {"width": self.args.width, "height": self.args.height, "fps": self.args.fps}
        video["bitrate"] = self.args.bitrate
        info: dict[str, Any] = self.publisher.call(
            self.publish_command,
            self.url,
            PUBLISHER_ADDRESS[self.target],
            video,
            {"frame_ms": self.args.audio_ms},
        )
        return info

    def grow(self, k: int) -> None:
        """Add subscribers up to ``k``: real ones first, then sinks."""
        real: list[tuple[str, str, bool]] = []
        sinks: list[tuple[str, str, bool]] = []
        for index in range(self.k, k):
            is_real = index < self.args.real
            name = f"{'real' if is_real else 'sink'}{index}"
            (real if is_real else sinks).append((name, subscriber_address(self.target, index), not is_real))
            self.names.append(name)
            if is_real:
                self.real_names.append(name)
        progress(f"{self.target}: K={k}: {len(real)} real subscribers and {len(sinks)} sinks join")
        started = time.monotonic()
        calls = [(child, batch) for child, batch in ((self.real, real), (self.sinks, sinks)) if batch]
        for child, batch in calls:
            child.send(*self.subscribe_command(batch))
        for child, _ in calls:
            child.result()
        self.k = k
        self._wait_for_media(started)

    def _wait_for_media(self, started: float) -> None:
        """Until every subscriber has received video (and, for the SFU, every consumer forwards)."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            reasons = []
            if self.target == "sfu":
                server = self.server.call("snapshot", timeout=30)
                if server["participants"] != self.k + 1:
                    reasons.append(f"{server['participants'] - 1} of {self.k} subscribers in the SFU")
                idle = [n for n, s in server["subscribers"].items() if s["active_consumers"] < 2]
                if idle:
                    reasons.append(f"{len(idle)} subscribers without 2 active consumers")
            rows = self._subscriber_rows(snapshot_all([self.real, self.sinks]))
            silent = [n for n in self.names if rows.get(n, {}).get("video_frames", 0) == 0]
            if silent:
                reasons.append(f"{len(silent)} subscribers have no video yet, e.g. {silent[:3]}")
            if not reasons:
                progress(f"{self.target}: K={self.k}: all receiving after {time.monotonic() - started:.1f} s")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.target} K={self.k}: " + "; ".join(reasons))
            time.sleep(0.25)

    @staticmethod
    def _subscriber_rows(snapshots: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for snapshot in snapshots:
            rows.update(snapshot["subscribers"])
        return rows

    def measure(self, seconds: float, profile: str | None = None) -> Window:
        time.sleep(self.args.settle)  # keyframe requests answered, pacing steady
        generators = [self.publisher, self.real, self.sinks]
        if profile:
            self.server.call("profile-start")
        drops = udp_receive_buffer_errors()
        before = snapshot_all([self.server, *generators])
        time.sleep(seconds)
        after = snapshot_all([self.server, *generators])
        drops = udp_receive_buffer_errors() - drops
        if profile:
            self.server.call("profile-stop", profile)
        server0, publisher0, *subs0 = before
        server1, publisher1, *subs1 = after
        rows0, rows1 = self._subscriber_rows(subs0), self._subscriber_rows(subs1)
        wall = server1["t"] - server0["t"]
        fps: dict[str, float] = {}
        audio_pps: dict[str, float] = {}
        missing: dict[str, int] = {}
        lost = delivered = 0
        ticks_per_frame = 90000 / self.args.fps
        for name in self.names:
            a, b = rows0[name], rows1[name]
            if b["closed"] or b["state"] != "connected":
                raise RuntimeError(f"{self.target} K={self.k}: subscriber {name} dropped out: {b}")
            span = (
                (subs1[0]["t"] - subs0[0]["t"])
                if name in self.real_names
                else (subs1[1]["t"] - subs0[1]["t"])
            )
            frames = b["video_frames"] - a["video_frames"]
            delivered += b["video_packets"] + b["audio_packets"] - a["video_packets"] - a["audio_packets"]
            if "video_lost" in b:
                lost += b["video_lost"] + b["audio_lost"] - a["video_lost"] - a["audio_lost"]
            fps[name] = frames / span
            if a.get("video_timestamp") is not None and b.get("video_timestamp") is not None:
                # frames the publisher sent between the two last-received frames, by RTP timestamp
                expected = round(
                    ((b["video_timestamp"] - a["video_timestamp"]) & 0xFFFFFFFF) / ticks_per_frame
                )
                missing[name] = max(0, expected - frames)
            audio_pps[name] = (b["audio_packets"] - a["audio_packets"]) / span
        generator_cpu = sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(before[1:], after[1:], strict=True))
        window = Window(
            k=self.k,
            seconds=wall,
            server_cpu_s=server1["cpu_s"] - server0["cpu_s"],
            server_sys_s=server1["sys_s"] - server0["sys_s"],
            forwarded=server1["forwarded"] - server0["forwarded"] if "forwarded" in server1 else None,
            received=server1["received"] - server0["received"] if "received" in server1 else None,
            publisher_video_frames=publisher1["publisher"]["video_frames_sent"]
            - publisher0["publisher"]["video_frames_sent"],
            publisher_audio_frames=publisher1["publisher"]["audio_frames_sent"]
            - publisher0["publisher"]["audio_frames_sent"],
            fps=fps,
            audio_pps=audio_pps,
            frames_missing=missing,
            real_packets_lost=lost,
            real=list(self.real_names),
            generator_cpu_pct=100 * generator_cpu / wall,
            udp_receive_buffer_drops=drops,
            participants=server1.get("participants"),
            delivered=delivered,
            gc_pause_max_ms=server1.get("gc_pause_max_ms"),
            gc_pause_max_ms_run=server1.get("gc_pause_max_ms_run"),
        )
        if window.participants is not None and (
            window.participants != self.k + 1 or server0["participants"] != self.k + 1
        ):
            raise RuntimeError(f"{self.target} K={self.k}: participants changed during the window")
        return window


def _describe(window: Window, target: str) -> str:
    per_packet = window.us_per_forwarded_packet
    return (
        f"{target}: K={window.k}: server CPU {window.server_cpu_pct:.1f} %"
        + (f", {window.forwarded / window.seconds:.0f} forwarded packets/s" if window.forwarded else "")
        + (f", {per_packet:.1f} us/packet" if per_packet else "")
        + f", video fps min {min(window.fps.values()):.1f} (source {window.source_fps:.1f})"
        + f", frames missing {sum(window.frames_missing.values())}"
        + f", generator CPU {window.generator_cpu_pct:.0f} %"
    )


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def report(
    args: argparse.Namespace, sfu: list[Window], relay: Window | None, clip: dict[str, Any]
) -> dict[str, Any]:
    by_k = {w.k: w for w in sfu}
    first = sfu[0]
    goal_k = args.relay_k

    def fps_ok(window: Window) -> bool:
        # Every frame delivered to every subscriber, at the source's pace: the arrival rate may differ
        # from the source's by up to a frame per second because of latency at the window's edges on a
        # loaded machine (frames_missing tells loss from that).
        return (
            len(window.frames_missing) == window.k
            and sum(window.frames_missing.values()) == 0
            and min(window.fps.values()) >= window.source_fps - 1
        )

    us = {str(w.k): round(w.us_per_forwarded_packet, 2) for w in sfu if w.us_per_forwarded_packet}
    slope = _slope(
        [w.forwarded / w.seconds for w in sfu if w.forwarded],
        [w.server_cpu_s / w.seconds for w in sfu if w.forwarded],
    )
    k20 = by_k.get(goal_k)
    ratio = per_frame_ratio = None
    if relay is not None and k20 is not None:
        ratio = relay.server_cpu_pct / k20.server_cpu_pct
        # The relay wants more CPU than 2 shared cores have, so the CPU it gets (and the ratio above)
        # depends on the neighbours' load; per video frame delivered it does not.
        per_frame_ratio = (relay.server_cpu_pct / sum(relay.fps.values())) / (
            k20.server_cpu_pct / sum(k20.fps.values())
        )
    figures_gc = max((w.gc_pause_max_ms for w in sfu if w.gc_pause_max_ms is not None), default=None)
    figures: dict[str, Any] = {
        "us_per_forwarded_packet": us,
        "relay_cpu_ratio_k20": None if ratio is None else round(ratio, 2),
        "relay_cpu_per_delivered_frame_ratio_k20": None
        if per_frame_ratio is None
        else round(per_frame_ratio, 1),
        "fps_min_k20": None if k20 is None else round(min(k20.fps.values()), 2),
        "fps_min_k20_real": None if k20 is None else round(min(k20.fps[n] for n in k20.real), 2),
        "frames_missing_k20": None if k20 is None else sum(k20.frames_missing.values()),
        "source_fps": args.fps,
        "source_fps_measured": round(first.source_fps, 2),
        "us_per_extra_forwarded_packet": None if slope is None else round(slope * 1e6, 2),
        "gc_pause_max_ms": figures_gc,
        "gc_pause_max_ms_run": sfu[-1].gc_pause_max_ms_run,
        "packet_count_source": "SFU consumers' packets_forwarded (socket sends that succeeded)",
        "publisher_packets_per_s": round(first.received / first.seconds, 1) if first.received else None,
        "publisher_video_frames_per_s": round(first.source_fps, 2),
        "publisher_audio_packets_per_s": round(first.publisher_audio_frames / first.seconds, 1),
        "per_k": {
            str(w.k): {
                "sfu_cpu_pct": round(w.server_cpu_pct, 1),
                "sfu_kernel_cpu_pct": round(100 * w.server_sys_s / w.seconds, 1),
                "forwarded_packets_per_s": round((w.forwarded or 0) / w.seconds, 1),
                "received_packets_per_s": round((w.received or 0) / w.seconds, 1),
                "real_subscribers": len(w.real),
                "sink_subscribers": w.k - len(w.real),
                "fps_min": round(min(w.fps.values()), 2),
                "fps_min_real": round(min(w.fps[n] for n in w.real), 2),
                "frames_missing": sum(w.frames_missing.values()),
                "frames_missing_real": sum(w.frames_missing.get(n, 0) for n in w.real),
                "udp_receive_buffer_drops_machine_wide": w.udp_receive_buffer_drops,
                "frames_checked_subscribers": len(w.frames_missing),
                "real_packets_lost": w.real_packets_lost,
                "audio_packets_per_s_min": round(min(w.audio_pps.values()), 1),
                "generator_cpu_pct": round(w.generator_cpu_pct, 1),
                "gc_pause_max_ms": w.gc_pause_max_ms,
                "window_s": round(w.seconds, 2),
            }
            for w in sfu
        },
        "relay": None
        if relay is None
        else {
            "k": relay.k,
            "cpu_pct": round(relay.server_cpu_pct, 1),
            "kernel_cpu_pct": round(100 * relay.server_sys_s / relay.seconds, 1),
            "fps_min": round(min(relay.fps.values()), 2),
            "fps_min_real": round(min(relay.fps[n] for n in relay.real), 2),
            "fps_mean": round(sum(relay.fps.values()) / len(relay.fps), 2),
            "frames_missing": sum(relay.frames_missing.values()),
            "source_fps_measured": round(relay.source_fps, 2),
            "real_subscribers": len(relay.real),
            "sink_subscribers": relay.k - len(relay.real),
            "generator_cpu_pct": round(relay.generator_cpu_pct, 1),
            "window_s": round(relay.seconds, 2),
        },
        "video": {
            "codec": "VP8",
            "width": args.width,
            "height": args.height,
            "fps": args.fps,
            "bitrate": args.bitrate,
            "clip_bitrate": clip.get("video_clip_bitrate"),
        },
        "audio": {"codec": "opus", "frame_ms": args.audio_ms},
        "window_s": args.window,
        "real_subscribers": args.real,
        "event_loop": "uvloop" if args.uvloop else "asyncio",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "goals": {
            "us_per_forwarded_packet_k50_le_40": None
            if "50" not in us
            else us["50"] <= GOAL_US_PER_PACKET_K50,
            "relay_cpu_ratio_k20_ge_10": None if ratio is None else ratio >= GOAL_RELAY_RATIO_K20,
            "fps_min_k20_equals_source": None if k20 is None else fps_ok(k20),
            "gc_pause_max_ms_le_10": None if figures_gc is None else figures_gc <= GOAL_GC_PAUSE_MS,
        },
    }
    return figures


def print_table(figures: dict[str, Any]) -> None:
    print(
        f"1 publisher (VP8 {figures['video']['width']}x{figures['video']['height']} @ "
        f"{figures['video']['fps']} fps ~{(figures['video']['clip_bitrate'] or 0) // 1000} kbit/s + Opus "
        f"{figures['audio']['frame_ms']} ms, {figures['publisher_packets_per_s']} packets/s) -> K subscribers"
    )
    print(f"{'K':>4} {'real':>4} {'sinks':>5} {'SFU CPU %':>9} {'fwd pkt/s':>9} {'us/pkt':>7} {'fps min':>7}")
    for k, row in figures["per_k"].items():
        print(
            f"{k:>4} {row['real_subscribers']:>4} {row['sink_subscribers']:>5} {row['sfu_cpu_pct']:>9} "
            f"{row['forwarded_packets_per_s']:>9} {figures['us_per_forwarded_packet'].get(k, '-'):>7} "
            f"{row['fps_min']:>7}"
        )
    relay = figures["relay"]
    if relay:
        print(
            f"MediaRelay K={relay['k']}: CPU {relay['cpu_pct']} %, fps min {relay['fps_min']} "
            f"(mean {relay['fps_mean']}); ratio to this SFU: {figures['relay_cpu_ratio_k20']}"
        )
    print(f"marginal cost per extra forwarded packet: {figures['us_per_extra_forwarded_packet']} us")
    print(f"goals: {figures['goals']}; load average {figures['load_average']}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object, last line")
    parser.add_argument(
        "--k", default=",".join(map(str, DEFAULT_KS)), help="subscriber counts, ascending (default 1,5,20,50)"
    )
    parser.add_argument("--window", type=float, default=8.0, help="measurement window per K, s (default 8)")
    parser.add_argument("--settle", type=float, default=1.5, help="wait after all receive, s (default 1.5)")
    parser.add_argument("--real", type=int, default=3, help="real (counting) subscribers (default 3)")
    parser.add_argument("--relay-k", type=int, default=20, help="subscribers for the MediaRelay baseline")
    parser.add_argument("--no-relay", action="store_true", help="skip the MediaRelay baseline")
    parser.add_argument("--width", type=int, default=DEFAULT_VIDEO["width"])
    parser.add_argument("--height", type=int, default=DEFAULT_VIDEO["height"])
    parser.add_argument("--fps", type=int, default=DEFAULT_VIDEO["fps"])
    parser.add_argument("--bitrate", type=int, default=DEFAULT_VIDEO["bitrate"])
    parser.add_argument("--audio-ms", type=int, default=20, help="Opus packet duration (default 20)")
    parser.add_argument(
        "--vs-janus",
        action="store_true",
        help="also run Debian's Janus VideoRoom with the same clip and K (in a LAN namespace of its own: "
        "needs root); without Janus, say so and report the project alone",
    )
    add_uvloop_argument(parser)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="after the largest K, cProfile the SFU during one more window (not in the figures)",
    )
    args = parser.parse_args(argv)
    try:
        args.ks = sorted({int(k) for k in args.k.split(",")})
    except ValueError:
        parser.error(f"--k must be comma-separated integers, got {args.k!r}")
    if not args.ks or args.ks[0] < 1 or args.ks[-1] > 60:
        parser.error("keep it bounded: K within 1..60")
    if not 1 <= args.window <= 20 or not 0 <= args.settle <= 10:
        parser.error("keep it bounded: --window within 1..20 s, --settle within 0..10 s")
    if args.real < 1:
        parser.error("--real must be at least 1: real subscribers verify delivery")
    if not 1 <= args.relay_k <= 30:
        parser.error("--relay-k within 1..30")
    return args


def in_lan_namespace(argv: Sequence[str]) -> int:
    """Run this bench again, with ``argv``, in a LAN namespace of its own; its exit status."""
    from sfu_geofence.testing.netns import Namespace, namespace_command
    from sfu_geofence.testing.process import terminate

    progress("--vs-janus: running again in a LAN namespace of its own (Janus gathers on no loopback)")
    command = namespace_command([sys.executable, "-m", "bench.forwarding", *argv], Namespace.LAN)
    process = subprocess.Popen(command)
    try:
        return process.wait()
    finally:
        terminate(process)  # a no-op once it has ended; --kill-child then ends everything inside


def janus_skipped(args: argparse.Namespace, argv: Sequence[str]) -> tuple[str | None, int | None]:
    """With --vs-janus: why Janus is left out (None: it runs here), or the exit status of a run of this
    bench in a LAN namespace (the caller returns it)."""
    from sfu_geofence.testing.janus import JANUS_MISSING, find_janus
    from sfu_geofence.testing.netns import Namespace, current_namespace

    if not args.vs_janus:
        return None, None
    if current_namespace() is Namespace.LAN:
        return (JANUS_MISSING if find_janus() is None else None), None
    from bench.vs_janus import janus_unavailable

    why = janus_unavailable()
    if why is None:
        return None, in_lan_namespace(argv)
    progress(f"--vs-janus: {why}: reporting the project alone")
    return why, None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ[ENV_UVLOOP] = "1" if args.uvloop else "0"  # read by the child processes
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # run the finally blocks
    janus_skip, status = janus_skipped(args, argv)
    if status is not None:
        return status
    from sfu_geofence.netguard import loopback_only

    started = time.monotonic()
    sfu_windows: list[Window] = []
    relay_window: Window | None = None
    with loopback_only():
        run = Run("sfu", args)
        try:
            run.start()
            clip = run.publish()
            for k in args.ks:
                run.grow(k)
                window = run.measure(args.window)
                sfu_windows.append(window)
                progress(_describe(window, "sfu"))
            if args.profile:  # an extra window: cProfile inflates the CPU it measures several times
                run.measure(args.window, profile=args.profile)
                progress(f"sfu: K={args.ks[-1]}: profile of one more window written to {args.profile}")
        finally:
            run.close()
        if not args.no_relay:
            relay = Run("relay", args)
            try:
                relay.start()
                relay.publish()
                relay.grow(args.relay_k)
                relay_window = relay.measure(args.window)
                progress(_describe(relay_window, "relay"))
            finally:
                relay.close()
        janus_windows: list[Window] = []
        if args.vs_janus and janus_skip is None:
            from bench.vs_janus import janus_run

            with janus_run(args) as janus:
                janus.publish()
                for k in args.ks:
                    janus.grow(k)
                    window = janus.measure(args.window)
                    janus_windows.append(window)
                    progress(_describe(window, "janus"))
    if args.relay_k not in args.ks:
        progress(f"note: K={args.relay_k} is not among --k, so there is no ratio or fps_min_k20")
    figures = report(args, sfu_windows, relay_window, clip)
    if args.vs_janus:
        from bench.vs_janus import janus_figures

        if janus_skip is None:
            figures.update(janus_figures(sfu_windows, janus_windows))
            ratio_50 = figures["vs_janus_ratio"].get("50")
            figures["goals"]["vs_janus_ratio_k50_le_0_5"] = None if ratio_50 is None else ratio_50 <= 0.5
        else:
            figures.update({"vs_janus_ratio": None, "janus": {"skipped": janus_skip}})
    figures["bench_seconds"] = round(time.monotonic() - started, 1)
    progress(f"done in {figures['bench_seconds']} s")
    if not args.json:
        print_table(figures)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
