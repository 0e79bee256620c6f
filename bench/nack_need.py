"""What an honest subscriber asks to have sent again: NACKs of an aiortc receiver that loses some packets.

Sizes the SFU's retransmission caps (``sfu_geofence/sfu/retransmission.py``) on a measurement, not a
guess. A publisher (the pre-encoded VP8 clip, no encoder) sends straight to a stock aiortc receiver on
loopback (its NACK generator is the subscriber side of the SFU's retransmissions); the receiver drops
``--loss`` of its incoming RTP packets at random, after SRTP, before its NACK generator sees them. The
publisher's sender counts every NACK that comes back.

Figures (last line with ``--json``): ``packets_per_s_both_tracks`` (RTP sent, audio and video),
``nacks_per_s`` (NACK packets for the video), ``numbers_per_s`` (sequence numbers named, repeats
included), ``max_numbers_per_nack``, ``max_numbers_in_1s`` (the busiest second) and
``max_distinct_in_1s``.

    python -m bench.nack_need [--json] [--loss 0.05] [--duration 20]    (bounded: ~duration + 15 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtp import RTCP_RTPFB_NACK, AnyRtcpPacket, RtcpRtpfbPacket

from sfu_geofence.netguard import loopback_only
from sfu_geofence.synthetic.media import AudioClipParams, OpusTrack, VideoClipParams, Vp8Track, publish
from sfu_geofence.testing.peers import connect_pair


def progress(message: str) -> None:
    print(f"[nack_need {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def measure(loss: float, duration: float, video: VideoClipParams, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    tracks = [Vp8Track(video), OpusTrack(AudioClipParams())]
    nacks: list[tuple[float, list[int]]] = []
    sent = Counter[str]()

    def offerer(pc: RTCPeerConnection) -> None:
        for track in tracks:
            publish(pc, track)

    def answerer(pc: RTCPeerConnection) -> None:
        @pc.on("track")
        def on_track(track: Any) -> None:
            pass  # the stock receiver decodes; nobody reads the frames

    publisher, subscriber = await connect_pair(
        offerer, answerer, offerer_bind="127.80.0.1", answerer_bind="127.80.0.2"
    )
    try:
        video_sender = next(t.sender for t in publisher.getTransceivers() if t.sender.track is tracks[0])
        handle = video_sender._handle_rtcp_packet

        async def count_nacks(packet: AnyRtcpPacket) -> None:
            if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                nacks.append((time.monotonic(), list(packet.lost)))
            await handle(packet)

        video_sender._handle_rtcp_packet = count_nacks  # type: ignore[method-assign]
        send = video_sender.transport._send_rtp

        async def count_sent(data: bytes) -> None:
            sent["rtp" if data[1] & 0x7F not in range(72, 77) else "rtcp"] += 1
            await send(data)

        video_sender.transport._send_rtp = count_sent  # type: ignore[method-assign]
        transport = subscriber.getTransceivers()[0].receiver.transport
        receive = transport._handle_rtp_data

        async def lossy(data: bytes, arrival_time_ms: int) -> None:
            if rng.random() >= loss:
                await receive(data, arrival_time_ms)

        transport._handle_rtp_data = lossy  # type: ignore[method-assign]
        progress(f"measuring {duration:g} s at {loss:.1%} loss")
        start = time.monotonic()
        await asyncio.sleep(duration)
        elapsed = time.monotonic() - start
    finally:
        await publisher.close()
        await subscriber.close()
    per_second = Counter[int]()
    distinct_per_second: dict[int, set[int]] = {}
    for when, lost in nacks:
        second = int(when - start)
        per_second[second] += len(lost)
        distinct_per_second.setdefault(second, set()).update(lost)
    numbers = sum(len(lost) for _, lost in nacks)
    return {
        "loss": loss,
        "video": {"width": video.width, "height": video.height, "fps": video.fps, "bitrate": video.bitrate},
        "seconds": round(elapsed, 2),
        "packets_per_s_both_tracks": round(sent["rtp"] / elapsed, 1),
        "nacks_per_s": round(len(nacks) / elapsed, 2),
        "numbers_per_s": round(numbers / elapsed, 2),
        "max_numbers_per_nack": max((len(lost) for _, lost in nacks), default=0),
        "max_numbers_in_1s": max(per_second.values(), default=0),
        "max_distinct_in_1s": max((len(s) for s in distinct_per_second.values()), default=0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on the last line")
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=1_450_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    video = VideoClipParams(width=args.width, height=args.height, fps=args.fps, bitrate=args.bitrate)
    with loopback_only():
        figures = asyncio.run(measure(args.loss, args.duration, video, args.seed))
    print(json.dumps(figures) if args.json else json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
