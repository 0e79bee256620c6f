"""The smaller holes a hostile client found (issue 9, item 6), each against a real server on loopback.

The database of this suite (conftest.py) puts 127.1/16 in US, 127.49/16 in DE and 127.86/16 in CN.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sfu_geofence.core.audit import EventKind
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.protocol import Answer, ErrorMessage, Join, OfferMessage, encode
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.admin import AdminConfig
from sfu_geofence.server.remote import ProxyConfig
from sfu_geofence.server.state import StateConfig
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.process import stop
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.wait import eventually

TOKEN = "hostile-small-ones-operator-token"
PROXY = "127.0.40.2"
DEEP = "[" * 5000 + "]" * 5000
"""Nested deeper than Python's recursion limit, and 10 kB: well under every size limit."""


@pytest.fixture
async def served(database: Path, tmp_path: Path) -> AsyncIterator[Served]:
    config = ServerConfig(
        db_path=str(database),
        admin=AdminConfig(TOKEN),
        proxies=ProxyConfig((PROXY, "10.0.0.5")),
        state=StateConfig(tmp_path / "state"),
    )
    async with geofenced_on_loopback(config) as server:
        yield server


async def _api(served: Served, method: str, path: str, body: str | None = None) -> tuple[int, Any]:
    assert served.admin_base is not None, "the operator API is on the admin listener"
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
        session.request(method, served.admin_base + path, data=body) as response,
    ):
        return response.status, await response.json()


async def test_deeply_nested_json_is_a_malformed_message_and_the_session_goes_on(served: Served) -> None:
    peer = SyntheticPeer(served.url, "room", "127.1.0.10", name="nested")
    try:
        await peer.connect()
        await peer.send_raw(DEEP)
        await eventually(lambda: None if peer.messages else "no answer to the nested message", within=5)
        assert peer.messages[0] == ErrorMessage("malformed-json", "message nests too deeply").to_message()
        await peer.join(publish={})
        assert peer.participant_id is not None
    finally:
        await peer.close()


async def test_a_deeply_nested_operator_request_body_is_a_400(served: Served) -> None:
    status, body = await _api(served, "PUT", "/api/rooms/room/policy", DEEP)
    assert (status, body["error"]) == (400, "malformed_json"), body


class _SurrogateAnswerer(SyntheticPeer):
    """Answers its first offer with an SDP whose mid is a lone surrogate (and no fingerprint)."""

    async def _answer(self, offer: OfferMessage) -> None:
        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        sdp += "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:\ud800\r\n"
        await self.send(Answer(sdp))  # json escapes it: "\ud800"


async def test_a_lone_surrogate_in_an_answer_or_a_name_is_an_invalid_message(served: Served) -> None:
    peer = _SurrogateAnswerer(served.url, "room", "127.1.0.11", name="surrogate")
    try:
        await peer.join(publish={"audio": True})
        await eventually(lambda: None if len(peer.messages) >= 2 else f"messages: {peer.messages}", within=10)
        assert (
            peer.messages[1]
            == ErrorMessage(
                "invalid-message", '"sdp" must be valid Unicode (it has a lone surrogate)'
            ).to_message()
        )
        assert not peer.closed.is_set()
    finally:
        await peer.close()
    named = SyntheticPeer(served.url, "room", "127.1.0.12")
    try:
        await named.connect()
        await named.send(Join("room", "\ud800", frozenset()))
        await eventually(lambda: None if named.messages else "no answer to the join", within=5)
        assert named.messages[0]["code"] == "invalid-message"
    finally:
        await named.close()


async def test_an_audit_page_after_an_id_beyond_sqlite_integers_is_a_bad_parameter(served: Served) -> None:
    status, body = await _api(served, "GET", f"/api/audit?after_id={2**63}")
    assert (status, body["error"]) == (400, "bad_parameter"), body
    status, body = await _api(served, "GET", f"/api/audit?after_id={2**63 - 1}")
    assert (status, body["events"]) == (200, [])


