"""``sfu-geofence loadtest --url --janus`` against a real Janus behind ``sfu-geofence janus`` (both
started here, stopped by PID): the standard scenario, a live "deny CN", exit 0, collateral 0."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.janus import JANUS_MISSING, find_janus, running_janus
from sfu_geofence.testing.netns import LAN_IPV4
from sfu_geofence.testing.process import terminate
from sfu_geofence.testing.testdb import build_database

pytestmark = [pytest.mark.janus, pytest.mark.lan, pytest.mark.slow]

TOKEN = "janus-loadtest-token-0123456789"
NETWORKS = {"US": "127.1.0.0/16", "DE": "127.49.0.0/16", "CN": "127.86.0.0/16"}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            with _DIRECT.open(url, timeout=1.0) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {within:g} s:\n{log.read_text()}")


def test_the_standard_scenario_against_a_geofenced_janus_exits_0_without_collateral(tmp_path: Path) -> None:
    if find_janus() is None:
        skip_or_fail(JANUS_MISSING, kind="janus")
    database = build_database(tmp_path / "countries.mmdb", [f"{net}={cc}" for cc, net in NETWORKS.items()])
    (tmp_path / "janus").mkdir()
    with running_janus(tmp_path / "janus", string_ids=True) as janus:
        port, admin_port = free_port(), free_port()
        env = {
            **os.environ,
            "SFU_GEOFENCE_JANUS_ADMIN_SECRET": janus.admin_secret,
            "SFU_GEOFENCE_ADMIN_TOKEN": TOKEN,
        }
        gate_log = tmp_path / "gate.log"
        with gate_log.open("wb") as log:
            gate = subprocess.Popen(
                [
                    sys.executable, "-m", "sfu_geofence", "janus",
                    "--janus-url", janus.api_url, "--janus-admin-url", janus.admin_url,
                    "--port", str(port), "--admin-port", str(admin_port), "--db", str(database),
                ],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        try:
            wait_for(f"http://127.0.0.1:{port}/janus/info", gate, gate_log)
            report_path = tmp_path / "report.json"
            result = subprocess.run(
                [
                    sys.executable, "-m", "sfu_geofence", "loadtest",
                    "--url", f"http://127.0.0.1:{port}/janus", "--janus", LAN_IPV4,
                    "--admin-url", f"http://127.0.0.1:{admin_port}",
                    "--countries", "US:2,DE:1,CN:1",
                    *(f"--network={cc}={net}" for cc, net in NETWORKS.items()),
                    "--duration", "10", "--at", "4s:deny:CN", "--workers", "1", "--setup-timeout", "30",
                    "--json", str(report_path), "--plot", str(tmp_path / "report.png"),
                ],
                capture_output=True, text=True, env=env, timeout=150,
            )  # fmt: skip
            print(result.stdout, result.stderr[-3000:], sep="\n")
            assert result.returncode == 0, (
                result.stdout,
                result.stderr[-3000:],
                gate_log.read_text()[-3000:],
            )
            report = json.loads(report_path.read_text())
            assert report["collateral"] == []
            assert [e["country"] for e in report["ejected"]] == ["CN"]
        finally:
            terminate(gate)
