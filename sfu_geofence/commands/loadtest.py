"""Load-test a geofenced SFU with synthetic participants from many countries and live policy changes.

Proves that a policy change removes exactly the restricted participants while everybody else's media
keeps flowing. Exit status 0: everybody was refused, ejected or left alone exactly as the policies
say (and, with --strict, the latency/continuity thresholds held); 1: they were not; 2: bad arguments
or the run could not be carried out. See docs/loadtest.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

from ..eventloop import add_uvloop_argument

NAME = "loadtest"
HELP = "load-test the SFU: many participants, many countries, live policy changes"

_SIZE = re.compile(r"^(\d+)x(\d+)$")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "steps (--at TIME:ACTION, times from the scenario's start, e.g. 10s, 2.5s, 500ms):\n"
        "  deny:CC[,CC..][@ROOM,..]   restrict these countries     allow:CC[,CC..][@ROOM,..]  only these\n"
        "  open[@ROOMS]               restrict nobody              monitor[@ROOMS] / enforce[@ROOMS]\n"
        "  kill:PEER|CC               SIGKILL a participant        add:CC:N[@ROOM]  N more participants\n"
        "participants are named cc-N (us-1), rooms room-1..room-R\n\n"
        "example: sfu-geofence loadtest --spawn --peers 12 --rooms 2 --countries US:6,DE:2,HK:1,CN:3 \\\n"
        "             --duration 25 --at 10s:deny:CN --json report.json\n"
        "across a cluster: sfu-geofence loadtest --spawn --nodes 3 --peers 18 --rooms 3 \\\n"
        "             --countries US:8,DE:4,HK:2,CN:4 --duration 25 --at 10s:deny:CN --json r.json\n"
        "  (a redis-server and 3 nodes on loopback; room-1 on node-1, room-2 on node-2, ...; policy steps\n"
        "  go through node-1, the others eject their own participants; the report gives per node\n"
        "  participants, CPU and forwarded packets, the node of each ejected participant, Redis's version)"
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--spawn", action="store_true", help="start a server with a generated test database")
    where.add_argument(
        "--url",
        metavar="URL",
        help="a running server on loopback (http://127.0.0.1:8080); its database must place each "
        "country's --network in that country",
    )
    parser.add_argument(
        "--janus",
        metavar="ADDRESS",
        help="--url is a geofenced Janus (sfu-geofence janus, e.g. http://127.0.0.1:8089/janus) whose "
        "VideoRoom has string_ids; participants publish and subscribe there, their media from ADDRESS "
        "(where Janus gathers; docs/janus.md)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        metavar="N",
        help="with --spawn: N nodes (serve --redis) sharing a redis-server the run starts, rooms spread over "
        "them round robin, policy steps sent through the first (default 1: one server, no Redis; needs "
        "Debian's redis-server)",
    )
    parser.add_argument(
        "--countries",
        required=True,
        metavar="CC:N,...",
        help="participants per country, e.g. US:6,DE:2,HK:1,CN:3",
    )
    parser.add_argument(
        "--peers", type=int, metavar="N", help="total participants: checked against --countries (optional)"
    )
    parser.add_argument("--rooms", type=int, default=1, metavar="R", help="rooms (default 1)")
    parser.add_argument(
        "--at", action="append", default=[], metavar="TIME:ACTION", help="a scenario step; repeatable"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds from the scenario's start (default 20)",
    )
    parser.add_argument(
        "--network",
        action="append",
        default=[],
        metavar="CC=NETWORK",
        help="loopback network of a country's participants (default: 127.10.0.0/16, 127.11.0.0/16, ... in "
        "order of appearance)",
    )
    parser.add_argument(
        "--admin-url",
        metavar="URL",
        help="the --url server's admin listener, where its operator API is (default: its host, port 8081)",
    )
    parser.add_argument(
        "--admin-token",
        help="operator token of the --url server (prefer $SFU_GEOFENCE_ADMIN_TOKEN); --spawn makes its own",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes for the participants (default 2)"
    )
    parser.add_argument("--video-size", default="320x240", metavar="WxH", help="default 320x240")
    parser.add_argument("--fps", type=int, default=15, help="video frames per second (default 15)")
    parser.add_argument("--video-kbps", type=int, default=250, help="VP8 target bitrate (default 250)")
    parser.add_argument(
        "--audio-ms", type=int, default=20, choices=(10, 20, 40, 60), help="Opus packet duration (default 20)"
    )
    parser.add_argument("--audio-kbps", type=int, default=32, help="Opus bitrate (default 32)")
    parser.add_argument(
        "--setup-timeout",
        type=float,
        default=60.0,
        help="seconds for everybody to join and receive (default 60)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="with --spawn: the server's --state-dir, kept after the run (for sfu-geofence report)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the report here")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PATH",
        help="write the plot (PNG) here (default: the --json path with .png)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also fail (exit 1) when a threshold below is exceeded (default: reported only)",
    )
    parser.add_argument("--max-ejection-latency-ms", type=float, default=20.0, help="default 20")
    parser.add_argument(
        "--max-gap-ratio", type=float, default=1.5, help="event/baseline gap p99 (default 1.5)"
    )
    parser.add_argument("--max-lost-packets", type=int, default=0, help="default 0")
    add_uvloop_argument(parser)


def _held(address: str) -> bool:
    """True for an address of this machine (bindable): media sent there never leaves it."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except (ValueError, OSError):
        return False
    return True


