"""What a load run measured, what it proves, and how it is written down (JSON and a plot).

:func:`build_report` compares each participant's observed fate with :attr:`Plan.expected`:

* ``collateral``: expected to stay (or to be killed by the scenario), but refused or ejected, or
  ejected before the step that restricted it was even sent;
* ``missed``: expected to be refused or ejected, but admitted and never ejected;
* ``failed``: never got to join, or dropped for another reason (a close code other than 4403/4409):
  nothing can be concluded about them, so they fail the run too;
* ``unheard``: two participants who stayed in the same room, one of which no longer received the
  other's audio or video at the end of the run.

Ejection latency is measured from the moment the coordinator sent the policy change (``PUT``) to the
last media packet of the ejected participant seen by any receiver. Continuity looks only at tracks
between participants who stayed to the end: inter-frame gaps in a baseline window (after the warm-up,
before the first step's window) against those in the windows around the steps, and packets lost from
the scenario's start to its end.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .scenario import AddStep, KillStep, Plan, PolicyStep
from .worker import PeerEvent, TrackRecord

TIMELINE_BUCKET_S = 0.5
EVENT_WINDOW_BEFORE_S = 1.0
EVENT_WINDOW_AFTER_S = 3.0
BASELINE_WARMUP_S = 1.0
UNHEARD_AFTER_S = 5.0
LARGEST_GAPS = 12
LONG_STALL_S = 0.1
SETTLE_S = 5.0


@dataclass(frozen=True)
class Thresholds:
    """What a run must show besides correct outcomes; they fail the run only when ``strict``."""

    max_ejection_latency_ms: float = 20.0
    max_gap_ratio: float = 1.5
    max_lost_packets: int = 0
    strict: bool = False


@dataclass
class RoomRequest:
    """One operator API call of a policy step."""

    room: str
    requested_at: float
    answered_at: float | None = None
    status: int | None = None
    ejections: list[str] = field(default_factory=list)
    """Participant ids the server said it ejects."""
    error: str = ""


@dataclass
class StepRecord:
    index: int
    text: str
    at: float
    """When it was executed (monotonic)."""
    requests: list[RoomRequest] = field(default_factory=list)


@dataclass(frozen=True)
class NodeRecord:
    """One node of a spawned cluster (``--nodes``)."""

    name: str
    url: str
    pid: int
    rooms: tuple[str, ...]
    """The rooms whose participants joined through it (it hosted them)."""
    cpu_s: float | None
    """CPU seconds it used from the scenario's start to its end."""


