"""The benchmarks still run and print their figures (no speed is asserted here: see bench/)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.hostile import ATTACKS
from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.janus import JANUS_MISSING, find_janus
from sfu_geofence.testing.netns import Namespace, namespace_unavailable
from sfu_geofence.testing.redis import REDIS_SERVER

ROOT = Path(__file__).parent.parent


def run_bench(*command: str, timeout: float) -> dict[str, Any]:
    """Run a bench from the repository root; return the JSON object it prints last."""
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return figures


def test_the_decision_bench_prints_its_figures_as_the_last_json_line() -> None:
    figures = run_bench("bench/decision.py", "--json", "--addresses", "300", "--rounds", "1", timeout=120)
    for key in ("admit_ns", "lookup_ns", "geoip2_country_ns", "admit_recorded_ns"):
        assert figures[key] > 0, key
    assert figures["geoip2_file_agrees"] == 300


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_forwarding_bench_delivers_media_to_real_subscribers_and_sinks_and_prints_its_figures() -> None:
    # K=1 and 2 (one real subscriber and one sink), a small clip, 2 s windows: ~20-40 s
    figures = run_bench(
        *("-m", "bench.forwarding", "--json", "--k", "1,2", "--real", "1", "--relay-k", "2"),
        *("--window", "2", "--settle", "0.5"),
        *("--width", "320", "--height", "240", "--fps", "15", "--bitrate", "250000"),
        timeout=170,
    )
    assert set(figures["us_per_forwarded_packet"]) == {"1", "2"}
    assert all(us > 0 for us in figures["us_per_forwarded_packet"].values())
    assert figures["packet_count_source"].startswith("SFU consumers' packets_forwarded")
    k2 = figures["per_k"]["2"]
    assert (k2["real_subscribers"], k2["sink_subscribers"]) == (1, 1)
    # at K=2 the SFU forwarded each of the publisher's packets twice
    assert k2["forwarded_packets_per_s"] > 1.5 * k2["received_packets_per_s"] > 0
    # the real subscriber and the sink both received video, and every frame was accounted for
    assert k2["fps_min_real"] > 0
    assert k2["fps_min"] > 0
    assert k2["frames_checked_subscribers"] == 2
    assert figures["relay"]["k"] == 2
    assert figures["relay"]["fps_min"] > 0
    assert figures["relay_cpu_ratio_k20"] > 0
    assert set(figures["goals"]) == {
        "us_per_forwarded_packet_k50_le_40",
        "relay_cpu_ratio_k20_ge_10",
        "fps_min_k20_equals_source",
        "gc_pause_max_ms_le_10",
    }
    assert figures["gc_pause_max_ms"] >= 0  # the SFU's collector pauses were timed in every window
    assert all(row["gc_pause_max_ms"] is not None for row in figures["per_k"].values())
    assert figures["goals"]["us_per_forwarded_packet_k50_le_40"] is None  # K=50 was not run


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_hostile_bench_runs_every_attack_against_a_live_call_and_prints_its_figures() -> None:
    # 1 s per attack, 20 bombing candidates: ~30-50 s
    figures = run_bench(
        *("-m", "bench.hostile", "--json", "--duration", "1", "--baseline", "1", "--bomb-candidates", "20"),
        timeout=170,
    )
    attacks = figures["attacks"]
    assert list(attacks) == list(ATTACKS)
    for name, attack in attacks.items():
        assert attack["sent_packets"] > 0, name
        assert attack["gap_ms"] > 0, name  # the honest participants' media was measured
        assert attack["loop_stall_ms"] >= 0, name
    assert figures["worst_gap_ms"] == max(a["gap_ms"] for a in attacks.values())
    assert figures["worst_loop_stall_ms"] == max(a["loop_stall_ms"] for a in attacks.values())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_nack_need_bench_sees_an_honest_lossy_receiver_ask_for_what_it_lost() -> None:
    figures = run_bench(
        *("-m", "bench.nack_need", "--json", "--duration", "3", "--loss", "0.2"),
        *("--width", "160", "--height", "120", "--fps", "15", "--bitrate", "100000"),
        timeout=110,
    )
    assert figures["packets_per_s_both_tracks"] > 0
    assert figures["nacks_per_s"] > 0  # 20 % loss: the receiver asks
    assert 0 < figures["max_numbers_per_nack"] <= 128


@pytest.mark.cluster
def test_the_cluster_policy_bench_runs_a_real_redis_and_prints_its_figures() -> None:
    if shutil.which(REDIS_SERVER) is None:
        skip_or_fail(f"{REDIS_SERVER} is not installed (apt-get install redis-server)", kind="cluster")
    figures = run_bench("-m", "bench.cluster_policy", "--json", "--rounds", "5", timeout=120)
    assert figures["changes"] == 10
    assert figures["redis_version"].count(".") == 2
    for key in ("sqlite_ack_ms", "redis_ack_ms", "enforced_everywhere_ms"):
        assert figures[key]["p50"] > 0, key


def test_the_ejection_bench_ejects_live_and_prints_gap_ratio_and_latency() -> None:
    # 3 participants (2 stay, 1 ejected), one repetition, 1 s windows: ~15-25 s
    figures = run_bench(
        *("-m", "bench.ejection", "--json", "--repetitions", "1", "--countries", "US:2,CN:1"),
        *("--before", "1", "--after", "1", "--workers", "1"),
        timeout=170,
    )
    assert figures["worst_gap_ratio"] > 0
    assert figures["ejection_latency_ms"]["count"] == 1  # cn-1, ejected
    assert figures["ejection_latency_ms"]["p99"] >= 0
    (run,) = figures["repetitions"]
    assert run["tracks"] == 4  # us-1 <-> us-2, audio and video: the remaining tracks
    assert set(run["sfu_loop_stall_max_ms"]) == {"before", "after"}  # the SFU timed its own stalls
    assert [e["peer"] for e in run["ejected"]] == ["cn-1"]
    assert set(figures["goals"]) == {"worst_gap_ratio_le_1.25", "ejection_latency_p99_le_20_ms"}
    assert figures["failed_repetitions"] == []


@pytest.mark.slow
@pytest.mark.janus
@pytest.mark.timeout(240)
def test_the_forwarding_bench_runs_janus_with_the_same_clip_and_k_and_prints_the_ratio() -> None:
    # --vs-janus at K=1 and 2, a small clip, 2 s windows: the bench re-runs itself in a LAN namespace
    if find_janus() is None:
        skip_or_fail(JANUS_MISSING, kind="janus")
    if (why := namespace_unavailable(Namespace.LAN)) is not None:
        skip_or_fail(why, kind="janus")
    figures = run_bench(
        *("-m", "bench.forwarding", "--json", "--vs-janus", "--k", "1,2", "--real", "1", "--no-relay"),
        *("--window", "2", "--settle", "0.5"),
        *("--width", "320", "--height", "240", "--fps", "15", "--bitrate", "250000"),
        timeout=230,
    )
    assert set(figures["vs_janus_ratio"]) == {"1", "2"}
    assert all(ratio > 0 for ratio in figures["vs_janus_ratio"].values())
    janus_k2 = figures["janus"]["per_k"]["2"]
    # Janus delivered the clip to both subscribers, as the project did, and spent CPU doing it
    assert janus_k2["janus_delivered_packets_per_s"] > 1.5 * figures["per_k"]["1"]["received_packets_per_s"]
    assert janus_k2["project_delivered_packets_per_s"] > 0
    assert janus_k2["janus_fps_min"] > 0
    assert janus_k2["janus_cpu_pct"] > 0
    assert janus_k2["janus_us_per_delivered_packet"] > 0


@pytest.mark.janus
@pytest.mark.lan
def test_the_janus_join_bench_joins_straight_and_through_the_gate_and_prints_both() -> None:
    if find_janus() is None:
        skip_or_fail(JANUS_MISSING, kind="janus")
    figures = run_bench("-m", "bench.janus_join", "--json", "--joins", "20", timeout=120)
    assert figures["joins"] == 20
    assert figures["direct_ms"] > 0
    assert figures["gated_ms"] > 0
    assert figures["ratio"] == pytest.approx(figures["gated_ms"] / figures["direct_ms"], abs=0.05)