def run(args: argparse.Namespace) -> int:
    # imported here: aiortc and the rest load only for this command
    from ..loadtest.report import PLOT_EXTRA_HINT, Thresholds, build_report, write_json, write_plot
    from ..loadtest.runner import TOKEN_ENV, LoadTestConfig, LoadTestError, run_loadtest
    from ..loadtest.scenario import ScenarioError, parse_countries, parse_networks, parse_step
    from ..synthetic.media import AudioClipParams, VideoClipParams

    countries = parse_countries(args.countries)
    total = sum(c.count for c in countries)
    if args.peers is not None and args.peers != total:
        raise ScenarioError(f"--peers {args.peers} but --countries {args.countries!r} adds up to {total}")
    if args.duration <= 0:
        raise ScenarioError(f"--duration {args.duration:g}: must be positive")
    if args.workers < 1:
        raise ScenarioError(f"--workers {args.workers}: at least 1")
    size = _SIZE.match(args.video_size)
    if size is None:
        raise ValueError(f"--video-size {args.video_size!r}: expected WxH, e.g. 320x240")
    if args.janus is not None and args.url is None:
        raise ValueError("--janus needs --url: the gate (sfu-geofence janus) in front of your Janus")
    if args.janus is not None and not _held(args.janus):
        raise ValueError(f"--janus {args.janus}: not an address of this machine (media stays on it)")
    if args.nodes < 1:
        raise ScenarioError(f"--nodes {args.nodes}: at least 1")
    if args.nodes > 1 and not args.spawn:
        raise ValueError("--nodes starts the nodes: it needs --spawn")
    if args.state_dir is not None and not args.spawn:
        raise ValueError("--state-dir is the spawned server's: it needs --spawn")
    for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
        if path is not None and not path.parent.is_dir():
            raise ValueError(f"{flag} {path}: directory {path.parent} does not exist")
    config = LoadTestConfig(
        countries=countries,
        rooms=args.rooms,
        steps=tuple(parse_step(text) for text in args.at),
        duration=args.duration,
        url=args.url,
        admin_url=args.admin_url,
        admin_token=args.admin_token or os.environ.get(TOKEN_ENV),
        networks=parse_networks(args.network),
        workers=args.workers,
        video=VideoClipParams(
            width=int(size.group(1)), height=int(size.group(2)), fps=args.fps, bitrate=args.video_kbps * 1000
        ),
        audio=AudioClipParams(bitrate=args.audio_kbps * 1000, frame_ms=args.audio_ms),
        setup_timeout=args.setup_timeout,
        state_dir=args.state_dir,
        uvloop=args.uvloop,
        janus_ice=args.janus,
        nodes=args.nodes,
    )
    thresholds = Thresholds(
        max_ejection_latency_ms=args.max_ejection_latency_ms,
        max_gap_ratio=args.max_gap_ratio,
        max_lost_packets=args.max_lost_packets,
        strict=args.strict,
    )
    try:
        plan, record = run_loadtest(config)
    except LoadTestError as exc:
        print(f"sfu-geofence loadtest: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sfu-geofence loadtest: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    report = build_report(plan, record, thresholds)
    if args.json:
        write_json(report, args.json)
        plot = args.plot or args.json.with_suffix(".png")
    else:
        plot = args.plot
    if plot is not None:
        if write_plot(report, plot):
            print(f"plot: {plot}", file=sys.stderr)
        else:
            print(f"no plot: {PLOT_EXTRA_HINT}", file=sys.stderr)
    print(summary(report))
    return 0 if report["passed"] else 1


def summary(report: dict[str, Any]) -> str:
    """The verdict in a few lines (stdout)."""
    lines = []
    for check in report["checks"]:
        mark = "ok  " if check["ok"] else ("FAIL" if check["gates"] else "warn")
        lines.append(f"{mark} {check['name']}: {check['value']} (limit {check['limit']})")
    continuity = report["continuity"]
    ejected = [e["peer"] for e in report["ejected"]]
    lines.append(
        f"ejected {ejected}, ejection_latency_ms {report['ejection_latency_ms']}; "
        f"join_ms {report['join_ms']}; "
        f"continuity gap p99 {continuity['baseline_gap_p99_ms']} -> {continuity['event_gap_p99_ms']} ms, "
        f"lost {continuity['lost_packets']}; sfu_cpu_pct {report['sfu_cpu_pct']}, "
        f"forwarded_pps {report['forwarded_pps']}"
    )
    for node in report.get("nodes", []):
        lines.append(
            f"{node['node']} ({', '.join(node['rooms']) or 'no room'}): {node['participants']} participants, "
            f"cpu {node['cpu_pct']} %, forwarded {node['forwarded_packets']} packets "
            f"({node['forwarded_pps']}/s)"
        )
    if report.get("ejected") and "node" in report["ejected"][0]:
        hosted = ", ".join(f"{e['peer']} on {e['node']}" for e in report["ejected"])
        lines.append(f"ejected by node: {hosted}")
    if "redis" in report:
        redis = report["redis"]
        lines.append(
            f"redis {redis['version']}: {redis['commands_total']} commands during the scenario "
            f"({redis['commands_per_s']}/s) for {redis['policy_changes']} policy changes"
        )
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)