@dataclass
class RunRecord:
    """Everything the coordinator saw, in monotonic seconds."""

    url: str
    spawned: bool
    t0: float
    """The scenario clock's zero: everybody present from the start joined and receiving."""
    t_end: float
    setup_complete: bool
    events: list[PeerEvent]
    steps: list[StepRecord]
    tracks: list[TrackRecord]
    media: dict[str, Any]
    workers: int
    sfu_cpu_s: float | None
    generator_cpu_s: float
    load_average: dict[str, list[float]]
    killed: dict[str, float] = field(default_factory=dict)
    """Participant name -> when its worker was SIGKILLed."""
    loop_lag_max_ms: float = 0.0
    stalls: list[tuple[float, float, float]] = field(default_factory=list)
    """The workers' event-loop stalls: (monotonic start, seconds, CPU seconds the worker used meanwhile)."""
    nodes: list[NodeRecord] = field(default_factory=list)
    """With ``--nodes`` N > 1: the nodes, each hosting some rooms; empty for one server."""
    redis: dict[str, Any] | None = None
    """With ``--nodes``: the Redis they shared (version, commands run during the scenario)."""


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The q-quantile by nearest rank (as the meter's p99), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _merge(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        elif end > start:
            merged.append((start, end))
    return merged


def _worst_stall(
    stalls: list[tuple[float, float, float]], windows: list[tuple[float, float]]
) -> dict[str, Any]:
    """The longest worker stall in the windows, and the CPU the worker used during it."""
    inside = [(length, cpu) for start, length, cpu in stalls if _inside(start, windows)]
    length, cpu = max(inside, default=(0.0, 0.0))
    return {"ms": _ms(length), "cpu_ms": _ms(cpu)}


def _inside(t: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(start <= t < end for start, end in windows)


def _gaps_in(times: Sequence[float], windows: Sequence[tuple[float, float]]) -> list[float]:
    gaps: list[float] = []
    for start, end in windows:
        first = max(1, bisect.bisect_left(times, start))
        last = bisect.bisect_left(times, end)
        gaps.extend(times[i] - times[i - 1] for i in range(first, last))
    return gaps


def observed_outcomes(plan: Plan, run: RunRecord) -> dict[str, tuple[str, PeerEvent | None]]:
    """Each participant's fate as seen: stays, refused, ejected, killed, closed, failed or absent."""
    seen: dict[str, tuple[str, PeerEvent | None]] = {p.name: ("absent", None) for p in plan.peers}
    for event in run.events:
        if event.kind == "joined":
            if seen[event.peer][0] == "absent":
                seen[event.peer] = ("stays", event)
        else:
            seen[event.peer] = (event.kind, event)
    for name in run.killed:
        if seen[name][0] in ("stays", "absent"):
            seen[name] = ("killed", None)
    return seen


def build_report(plan: Plan, run: RunRecord, thresholds: Thresholds = Thresholds()) -> dict[str, Any]:
    """The report's JSON object (see docs/loadtest.md for every field)."""
    ids = {e.participant: e.peer for e in run.events if e.kind == "joined" and e.participant}
    joined_ms = [e.join_ms for e in run.events if e.kind == "joined" and e.join_ms is not None]
    observed = observed_outcomes(plan, run)
    hosts = {room: node.name for node in run.nodes for room in node.rooms}
    requested_at: dict[tuple[int | None, str], float] = {
        (s.index, r.room): r.requested_at for s in run.steps for r in s.requests
    }

    last_seen: dict[str, float] = {}
    for track in run.tracks:
        name = ids.get(track.source)
        if name is not None and track.last_arrival is not None:
            last_seen[name] = max(last_seen.get(name, 0.0), track.last_arrival)

    collateral: list[dict[str, Any]] = []
    missed: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    ejected: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    latencies: list[float] = []
    for peer in plan.peers:
        expectation = plan.expected[peer.name]
        outcome, event = observed[peer.name]
        entry: dict[str, Any] = {"peer": peer.name, "country": peer.country, "room": peer.room}
        verdict: dict[str, Any] = {**entry, "expected": expectation.outcome, "observed": outcome}
        if event is not None and event.close_code is not None:
            verdict["close_code"] = event.close_code
        if outcome == "refused":
            refused.append({**entry, "step": expectation.step})
        if outcome in ("failed", "closed", "absent"):
            failed.append({**verdict, "detail": event.detail if event else "no event (the worker died?)"})
            continue
        if outcome == "ejected":
            assert event is not None
            sent = (
                requested_at.get((expectation.step, peer.room)) if expectation.outcome == "ejected" else None
            )
            if sent is None or event.at < sent:
                collateral.append(verdict)
                continue
            # 0: nothing of it arrived anywhere after the request was sent
            latency = max(0.0, last_seen[peer.name] - sent) if peer.name in last_seen else None
            if latency is not None:
                latencies.append(latency)
            ejected.append(
                {
                    **entry,
                    **({"node": hosts[peer.room]} if peer.room in hosts else {}),
                    "step": expectation.step,
                    "latency_ms": _ms(latency),
                    "last_packet_ms": _ms(last_seen[peer.name] - sent) if peer.name in last_seen else None,
                    "notified_ms": _ms(event.at - sent),
                }
            )
            continue
        if outcome == expectation.outcome:
            continue
        if expectation.outcome in ("refused", "ejected"):
            missed.append(verdict)
        else:
            collateral.append(verdict)

    continuity = _continuity(plan, run, observed, ids)
    unheard = _unheard(plan, run, observed)
    measured = max(run.t_end - run.t0, 1e-9)
    forwarded = sum(
        packets
        for track in run.tracks
        for start, packets in zip(track.bucket_starts, track.bucket_packets, strict=True)
        if run.t0 <= start < run.t_end
    )
    forwarded_bytes = sum(
        size
        for track in run.tracks
        for start, size in zip(track.bucket_starts, track.bucket_bytes, strict=True)
        if run.t0 <= start < run.t_end
    )
    ejection_latency = {
        "p50": _ms(nearest_rank(latencies, 0.5)),
        "p99": _ms(nearest_rank(latencies, 0.99)),
        "max": _ms(max(latencies) if latencies else None),
    }
    report: dict[str, Any] = {
        "peers": len(plan.peers),
        "rooms": len(plan.rooms),
        "countries": {c: sum(p.country == c for p in plan.peers) for c in plan.networks},
        "networks": {c: str(n) for c, n in plan.networks.items()},
        "duration_s": round(measured, 3),
        "server": {"url": run.url, "spawned": run.spawned},
        "workers": run.workers,
        "media": run.media,
        "setup_complete": run.setup_complete,
        "join_ms": {
            "p50": _round(nearest_rank(joined_ms, 0.5)),
            "p95": _round(nearest_rank(joined_ms, 0.95)),
            "p99": _round(nearest_rank(joined_ms, 0.99)),
            "count": len(joined_ms),
        },
        "steps": [_step_json(plan, run, s) for s in run.steps],
        "ejected": ejected,
        "ejection_latency_ms": ejection_latency,
        "refused": refused,
        "killed": sorted(run.killed),
        "collateral": collateral,
        "missed": missed,
        "failed": failed,
        "unheard": unheard,
        "continuity": continuity,
        "sfu_cpu_pct": None if run.sfu_cpu_s is None else round(100 * run.sfu_cpu_s / measured, 1),
        "generator_cpu_pct": round(100 * run.generator_cpu_s / measured, 1),
        "generator_loop_lag_max_ms": round(run.loop_lag_max_ms, 1),
        "generator_long_stalls": [
            {"at_s": round(start - run.t0, 3), "ms": _ms(length), "cpu_ms": _ms(cpu)}
            for start, length, cpu in sorted(run.stalls)
            if length >= LONG_STALL_S
        ],
        "forwarded_pps": round(forwarded / measured, 1),
        "forwarded_kbps": round(forwarded_bytes * 8 / measured / 1000, 1),
        **({"nodes": _nodes_json(plan, run, observed, measured)} if run.nodes else {}),
        **({"redis": _redis_json(run.redis, run, measured)} if run.redis is not None else {}),
        "load_average": run.load_average,
        "timeline": _timeline(plan, run),
    }
    report["checks"] = _checks(report, thresholds)
    report["passed"] = all(c["ok"] for c in report["checks"] if c["gates"])
    return report


def _nodes_json(
    plan: Plan, run: RunRecord, observed: dict[str, tuple[str, PeerEvent | None]], measured: float
) -> list[dict[str, Any]]:
    """Per node: its rooms, the participants it admitted, its CPU, the packets it forwarded (what its
    rooms' participants received during the scenario)."""
    room_of = {p.name: p.room for p in plan.peers}
    nodes = []
    for node in run.nodes:
        forwarded = sum(
            packets
            for track in run.tracks
            if room_of.get(track.receiver) in node.rooms
            for start, packets in zip(track.bucket_starts, track.bucket_packets, strict=True)
            if run.t0 <= start < run.t_end
        )
        admitted = [
            name
            for name, (outcome, _) in observed.items()
            if room_of[name] in node.rooms and outcome in ("stays", "ejected", "killed")
        ]
        nodes.append(
            {
                "node": node.name,
                "url": node.url,
                "pid": node.pid,
                "rooms": list(node.rooms),
                "participants": len(admitted),
                "cpu_pct": None if node.cpu_s is None else round(100 * node.cpu_s / measured, 1),
                "forwarded_packets": forwarded,
                "forwarded_pps": round(forwarded / measured, 1),
            }
        )
    return nodes


def _redis_json(redis: dict[str, Any], run: RunRecord, measured: float) -> dict[str, Any]:
    """The shared Redis: version, and what it carried during the scenario (commands, per second)."""
    commands: dict[str, int] = redis.get("commands", {})
    total = sum(commands.values())
    changes = sum(len(s.requests) for s in run.steps)
    return {
        **redis,
        "commands_total": total,
        "commands_per_s": round(total / measured, 2),
        "policy_changes": changes,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _step_json(plan: Plan, run: RunRecord, record: StepRecord) -> dict[str, Any]:
    planned = plan.steps[record.index]
    step = planned.step
    result: dict[str, Any] = {
        "step": record.index,
        "at": step.text,
        "t_s": round(record.at - run.t0, 3),
        "action": type(step).__name__.removesuffix("Step").lower()
        if not isinstance(step, PolicyStep)
        else step.action,
        "expected_removed": list(planned.expected_removed),
    }
    if isinstance(step, PolicyStep):
        result["requests"] = [
            {
                "room": r.room,
                "policy": planned.policies[r.room].to_dict(),
                "status": r.status,
                "answer_ms": _ms(None if r.answered_at is None else r.answered_at - r.requested_at),
                "ejections": r.ejections,
                **({"error": r.error} if r.error else {}),
            }
            for r in record.requests
        ]
    elif isinstance(step, KillStep | AddStep):
        result["peers"] = list(planned.peers)
    return result


def _unheard(
    plan: Plan, run: RunRecord, observed: dict[str, tuple[str, PeerEvent | None]]
) -> list[dict[str, Any]]:
    """Pairs of participants who stayed in the same room where one stopped receiving (a kind of) the other.

    Media must still arrive in the last :data:`UNHEARD_AFTER_S` seconds of the run from everybody who
    had been in the room for :data:`SETTLE_S` seconds by then.
    """
    joined = {e.peer: e for e in run.events if e.kind == "joined"}
    staying = [
        p
        for p in plan.peers
        if observed[p.name][0] == "stays" and joined[p.name].at <= run.t_end - UNHEARD_AFTER_S - SETTLE_S
    ]
    latest: dict[tuple[str, str, str], float] = {}
    for track in run.tracks:
        if track.last_arrival is not None:
            key = (track.receiver, track.source, track.kind)
            latest[key] = max(latest.get(key, 0.0), track.last_arrival)
    unheard: list[dict[str, Any]] = []
    for receiver in staying:
        for source in staying:
            if source.room != receiver.room or source is receiver:
                continue
            source_id = joined[source.name].participant or ""
            for kind in ("audio", "video"):
                last = latest.get((receiver.name, source_id, kind))
                if last is None or last < run.t_end - UNHEARD_AFTER_S:
                    unheard.append(
                        {
                            "receiver": receiver.name,
                            "source": source.name,
                            "kind": kind,
                            "last_packet_s": None if last is None else round(last - run.t0, 3),
                        }
                    )
    return unheard


def _continuity(
    plan: Plan,
    run: RunRecord,
    observed: dict[str, tuple[str, PeerEvent | None]],
    ids: dict[str, str],
) -> dict[str, Any]:
    remaining = {name for name, (outcome, _) in observed.items() if outcome == "stays"}
    steps = [s.at for s in run.steps]
    events = _merge((at - EVENT_WINDOW_BEFORE_S, min(at + EVENT_WINDOW_AFTER_S, run.t_end)) for at in steps)
    baseline_end = (steps[0] - EVENT_WINDOW_BEFORE_S) if steps else run.t_end
    baseline = _merge([(run.t0 + BASELINE_WARMUP_S, baseline_end)])
    gaps: dict[str, dict[str, list[float]]] = {"baseline": defaultdict(list), "event": defaultdict(list)}
    lost = 0
    largest: list[tuple[float, float, TrackRecord]] = []  # (gap, end time, track) in the event windows
    for track in run.tracks:
        if track.receiver not in remaining or ids.get(track.source) not in remaining:
            continue
        lost += max(0, track.lost - track.lost_at_mark)
        times = list(track.frame_times)
        gaps["baseline"][track.kind] += _gaps_in(times, baseline)
        gaps["event"][track.kind] += _gaps_in(times, events)
        for start, end in events:
            first, last = max(1, bisect.bisect_left(times, start)), bisect.bisect_left(times, end)
            largest += [(times[i] - times[i - 1], times[i], track) for i in range(first, last)]
    largest = sorted(largest, key=lambda item: item[0], reverse=True)[:LARGEST_GAPS]

    def p99(values: list[float]) -> float | None:
        return _ms(nearest_rank(values, 0.99))

    by_kind = {
        kind: {
            "baseline_gap_p99_ms": p99(gaps["baseline"][kind]),
            "event_gap_p99_ms": p99(gaps["event"][kind]),
            "baseline_gap_max_ms": _ms(max(gaps["baseline"][kind], default=None)),
            "event_gap_max_ms": _ms(max(gaps["event"][kind], default=None)),
            "baseline_gaps": len(gaps["baseline"][kind]),
            "event_gaps": len(gaps["event"][kind]),
        }
        for kind in ("video", "audio")
    }
    return {
        "baseline_gap_p99_ms": p99([g for k in gaps["baseline"].values() for g in k]),
        "event_gap_p99_ms": p99([g for k in gaps["event"].values() for g in k]),
        "lost_packets": lost,
        "tracks": sum(1 for t in run.tracks if t.receiver in remaining and ids.get(t.source) in remaining),
        "baseline_window_s": [[round(a - run.t0, 3), round(b - run.t0, 3)] for a, b in baseline],
        "event_windows_s": [[round(a - run.t0, 3), round(b - run.t0, 3)] for a, b in events],
        "by_kind": by_kind,
        "generator_stall_max_ms": {
            name: _worst_stall(run.stalls, windows)
            for name, windows in (("baseline", baseline), ("event", events))
        },
        "worst_kind_ratio": max(
            (
                round(k["event_gap_p99_ms"] / k["baseline_gap_p99_ms"], 3)
                for k in by_kind.values()
                if k["event_gap_p99_ms"] is not None and k["baseline_gap_p99_ms"]
            ),
            default=None,
        ),
        "largest_event_gaps": [
            {
                "receiver": track.receiver,
                "source": ids.get(track.source, track.source),
                "kind": track.kind,
                "ended_at_s": round(end - run.t0, 3),
                "gap_ms": _ms(gap),
            }
            for gap, end, track in largest
        ],
    }


def _timeline(plan: Plan, run: RunRecord) -> dict[str, Any]:
    """Each receiver's received media rate (kbit/s) per :data:`TIMELINE_BUCKET_S`, from the first packet."""
    starts = [t.first_arrival for t in run.tracks if t.first_arrival is not None]
    if not starts:
        return {"bucket_s": TIMELINE_BUCKET_S, "start_s": 0.0, "peers": {}}
    # on the meters' bucket grid (multiples of the bucket length in monotonic time): no aliasing
    origin = math.floor(min(starts) / TIMELINE_BUCKET_S) * TIMELINE_BUCKET_S
    count = max(1, math.ceil((run.t_end - origin) / TIMELINE_BUCKET_S))
    series: dict[str, list[float]] = {}
    for track in run.tracks:
        values = series.setdefault(track.receiver, [0.0] * count)
        for start, size in zip(track.bucket_starts, track.bucket_bytes, strict=True):
            index = int((start - origin) // TIMELINE_BUCKET_S)
            if 0 <= index < count:
                values[index] += size * 8 / TIMELINE_BUCKET_S / 1000
    peers = {
        name: {
            "country": plan.peer(name).country,
            "room": plan.peer(name).room,
            "kbps": [round(v, 1) for v in series.get(name, [0.0] * count)],
        }
        for name in sorted(series, key=lambda n: [p.name for p in plan.peers].index(n))
    }
    return {"bucket_s": TIMELINE_BUCKET_S, "start_s": round(origin - run.t0, 3), "peers": peers}


def _checks(report: dict[str, Any], thresholds: Thresholds) -> list[dict[str, Any]]:
    """Outcome checks always gate the exit status; measurement thresholds only with ``strict``.

    A measurement that could not be made (no ejection, no baseline) passes: there is nothing to hold
    against its limit.
    """
    continuity = report["continuity"]
    ratio = continuity["worst_kind_ratio"]
    strict = thresholds.strict
    checks: list[tuple[str, float | None, float, bool]] = [
        ("collateral", len(report["collateral"]), 0, True),
        ("missed", len(report["missed"]), 0, True),
        ("failed", len(report["failed"]), 0, True),
        ("unheard", len(report["unheard"]), 0, True),
        (
            "ejection_latency_ms.p99",
            report["ejection_latency_ms"]["p99"],
            thresholds.max_ejection_latency_ms,
            strict,
        ),
        ("continuity.worst_kind_ratio (event/baseline gap p99)", ratio, thresholds.max_gap_ratio, strict),
        ("continuity.lost_packets", continuity["lost_packets"], thresholds.max_lost_packets, strict),
    ]
    return [
        {"name": name, "value": value, "limit": limit, "gates": gates, "ok": value is None or value <= limit}
        for name, value, limit, gates in checks
    ]


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")


PLOT_EXTRA_HINT = "the plot needs matplotlib: pip install 'sfu-geofence[loadtest]'"


def write_plot(report: dict[str, Any], path: Path) -> bool:
    """Each participant's received media rate over time, steps marked; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    timeline = report["timeline"]
    step_s = timeline["bucket_s"]
    countries = sorted({p["country"] for p in timeline["peers"].values()})
    cmap = plt.get_cmap("tab10")
    colour = {c: cmap(i % 10) for i, c in enumerate(countries)}
    styles = ["-", "--", ":", "-."]
    figure, axes = plt.subplots(figsize=(11, 5.5), dpi=110)
    seen: dict[str, int] = defaultdict(int)
    for name, peer in timeline["peers"].items():
        values = peer["kbps"]
        times = [timeline["start_s"] + (i + 0.5) * step_s for i in range(len(values))]
        style = styles[seen[peer["country"]] % len(styles)]
        seen[peer["country"]] += 1
        axes.plot(
            times,
            values,
            style,
            color=colour[peer["country"]],
            linewidth=1.2,
            label=f"{name} ({peer['room']})",
        )
    continuity = report["continuity"]
    for start, end in continuity["baseline_window_s"]:
        axes.axvspan(start, end, color="tab:green", alpha=0.06)
    for start, end in continuity["event_windows_s"]:
        axes.axvspan(start, end, color="tab:orange", alpha=0.08)
    top = max((max(p["kbps"], default=0) for p in timeline["peers"].values()), default=1) or 1
    labels: dict[float, list[str]] = defaultdict(list)
    for step in report["steps"]:
        labels[step["t_s"]].append(step["at"])
    for t_s, texts in labels.items():  # vertical labels: steps a second apart stay readable
        axes.axvline(t_s, color="black", linewidth=1, linestyle="--")
        axes.text(t_s, top * 1.33, " " + ", ".join(texts), fontsize=8, rotation=90, va="top", ha="right")
    axes.set_ylim(0, top * 1.35)
    axes.set_xlabel("seconds from the scenario's start (participants joined before 0)")
    axes.set_ylabel("received media, kbit/s (RTP payload)")
    latency = report["ejection_latency_ms"]
    axes.set_title(
        f"{report['peers']} participants in {report['rooms']} rooms: {len(report['ejected'])} ejected, "
        f"collateral {len(report['collateral'])}, missed {len(report['missed'])}; ejection p99 "
        f"{latency['p99']} ms; gap p99 {continuity['baseline_gap_p99_ms']} -> "
        f"{continuity['event_gap_p99_ms']} ms; lost {continuity['lost_packets']}",
        fontsize=9,
    )
    axes.legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True
