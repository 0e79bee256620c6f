"""What a synthetic peer costs: N publishers in one process, N metered subscribers in another.

Each publisher sends the shared pre-encoded VP8 + Opus clips to one subscriber over loopback (plain
aiortc, no SFU); each subscriber meters what it receives without decoding. Both processes measure their
own CPU time over the same wall-clock window, so the figures say what one *sent* stream (video + audio)
and one *received* stream cost, which is what the load tester needs to choose rates and peers per
worker process. The last line printed is a JSON object.

    python -m bench.synthetic_peers --peers 8 --seconds 10   (from the repository root)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu_geofence import eventloop
from sfu_geofence.rtc.ice import IcePolicy, use_policy
from sfu_geofence.synthetic.media import (
    AudioClipParams,
    OpusTrack,
    VideoClipParams,
    Vp8Track,
    encode_opus_clip,
    encode_vp8_clip,
)
from sfu_geofence.synthetic.meter import ReceiveMeter
from sfu_geofence.testing.wait import eventually


def _address(side: int, index: int) -> str:
    return f"127.{90 + side}.{index // 250}.{index % 250 + 1}"


async def _all_connected(pcs: list[RTCPeerConnection], within: float = 60) -> None:
    def check() -> str | None:
        states = [pc.connectionState for pc in pcs]
        pending = sum(state != "connected" for state in states)
        return None if pending == 0 else f"{pending} of {len(states)} not connected"

    await eventually(check, within=within, interval=0.1)


class _LoopLag:
    """How late a 10 ms timer fires: a stalled event loop (or a starved process) delays media too.

    The CPU time the process used during the worst lag tells the two apart: close to the lag means
    this process was busy (its own work blocked the loop), close to zero means it was not scheduled.
    """

    def __init__(self) -> None:
        self.lags: list[tuple[float, float]] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, cpu = loop.time() + 0.01, time.process_time()
            await asyncio.sleep(0.01)
            self.lags.append((loop.time() - due, time.process_time() - cpu))

    def stop(self) -> dict[str, float]:
        self._task.cancel()
        lags = sorted(self.lags) or [(0.0, 0.0)]
        return {
            "max_ms": 1000 * lags[-1][0],
            "max_cpu_ms": 1000 * lags[-1][1],
            "p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))][0],
        }


async def _recv(conn: Connection) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def _publishers(
    conn: Connection, peers: int, seconds: float, video: VideoClipParams, audio: AudioClipParams
) -> None:
    encode_vp8_clip(video)  # encode before anything is timed
    encode_opus_clip(audio)
    pcs: list[RTCPeerConnection] = []
    tracks: list[Vp8Track] = []
    try:
        for index in range(peers):
            with use_policy(IcePolicy(bind=(_address(0, index),))):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                track = Vp8Track(video)
                pc.addTrack(track)
                pc.addTrack(OpusTrack(audio))
                await pc.setLocalDescription(await pc.createOffer())
            pcs.append(pc)
            tracks.append(track)
        conn.send([pc.localDescription.sdp for pc in pcs])
        answers: list[str] = await _recv(conn)
        for pc, sdp in zip(pcs, answers, strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await _all_connected(pcs)
        conn.send("connected")
        await _recv(conn)  # "start"
        cpu, wall, frames = time.process_time(), time.monotonic(), sum(t.frames_sent for t in tracks)
        lag = _LoopLag()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        frames = sum(t.frames_sent for t in tracks) - frames
        conn.send({"cpu_s": cpu, "wall_s": wall, "video_frames_sent": frames, "loop_lag": lag.stop()})
        await _recv(conn)  # "done"
    finally:
        for pc in pcs:
            await pc.close()


def _publisher_process(
    conn: Connection, peers: int, seconds: float, video: dict[str, Any], audio: dict[str, Any]
) -> None:
    eventloop.run(
        _publishers(conn, peers, seconds, VideoClipParams(**video), AudioClipParams(**audio)),
        use_uvloop=eventloop.uvloop_enabled(),
    )


async def _subscribers(conn: Connection, peers: int, seconds: float) -> dict[str, Any]:
    offers: list[str] = await _recv(conn)
    meter = ReceiveMeter()
    pcs: list[RTCPeerConnection] = []
    try:
        for index, sdp in enumerate(offers):
            with use_policy(IcePolicy(bind=(_address(1, index),))):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                meter.watch(pc, lambda t, index=index: f"peer{index}")
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
            pcs.append(pc)
        conn.send([pc.localDescription.sdp for pc in pcs])
        await _all_connected(pcs)
        assert await _recv(conn) == "connected"
        await asyncio.sleep(1.0)  # let both sides settle before the window
        conn.send("start")
        cpu, start = time.process_time(), time.monotonic()
        lag = _LoopLag()
        sender: dict[str, Any] = await _recv(conn)
        cpu, end = time.process_time() - cpu, time.monotonic()
        receiver_lag = lag.stop()
        conn.send("done")
    finally:
        for pc in pcs:
            await pc.close()

    window = end - start
    by_kind: dict[str, list[Any]] = {"video": [], "audio": []}
    for track in meter.tracks:
        frames = track.frames_in(start, end)
        gaps = track.gap_stats(start, end)
        rates = [r for r in track.rates() if start <= r.start and r.start + r.duration <= end]
        packets = sum(r.packets for r in rates) / (len(rates) * track.bucket_s)
        by_kind[track.kind].append((frames / window, gaps.p99_ms, gaps.max_ms, track.lost, packets))
    summary: dict[str, Any] = {
        "receiver_cpu_s": cpu,
        "receiver_window_s": window,
        "sender_cpu_s": sender["cpu_s"],
        "sender_window_s": sender["wall_s"],
        "video_frames_sent_per_s": sender["video_frames_sent"] / sender["wall_s"] / peers,
        "sender_loop_lag_max_ms": sender["loop_lag"]["max_ms"],
        "sender_loop_lag_p99_ms": sender["loop_lag"]["p99_ms"],
        "sender_loop_lag_max_cpu_ms": sender["loop_lag"]["max_cpu_ms"],
        "receiver_loop_lag_max_ms": receiver_lag["max_ms"],
        "receiver_loop_lag_p99_ms": receiver_lag["p99_ms"],
        "receiver_loop_lag_max_cpu_ms": receiver_lag["max_cpu_ms"],
    }
    for kind, rows in by_kind.items():
        summary[f"{kind}_received_fps_mean"] = statistics.fmean(r[0] for r in rows)
        summary[f"{kind}_received_fps_min"] = min(r[0] for r in rows)
        summary[f"{kind}_gap_p99_ms_max"] = max(r[1] for r in rows)
        summary[f"{kind}_gap_max_ms"] = max(r[2] for r in rows)
        summary[f"{kind}_lost"] = sum(r[3] for r in rows)
        summary[f"{kind}_packets_per_s_mean"] = statistics.fmean(r[4] for r in rows)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=VideoClipParams.width)
    parser.add_argument("--height", type=int, default=VideoClipParams.height)
    parser.add_argument("--fps", type=int, default=VideoClipParams.fps)
    parser.add_argument("--bitrate", type=int, default=VideoClipParams.bitrate)
    parser.add_argument("--audio-ms", type=int, default=AudioClipParams.frame_ms, help="Opus packet duration")
    eventloop.add_uvloop_argument(parser)
    args = parser.parse_args()
    os.environ[eventloop.ENV_UVLOOP] = "1" if args.uvloop else "0"  # for the publisher process
    if not 1 <= args.peers <= 200 or not 1 <= args.seconds <= 20:
        parser.error("keep it light: 1..200 peers, 1..20 seconds")
    video = VideoClipParams(width=args.width, height=args.height, fps=args.fps, bitrate=args.bitrate)
    audio = AudioClipParams(frame_ms=args.audio_ms)

    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    publisher = context.Process(
        target=_publisher_process,
        args=(there, args.peers, args.seconds, asdict(video), asdict(audio)),
        daemon=True,
    )
    publisher.start()
    try:
        result = eventloop.run(_subscribers(here, args.peers, args.seconds), use_uvloop=args.uvloop)
    finally:
        publisher.join(timeout=30)
        if publisher.is_alive():
            publisher.terminate()

    peers = args.peers
    sender_pct = 100 * result["sender_cpu_s"] / result["sender_window_s"]
    receiver_pct = 100 * result["receiver_cpu_s"] / result["receiver_window_s"]
    report = {
        "peers": peers,
        "seconds": round(result["receiver_window_s"], 2),
        "video": asdict(video),
        "audio": asdict(audio),
        "video_clip_bitrate": round(encode_vp8_clip(video).bitrate),
        "audio_clip_bitrate": round(encode_opus_clip(audio).bitrate),
        "sender_process_cpu_pct": round(sender_pct, 1),
        "cpu_pct_per_sent_stream": round(sender_pct / peers, 2),
        "receiver_process_cpu_pct": round(receiver_pct, 1),
        "cpu_pct_per_received_stream": round(receiver_pct / peers, 2),
        **{k: round(v, 2) for k, v in result.items() if not k.endswith("_s")},
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(f"{peers} publishers -> {peers} metered subscribers, {report['seconds']} s on loopback")
    print(
        f"  sending:   {sender_pct:.1f} % of a core, {report['cpu_pct_per_sent_stream']} % per stream "
        f"(VP8 {video.width}x{video.height}@{video.fps} "
        f"~{report['video_clip_bitrate'] // 1000} kbit/s + Opus)"
    )
    print(
        f"  receiving: {receiver_pct:.1f} % of a core, {report['cpu_pct_per_received_stream']} % per stream"
    )
    print(
        f"  received video {report['video_received_fps_mean']} fps (min {report['video_received_fps_min']}), "
        f"gap p99 <= {report['video_gap_p99_ms_max']} ms, lost {report['video_lost']}; "
        f"audio {report['audio_received_fps_mean']} pkt/s, lost {report['audio_lost']}"
    )
    print(
        f"  event-loop lag max (p99, CPU used during the max): "
        f"sender {report['sender_loop_lag_max_ms']} ({report['sender_loop_lag_p99_ms']}, "
        f"{report['sender_loop_lag_max_cpu_ms']}) ms, receiver {report['receiver_loop_lag_max_ms']} "
        f"({report['receiver_loop_lag_p99_ms']}, {report['receiver_loop_lag_max_cpu_ms']}) ms; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
