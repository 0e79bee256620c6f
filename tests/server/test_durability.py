"""Acknowledged = persisted: what the operator API answered 200 to survives kill -9 and a restart.

The server runs in a process of its own (admin_server_process.py, or ``sfu-geofence serve`` itself)
with its state directory on disk; the test kills it the moment it has the answer and reads the SQLite
files itself, or restarts it on the same directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfu_geofence import AuditLog, EventKind, PolicyStore, RoomPolicy
from sfu_geofence.server.admin import TOKEN_ENV
from sfu_geofence.server.state import AUDIT_FILE, POLICIES_FILE
from sfu_geofence.synthetic.client import SyntheticPeer
from sfu_geofence.testing.host_contract import HostContract, write_contract_database

TOKEN = "durability-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRIPT = Path(__file__).with_name("admin_server_process.py")
ROOT = Path(__file__).parent.parent.parent
STARTUP = 60.0  # a loaded 2-core machine


@dataclass
class Server:
    process: asyncio.subprocess.Process
    url: str
    """The operator API's base URL."""
    session: aiohttp.ClientSession
    ws_url: str = ""
    """The signaling URL (``serve`` only)."""

    async def call(self, method: str, path: str, *, json: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=json, headers=AUTH) as response:
            return response.status, await response.json()


@asynccontextmanager
async def started(
    *args: str, env: Mapping[str, str], api_of: Callable[[list[str]], tuple[str, str]], lines: int = 1
) -> AsyncIterator[Server]:
    """Run ``python args...``; ``api_of`` reads the API's URL and the signaling URL (if any) from its
    first ``lines`` lines of output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )
    try:
        assert process.stdout is not None
        said = [(await asyncio.wait_for(process.stdout.readline(), STARTUP)).decode() for _ in range(lines)]
        api, ws = api_of(said)
        async with aiohttp.ClientSession() as session:
            yield Server(process, api, session, ws)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def admin_server_api(lines: list[str]) -> tuple[str, str]:
    [line] = lines
    assert line.startswith("listening "), f"server did not start: {line!r}"
    return f"http://127.0.0.1:{int(line.split()[1])}/api", ""


def server_process(state_dir: Path, database: Path, synchronous: str) -> AbstractAsyncContextManager[Server]:
    """admin_server_process.py: the geofence and its operator API alone."""
    args = (str(SCRIPT), str(state_dir), str(database), TOKEN, synchronous)
    return started(*args, env={}, api_of=admin_server_api)


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


def serve_api(lines: list[str]) -> tuple[str, str]:
    public, admin = lines
    assert public.startswith("listening on http://127.0.0.1:"), f"serve did not start: {public!r}"
    assert admin.startswith("admin listening on http://127.0.0.1:"), f"no admin listener: {admin!r}"
    return admin.split()[3] + "/api", public.split()[-1]


def serve_process(state_dir: Path, database: Path) -> AbstractAsyncContextManager[Server]:
    """``python -m sfu_geofence serve`` itself, token from the environment, on ephemeral ports."""
    args = ("-m", "sfu_geofence", "serve", "--loopback-only", "--port", "0", "--admin-port", "0")
    return started(
        *args,
        "--db",
        str(database),
        "--state-dir",
        str(state_dir),
        env={TOKEN_ENV: TOKEN},
        api_of=serve_api,
        lines=2,
    )


async def join_from(server: Server, address: str) -> list[dict[str, Any]]:
    peer = SyntheticPeer(server.ws_url, "room", address, name="x")
    try:
        await peer.join(publish={}, within=STARTUP)
        return peer.messages
    finally:
        await peer.close()


async def test_serve_keeps_acknowledged_policies_and_audit_through_kill_9(
    tmp_path: Path, database: Path
) -> None:
    state_dir = tmp_path / "state"
    cn = HostContract.address("CN")
    async with serve_process(state_dir, database) as server:
        status, body = await server.call("PUT", "/rooms/room/policy", json={"countries": ["CN"]})
        assert status == 200, body
        assert [m["type"] for m in await join_from(server, cn)] == ["refused"]
        server.process.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(server.process.wait(), STARTUP) == -signal.SIGKILL

    async with serve_process(state_dir, database) as server:
        status, again = await server.call("GET", "/rooms/room/policy")
        assert status == 200
        assert (again["policy"], again["version"], again["inherited"]) == (
            body["policy"],
            body["version"],
            False,
        )
        status, audit = await server.call("GET", "/audit?room=room")
        assert [(e["kind"], e["outcome"], e["address"]) for e in audit["events"]] == [
            ("policy", "changed", None),
            ("admission", "refused", cn),
        ]
        assert [m["type"] for m in await join_from(server, cn)] == ["refused"]  # still enforced
