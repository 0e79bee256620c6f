"""The coturn harness: a real turnserver, on 127.0.0.1 only, gone (by its PID) when the block ends."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.coturn import COTURN_MISSING, find_turnserver, running_coturn

pytestmark = pytest.mark.relay


def listening(pid: int) -> set[str]:
    """Local addresses (``host:port``) of the sockets ``pid`` listens on or has bound for UDP."""
    table = subprocess.run(["ss", "-H", "-lntup"], capture_output=True, text=True, check=True).stdout
    return {line.split()[4] for line in table.splitlines() if re.search(rf"pid={pid},", line)}


def test_coturn_listens_on_its_one_loopback_port_only_and_is_stopped_by_pid(tmp_path: Path) -> None:
    if find_turnserver() is None:
        skip_or_fail(COTURN_MISSING, kind="relay")
    with running_coturn(tmp_path) as turn:
        assert listening(turn.pid) == {f"127.0.0.1:{turn.port}"}
        assert turn.url == f"turn:127.0.0.1:{turn.port}?transport=udp"
        assert str(turn.relay_network) == "127.0.0.3/32"
        assert (tmp_path / "turnserver.pid").read_text().strip() == str(turn.pid)
        pid = turn.pid
    assert not os.path.exists(f"/proc/{pid}"), "turnserver outlived its block"
