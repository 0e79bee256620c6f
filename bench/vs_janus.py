"""Janus's VideoRoom in the forwarding bench's run (``python -m bench.forwarding --vs-janus``, issue 12).

The same publisher clip (VP8 + Opus, pre-encoded: nothing is encoded while measuring) and the same K
subscribers (``--real`` counting ones, the others cheap sinks, in the same generator processes) as the
project's run go through Debian's Janus 1.x VideoRoom (``sfu_geofence.testing.janus``: VideoRoom and
HTTP only, by PID). Janus skips loopback interfaces when it gathers, so the whole bench re-executes
itself in a LAN namespace of its own (:mod:`sfu_geofence.testing.netns`: ``lo`` and a dummy
interface), where Janus and its peers gather on the dummy's address and nothing leaves the namespace.

What is compared: CPU per packet *delivered* to the subscribers (RTP packets the real subscribers'
meters and the sinks counted), for both servers alike: Janus's CPU is its process's utime + stime
(every thread) from ``/proc/<pid>/stat``, the project's SFU's its own process time, over the same
kind of window. ``vs_janus_ratio[K]`` = project / Janus (below 1: the project spends less).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.forwarding import (
    CONNECT_TIMEOUT,
    ROOM,
    VP8_RTPMAP,
    Run,
    SinkCounter,
    Window,
    _connected,
    _PeersState,
    _Subscriber,
    drop_incoming_media,
    progress,
    publisher_tracks,
)

JANUS_ROOM = 4242
JANUS_ROOM_SECRET = "bench"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def janus_unavailable() -> str | None:
    """Why Janus cannot run here (missing, or no LAN namespace can be made), or None."""
    from sfu_geofence.testing.janus import JANUS_MISSING, find_janus
    from sfu_geofence.testing.netns import Namespace, namespace_unavailable

    if find_janus() is None:
        return JANUS_MISSING
    return namespace_unavailable(Namespace.LAN)


# --- inside a generator process ---------------------------------------------------------------------


@dataclass
class _Received:
    """What the forwarding bench's snapshot reads of one received track (as of a SyntheticPeer's)."""

    kind: str
    meter: Any


@dataclass
class JanusPeer:
    """An aiortc peer in Janus's VideoRoom, shaped as the bench's snapshot reads a SyntheticPeer."""

    name: str
    pc: Any
    meter: Any = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    @property
    def received(self) -> dict[int, _Received]:
        meters = [] if self.meter is None else self.meter.tracks
        return {index: _Received(m.kind, m) for index, m in enumerate(meters)}

    async def close(self) -> None:
        self.closed.set()
        await self.pc.close()


@dataclass
class JanusClient:
    """A generator process's one Janus session (made by its first janus command), kept in its state."""

    http: Any
    session: Any

    @classmethod
    async def of(cls, state: _PeersState, api_url: str) -> Any:
        """The session of ``state``'s client, created on first use."""
        import aiohttp

        from sfu_geofence.janus import JanusSession

        if state.janus is None:
            http = aiohttp.ClientSession()
            state.janus = cls(http, await JanusSession.create(http, api_url))
        return state.janus.session

    async def close(self) -> None:
        """Leave Janus: destroy the session (its handles go with it), close the HTTP client."""
        with contextlib.suppress(Exception):
            await self.session.destroy()
        await self.http.close()


def _policy() -> Any:
    from sfu_geofence.rtc.ice import IcePolicy
    from sfu_geofence.testing.netns import LAN_IPV4, LAN_NETWORKS

    return IcePolicy(bind=(LAN_IPV4,), allowed_remote=LAN_NETWORKS)


async def janus_publish(
    state: _PeersState, api_url: str, _address: str, video: dict[str, Any], audio: dict[str, Any]
) -> dict[str, Any]:
    """Create the room and publish the bench's clip in it; the feed id is what subscribers name."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from sfu_geofence.janus import VideoRoom
    from sfu_geofence.rtc.ice import use_policy
    from sfu_geofence.synthetic.media import publish

    bitrate = publisher_tracks(state, video, audio)
    rooms = VideoRoom(await JanusClient.of(state, api_url))
    await rooms.create_room(JANUS_ROOM, secret=JANUS_ROOM_SECRET, publishers=1, description=ROOM)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in state.tracks:
        publish(pc, track)
    state.publisher = JanusPeer("publisher", pc)
    with use_policy(_policy()):
        publisher = await rooms.publish(JANUS_ROOM, pc, display="publisher")
    await _connected([state.publisher])
    return {"participant": publisher.participant_id, "video_clip_bitrate": bitrate}


async def janus_subscribe(
    state: _PeersState, api_url: str, feed: int, joining: list[tuple[str, str, bool]]
) -> int:
    """Subscribe (name, address unused: all gather on the dummy, sink?) to ``feed``, ten at a time."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from sfu_geofence.janus import VideoRoom
    from sfu_geofence.rtc.ice import use_policy
    from sfu_geofence.synthetic.meter import ReceiveMeter

    rooms = VideoRoom(await JanusClient.of(state, api_url))

    async def one(name: str, _address: str, sink: bool) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peer = JanusPeer(name, pc, None if sink else ReceiveMeter())
        if peer.meter is not None:
            peer.meter.watch(pc)
        state.subscribers[name] = subscriber = _Subscriber(peer, SinkCounter() if sink else None)
        with use_policy(_policy()):
            await rooms.subscribe(JANUS_ROOM, (feed,), pc)
        await _connected([peer])
        subscriber.video_payload_types = frozenset(
            int(pt) for pt in VP8_RTPMAP.findall(pc.localDescription.sdp)
        )
        if subscriber.sink is not None:
            drop_incoming_media(pc, subscriber.sink)

    for start in range(0, len(joining), 10):
        await asyncio.wait_for(
            asyncio.gather(*(one(*args) for args in joining[start : start + 10])), CONNECT_TIMEOUT
        )
    return len(state.subscribers)


