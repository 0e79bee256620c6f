"""Acknowledged = persisted: what the operator API answered 200 to survives kill -9 and a restart.

The server runs in a process of its own (admin_server_process.py) with its state directory on disk;
the test kills it the moment it has the answer and reads the SQLite files itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfu_geofence import AuditLog, EventKind, PolicyStore, RoomPolicy
from sfu_geofence.server.state import AUDIT_FILE, POLICIES_FILE
from sfu_geofence.testing.host_contract import write_contract_database

TOKEN = "durability-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRIPT = Path(__file__).with_name("admin_server_process.py")
ROOT = Path(__file__).parent.parent.parent
STARTUP = 60.0  # a loaded 2-core machine


@dataclass
class Server:
    process: asyncio.subprocess.Process
    url: str
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, *, json: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=json, headers=AUTH) as response:
            return response.status, await response.json()


@asynccontextmanager
async def server_process(state_dir: Path, database: Path, synchronous: str) -> AsyncIterator[Server]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        str(state_dir),
        str(database),
        TOKEN,
        synchronous,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), STARTUP)).decode()
        assert line.startswith("listening "), f"server did not start: {line!r}"
        async with aiohttp.ClientSession() as session:
            yield Server(process, f"http://127.0.0.1:{int(line.split()[1])}/api", session)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return write_contract_database(tmp_path / "contract.mmdb")


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_every_acknowledged_policy_change_and_its_audit_survive_kill_9(
    tmp_path: Path, database: Path, synchronous: str
) -> None:
    state_dir = tmp_path / "state"
    async with server_process(state_dir, database, synchronous) as server:
        acknowledged = []
        for n in range(10):
            status, body = await server.call("PUT", f"/rooms/room-{n}/policy", json={"countries": ["CN"]})
            assert status == 200, body
            acknowledged.append((f"room-{n}", body["version"]))
        status, body = await server.call("PUT", "/policy/default", json={"countries": ["IR"]})
        assert status == 200, body
        server.process.send_signal(signal.SIGKILL)  # the moment the last answer is in
        assert await asyncio.wait_for(server.process.wait(), STARTUP) == -signal.SIGKILL

    policies = PolicyStore(state_dir / POLICIES_FILE)
    assert [(room, p.version) for room, p in sorted(policies.rooms().items())] == sorted(acknowledged)
    assert all(p.policy == RoomPolicy.deny("CN") for p in policies.rooms().values())
    assert (policies.default.policy, policies.default.version) == (RoomPolicy.deny("IR"), body["version"])
    policies.close()
    audit = AuditLog(state_dir / AUDIT_FILE)
    changes = audit.events(kind=EventKind.POLICY)
    assert [(e.room, e.outcome, e.policy_version) for e in changes] == [
        *((room, "changed", version) for room, version in acknowledged),
        (None, "default_changed", body["version"]),
    ]
    audit.close()


async def test_policies_and_audit_survive_a_clean_restart(tmp_path: Path, database: Path) -> None:
    state_dir = tmp_path / "state"
    async with server_process(state_dir, database, "NORMAL") as server:
        status, first = await server.call(
            "PUT", "/rooms/r/policy", json={"countries": ["CN"], "unknown": "refuse"}
        )
        assert status == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.stdout is not None
        assert (await asyncio.wait_for(server.process.stdout.readline(), STARTUP)) == b"closed\n"
        assert await asyncio.wait_for(server.process.wait(), STARTUP) == 0

    async with server_process(state_dir, database, "NORMAL") as server:
        status, again = await server.call("GET", "/rooms/r/policy")
        assert status == 200
        assert (again["policy"], again["version"], again["inherited"]) == (
            first["policy"],
            first["version"],
            False,
        )
        status, audit = await server.call("GET", "/audit")
        assert [(e["kind"], e["outcome"]) for e in audit["events"]] == [
            ("database", "loaded"),
            ("policy", "changed"),
            ("database", "loaded"),
        ]