async def test_an_existing_state_directory_and_its_databases_become_the_operators_alone(
    database: Path, tmp_path: Path
) -> None:
    state = tmp_path / "existing-state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    for name in ("policies.sqlite", "audit.sqlite"):
        (state / name).touch()
        os.chmod(state / name, 0o644)
    config = ServerConfig(db_path=str(database), state=StateConfig(state))
    async with geofenced_on_loopback(config) as served:
        served.geofence.set_policy("room", RoomPolicy.deny("CN"))  # writes both databases
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in [state, *state.iterdir()]}
    assert modes.pop("existing-state") == 0o700
    assert {"policies.sqlite", "audit.sqlite"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes  # -wal and -shm files included


async def test_an_ipv4_mapped_forwarded_entry_of_a_trusted_proxy_is_that_proxy(served: Served) -> None:
    served.geofence.set_policy("spoof", RoomPolicy.deny("CN"))
    # A CN client behind a dual-stack proxy 10.0.0.5 (trusted), itself behind 127.0.40.2 (trusted).
    headers = {"X-Forwarded-For": "127.86.0.9, ::ffff:10.0.0.5"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(PROXY, 0))) as session,
        session.ws_connect(served.url, headers=headers) as ws,
    ):
        await ws.send_str(encode(Join("spoof", publish=frozenset())))
        first = json.loads((await ws.receive(timeout=10)).data)
    assert first["type"] == "refused", first
    [event] = served.geofence.audit.events(room="spoof", kind=EventKind.ADMISSION)
    assert (event.address, event.country) == ("127.86.0.9", "CN")


@pytest.mark.slow
async def test_a_media_path_ejection_is_audited_with_the_media_address_and_its_country(
    served: Served,
) -> None:
    served.geofence.set_policy("split", RoomPolicy.deny("CN"))
    # Signaling from US, media from CN: ejected for the media's country.
    peer = SyntheticPeer(
        served.url, "split", "127.1.0.20", media_address="127.86.0.20", tracks=synthetic_tracks()
    )
    try:
        await peer.join()
        await asyncio.wait_for(peer.closed.wait(), 20)
        assert peer.close_code == 4409
    finally:
        await peer.close()
    rows = served.geofence.audit.events(room="split", kind=EventKind.EJECTION)
    assert [row.outcome for row in rows] == ["requested", "completed"]
    assert {(row.address, row.country) for row in rows} == {("127.86.0.20", "CN")}


@pytest.mark.slow
async def test_at_info_the_server_log_holds_no_participant_address() -> None:
    address = "127.0.33.7"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_GEOFENCE_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sfu_geofence", "serve", "--loopback-only", "--port", "0"),
        *("--log-level", "info"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    peer: SyntheticPeer | None = None
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        peer = SyntheticPeer(line.split()[-1], "room", address, tracks=synthetic_tracks())
        await peer.join()  # signaling (the access log) and ICE checks (aioice) from that address
        await eventually(
            lambda: None if peer and peer.pc and peer.pc.connectionState == "connected" else "not connected",
            within=20,
        )
        await peer.leave()
        process.send_signal(signal.SIGTERM)
        stderr = (await asyncio.wait_for(process.stderr.read(), 20)).decode()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if peer is not None:
            await peer.close()
        await stop(process)
    assert "INFO" in stderr  # the log is on
    assert address not in stderr, [line for line in stderr.splitlines() if address in line]


@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_aiohttps_request_error_line_keeps_the_peer_address_for_debug(level: str, shown: bool) -> None:
    # What aiohttp logs when a handler raises, through the logging serve configures, in a process of
    # its own (logging is process-wide).
    script = (
        "import argparse, logging\n"
        "from sfu_geofence.commands.serve import configure_logging\n"
        f"configure_logging(argparse.Namespace(log_level={level!r}))\n"
        "try:\n    raise RuntimeError('boom')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('aiohttp.server').exception('Error handling request from %s', '127.0.33.8')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert "RuntimeError: boom" in result.stderr  # the error and its traceback stay
    assert ("127.0.33.8" in result.stderr) is shown, result.stderr