# --- in the parent -----------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU seconds of process ``pid``, every thread, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5), counted from 1
    return (utime + stime) / _CLOCK_TICKS, stime / _CLOCK_TICKS


def proc_pid(pid: int) -> int:
    """The number ``/proc`` knows process ``pid`` (of this PID namespace) by.

    The namespace that ``unshare --pid`` made has no ``/proc`` of its own: the machine's is seen, where
    its processes have other numbers. Found by the ``NSpid`` line of their status (innermost last),
    among the processes of this PID namespace.
    """
    own = os.stat("/proc/self/ns/pid").st_ino
    if len(_nspids("self")) < 2:
        return pid  # /proc is this namespace's
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if _nspids(entry)[-1] == pid and os.stat(f"/proc/{entry}/ns/pid").st_ino == own:
                return int(entry)
    raise ProcessLookupError(f"process {pid} of this PID namespace is not in /proc")


def _nspids(entry: str) -> list[int]:
    with open(f"/proc/{entry}/status") as status:
        for line in status:
            if line.startswith("NSpid:"):
                return [int(n) for n in line.split()[1:]]
    return []


class JanusProcess:
    """Stands where the bench's server child stands: answers ``snapshot`` with Janus's CPU from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = proc_pid(pid)
        self.name = f"janus {pid}"
        self._pending: list[str] = []

    def send(self, *command: Any) -> None:
        self._pending.append(command[0])

    def result(self, timeout: float = 0) -> Any:
        command = self._pending.pop(0)
        if command != "snapshot":
            return None
        cpu, system = process_cpu_s(self.pid)
        return {"t": time.monotonic(), "cpu_s": cpu, "sys_s": system}

    def call(self, *command: Any, timeout: float = 0) -> Any:
        self.send(*command)
        return self.result(timeout)

    def request_stop(self) -> None:
        """Janus is stopped by the harness that started it."""

    def stop(self, deadline: float) -> None:
        """(See :meth:`request_stop`.)"""


class JanusRun(Run):
    """The bench's run with Janus's VideoRoom as the server (started here, stopped by PID)."""

    publish_command = "janus-publish"

    def __init__(self, args: Any, stack: contextlib.ExitStack) -> None:
        super().__init__("janus", args)
        self._stack = stack
        self.feed = 0

    def _start_server(self) -> Any:
        from sfu_geofence.testing.janus import running_janus

        directory = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-janus-")))
        server = self._stack.enter_context(running_janus(directory))
        self.url = server.api_url
        progress(f"janus: process {server.pid}, API at {server.api_url}")
        return JanusProcess(server.pid)

    def publish(self) -> dict[str, Any]:
        info = super().publish()
        self.feed = int(info["participant"])
        return info

    def subscribe_command(self, batch: list[tuple[str, str, bool]]) -> tuple[Any, ...]:
        return ("janus-subscribe", self.url, self.feed, batch)


@contextlib.contextmanager
def janus_run(args: Any) -> Iterator[JanusRun]:
    """A started :class:`JanusRun`; its generators and then Janus are stopped afterwards."""
    with contextlib.ExitStack() as stack:
        run = JanusRun(args, stack)
        try:
            run.start()
            yield run
        finally:
            run.close()


def janus_figures(project: list[Window], janus: list[Window]) -> dict[str, Any]:
    """Both servers' CPU per delivered packet per K, and their ratio (project / Janus)."""

    def per_delivered(window: Window) -> float | None:
        return None if not window.delivered else window.server_cpu_s * 1e6 / window.delivered

    project_by_k = {w.k: w for w in project}
    per_k: dict[str, Any] = {}
    ratio: dict[str, float | None] = {}
    for window in janus:
        ours = project_by_k.get(window.k)
        theirs_us, ours_us = per_delivered(window), None if ours is None else per_delivered(ours)
        ratio[str(window.k)] = None if not (theirs_us and ours_us) else round(ours_us / theirs_us, 3)
        per_k[str(window.k)] = {
            "janus_cpu_pct": round(window.server_cpu_pct, 1),
            "janus_kernel_cpu_pct": round(100 * window.server_sys_s / window.seconds, 1),
            "janus_us_per_delivered_packet": None if theirs_us is None else round(theirs_us, 2),
            "project_us_per_delivered_packet": None if ours_us is None else round(ours_us, 2),
            "janus_delivered_packets_per_s": round((window.delivered or 0) / window.seconds, 1),
            "project_delivered_packets_per_s": None
            if ours is None
            else round((ours.delivered or 0) / ours.seconds, 1),
            "janus_fps_min": round(min(window.fps.values()), 2),
            "janus_frames_missing": sum(window.frames_missing.values()),
            "generator_cpu_pct": round(window.generator_cpu_pct, 1),
            "window_s": round(window.seconds, 2),
        }
    return {
        "vs_janus_ratio": ratio,
        "janus": {
            "per_k": per_k,
            "server": "Debian janus, VideoRoom (HTTP API, no other plugin), in a LAN namespace",
            "cpu_source": "/proc/<janus pid>/stat utime + stime, every thread",
            "packet_count_source": "RTP packets counted by the subscribers (real meters and sinks)",
        },
    }
