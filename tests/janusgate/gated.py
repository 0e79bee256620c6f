"""What the gate's tests share: the test database's countries, the Janus the module runs, the config."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from sfu_geofence.janus.client import JsonObject
from sfu_geofence.janusgate import GateConfig
from sfu_geofence.rtc.ice import IcePolicy
from sfu_geofence.server.admin_listener import AdminListenerConfig
from sfu_geofence.testing.janus import JanusServer
from sfu_geofence.testing.janusgate import ServedGate
from sfu_geofence.testing.netns import LAN_IPV4, LAN_NETWORKS

TOKEN = "janus-gate-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOM_SECRET = "room-secret"
NETWORKS = {
    "CN": "127.86.0.0/16",
    "HK": "127.85.0.0/16",
    "DE": "127.49.0.0/16",
    "US": "127.1.0.0/16",
}
CN_MEDIA = "198.18.0.86"
"""A LAN address the test database puts in CN: a peer gathering there sends its media from China."""


def address(country: str, n: int) -> str:
    a, b = NETWORKS[country].split(".")[:2]
    return f"{a}.{b}.0.{n}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class GatedJanus:
    """A Janus whose event handler posts to ``events_port`` on 127.0.0.1 (the gate's admin port)."""

    janus: JanusServer
    events_port: int
    database: Path


def gate_config(gated: GatedJanus, **changes: object) -> GateConfig:
    settings: dict[str, object] = {
        "janus_url": gated.janus.api_url,
        "admin_url": gated.janus.admin_url,
        "admin_secret": gated.janus.admin_secret,
        "port": 0,
        "admin_listener": AdminListenerConfig(port=gated.events_port),
        "token": TOKEN,
        "db_path": str(gated.database),
    }
    return GateConfig(**(settings | changes))  # type: ignore[arg-type]


POLICY = IcePolicy(bind=(LAN_IPV4,), allowed_remote=LAN_NETWORKS)
"""Peers gather where Janus does (the dummy's address) and talk to nothing else."""


async def put_policy(
    http: aiohttp.ClientSession, served: ServedGate, room: int, policy: JsonObject
) -> JsonObject:
    """PUT a room's policy through the operator API; its answer (who the change ejected)."""
    async with http.put(f"{served.admin_url}/api/rooms/{room}/policy", json=policy, headers=AUTH) as answer:
        assert answer.status == 200, await answer.text()
        body: JsonObject = await answer.json()
        return body
