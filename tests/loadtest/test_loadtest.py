"""``sfu-geofence loadtest`` run for real: a spawned server, worker processes, a live policy change.

Small scenarios (four participants) so that CI stays fast; the verdict, not the speed, is asserted.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sfu_geofence.cluster.redisserver import REDIS_SERVER
from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.testdb import build_database

ROOT = Path(__file__).parent.parent.parent
REPORT_FIELDS = {
    "peers",
    "rooms",
    "join_ms",
    "ejected",
    "ejection_latency_ms",
    "collateral",
    "missed",
    "continuity",
    "sfu_cpu_pct",
    "forwarded_pps",
    "media",
    "steps",
    "timeline",
    "checks",
    "passed",
}


def loadtest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sfu_geofence", "loadtest", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=150,
        check=False,
    )


def read(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


@pytest.mark.slow
def test_a_spawned_run_ejects_exactly_the_cn_participant_and_writes_the_report_and_plot(
    tmp_path: Path,
) -> None:
    result = loadtest(
        "--spawn",
        "--peers", "4",
        "--rooms", "1",
        "--countries", "US:2,DE:1,CN:1",
        "--duration", "10",
        "--at", "5s:deny:CN",
        "--json", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = read(tmp_path / "report.json")
    assert set(report) >= REPORT_FIELDS
    assert report["collateral"] == []
    assert report["missed"] == []
    assert report["failed"] == []
    assert report["unheard"] == []
    assert [(e["peer"], e["country"]) for e in report["ejected"]] == [("cn-1", "CN")]
    assert report["ejected"][0]["latency_ms"] is not None
    assert set(report["ejection_latency_ms"]) == {"p50", "p99", "max"}
    assert set(report["join_ms"]) >= {"p50", "p95", "p99"}
    assert report["join_ms"]["count"] == 4
    assert set(report["continuity"]) >= {"baseline_gap_p99_ms", "event_gap_p99_ms", "lost_packets"}
    assert report["continuity"]["baseline_gap_p99_ms"] > 0
    assert report["sfu_cpu_pct"] is not None
    assert report["forwarded_pps"] > 0
    assert report["steps"][0]["requests"][0]["status"] == 200
    assert set(report["timeline"]["peers"]) == {"us-1", "us-2", "de-1", "cn-1"}
    assert report["passed"] is True
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
    assert "PASSED" in result.stdout
    assert "cn-1 ejected (close 4409)" in result.stderr


@pytest.mark.slow
@pytest.mark.cluster
def test_a_run_across_nodes_ejects_on_every_node_from_one_change_and_reports_each_node(
    tmp_path: Path,
) -> None:
    if shutil.which(REDIS_SERVER) is None:
        skip_or_fail(f"{REDIS_SERVER} is not installed (apt-get install redis-server)", kind="cluster")
    result = loadtest(
        "--spawn",
        "--nodes", "2",
        "--peers", "4",
        "--rooms", "2",
        "--countries", "US:2,CN:2",
        "--duration", "8",
        "--at", "4s:deny:CN",
        "--json", str(tmp_path / "report.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = read(tmp_path / "report.json")
    assert (report["collateral"], report["missed"], report["failed"]) == ([], [], [])
    # Rooms alternate over the nodes and participants over the rooms: one CN on each node, and both
    # changes went through node-1 (the operator API the run uses).
    assert sorted((e["peer"], e["room"], e["node"]) for e in report["ejected"]) == [
        ("cn-1", "room-1", "node-1"),
        ("cn-2", "room-2", "node-2"),
    ]
    nodes = {n["node"]: n for n in report["nodes"]}
    assert [(n, nodes[n]["rooms"], nodes[n]["participants"]) for n in sorted(nodes)] == [
        ("node-1", ["room-1"], 2),
        ("node-2", ["room-2"], 2),
    ]
    assert all(n["forwarded_packets"] > 0 and n["cpu_pct"] is not None for n in nodes.values())
    version = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, check=True).stdout
    assert f"v={report['redis']['version']} " in version
    assert report["redis"]["policy_changes"] == 2
    # What Redis ran during the scenario and during the joins, from INFO commandstats: each change
    # is one script call (the nodes load the script at start: no NOSCRIPT, no SCRIPT LOAD then).
    assert report["redis"]["commands"]["evalsha"] >= 2
    assert "script|load" not in report["redis"]["commands"]
    assert report["redis"]["commands_total"] == sum(report["redis"]["commands"].values())
    assert report["redis"]["setup"]["seconds"] > 0
    assert "ejected by node: " in result.stdout
    assert f"redis {report['redis']['version']}: " in result.stdout


@pytest.fixture
def server_with_swapped_database(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A running server whose database puts the US participants' network in CN and vice versa."""
    database = build_database(
        tmp_path / "swapped.mmdb", ["127.10.0.0/16=CN", "127.11.0.0/16=US"]
    )  # the load tester's defaults for --countries US:..,CN:.. are 127.10/16 US, 127.11/16 CN
    token = secrets.token_urlsafe(24)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sfu_geofence",
            "serve",
            "--port",
            "0",
            "--loopback-only",
            "--db",
            str(database),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SFU_GEOFENCE_ADMIN_TOKEN": token},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        admin = process.stdout.readline().strip()
        assert admin.startswith("admin listening on http://127.0.0.1:"), admin
        yield line.split()[-1], admin.split()[3], token
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_a_server_that_ejects_the_wrong_participant_fails_the_run_with_collateral_and_missed(
    server_with_swapped_database: tuple[str, str, str], tmp_path: Path
) -> None:
    url, admin, token = server_with_swapped_database
    result = loadtest(
        "--url", url,
        "--admin-url", admin,
        "--countries", "US:1,CN:1,DE:1",
        "--duration", "6",
        "--at", "3s:deny:CN",
        "--json", str(tmp_path / "report.json"),
        env={"SFU_GEOFENCE_ADMIN_TOKEN": token},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report = read(tmp_path / "report.json")
    assert [(c["peer"], c["expected"], c["observed"]) for c in report["collateral"]] == [
        ("us-1", "stays", "ejected")
    ]
    assert [(m["peer"], m["expected"], m["observed"]) for m in report["missed"]] == [
        ("cn-1", "ejected", "stays")
    ]
    assert report["ejected"] == []
    assert report["server"]["spawned"] is False
    assert report["sfu_cpu_pct"] is None
    assert report["passed"] is False
    assert "FAIL collateral: 1" in result.stdout
    assert "FAIL missed: 1" in result.stdout


def test_bad_arguments_exit_2_with_the_argument_named() -> None:
    result = loadtest("--spawn", "--countries", "US:2,CN:1", "--peers", "4")
    assert result.returncode == 2
    assert "--peers 4 but --countries 'US:2,CN:1' adds up to 3" in result.stderr
    result = loadtest("--spawn", "--countries", "US:2", "--at", "5s:ban:US")
    assert result.returncode == 2
    assert "unknown action 'ban'" in result.stderr
    result = loadtest("--url", "http://192.0.2.2:8080", "--countries", "US:2")
    assert result.returncode == 2
    assert "the server must be on loopback" in result.stderr


def _by_country_and_room(entries: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for entry in entries:
        key = (entry["country"], entry["room"])
        counts[key] = counts.get(key, 0) + entry.get("count", 1)
    return counts


@pytest.mark.slow
def test_the_transparency_report_of_a_spawned_runs_state_directory_counts_what_the_load_test_saw(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    result = loadtest(
        "--spawn",
        "--countries", "US:2,CN:2,HK:1",
        "--rooms", "2",
        "--duration", "9",
        "--at", "3s:deny:CN,HK@room-1",
        "--at", "5s:add:CN:2",
        "--at", "6s:add:HK:1@room-1",
        "--state-dir", str(state),
        "--json", str(tmp_path / "loadtest.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    seen = read(tmp_path / "loadtest.json")
    assert {(e["country"], e["room"]) for e in seen["ejected"]} == {("CN", "room-1"), ("HK", "room-1")}
    assert {(e["country"], e["room"]) for e in seen["refused"]} == {("CN", "room-1"), ("HK", "room-1")}

    command = ["report", "--json", "--state-dir", str(state), "--since", "2000-01-01"]
    report = subprocess.run(
        [sys.executable, "-m", "sfu_geofence", *command],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=True,
    )
    told = json.loads(report.stdout)
    assert _by_country_and_room(told["ejections"]["rows"]) == _by_country_and_room(seen["ejected"])
    assert _by_country_and_room(told["refusals"]["rows"]) == _by_country_and_room(seen["refused"])
    assert told["ejections"]["by_trigger"] == {"policy_changed": len(seen["ejected"])}
    assert set(told["refusals"]["by_trigger"]) == {"country_denied"}
    changes = [(c["room"], c["rule"].split(";")[0]) for c in told["policy_changes"]]
    assert changes == [("room-1", "deny CN,HK")]
