"""The Janus gate for tests, the load tester and benchmarks: served on loopback, and Janus clients
whose signaling comes from a chosen loopback address (a country of a test database).

Inside a LAN namespace (tests marked ``lan``) Janus gathers on the dummy interface only; clients
still reach the gate over loopback, each from an address of its own (``127.86.0.5`` is CN in the
test databases), which is the TCP peer the gate decides on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
from aiohttp import web

from ..janus import JanusSession, VideoRoom
from ..janusgate import GateConfig, JanusGate, running_gate

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServedGate:
    """A gate serving on loopback: its Janus API URL for clients, its admin listener's base URL."""

    gate: JanusGate
    api_url: str
    """``http://127.0.0.1:<port>/janus``: where clients send what they would send Janus."""
    websocket_url: str
    admin_url: str
    """``http://127.0.0.1:<port>``: ``/api`` (operator API) and ``/janus-events`` (event handler)."""


@contextlib.asynccontextmanager
async def serving_gate(config: GateConfig) -> AsyncIterator[ServedGate]:
    """Run the gate of ``config`` on its host, its front and admin listener on their ports (0: free)."""
    config = replace(config, host=HOST)
    async with running_gate(config) as running:
        runners = []
        try:
            bases = []
            for app, port in ((running.front, config.port), (running.admin, config.admin_listener.port)):
                runner = web.AppRunner(app)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(
                    runner, config.admin_listener.host if app is running.admin else HOST, port
                ).start()
                bound_host, bound = runner.addresses[0][:2]
                bases.append(f"http://{bound_host}:{bound}")
            yield ServedGate(
                running.gate,
                f"{bases[0]}/janus",
                bases[0].replace("http://", "ws://") + "/",
                bases[1],
            )
        finally:
            for runner in reversed(runners):
                await runner.cleanup()


@dataclass
class GateClient:
    """One client of the gate: an HTTP client whose connections come from ``address``, its session."""

    address: str
    http: aiohttp.ClientSession
    session: JanusSession

    @property
    def rooms(self) -> VideoRoom:
        return VideoRoom(self.session)


@contextlib.asynccontextmanager
async def gate_client(
    api_url: str, address: str, *, forwarded_for: str | None = None
) -> AsyncIterator[GateClient]:
    """A Janus session through the gate, every connection of it from ``address`` (with an
    ``X-Forwarded-For: forwarded_for`` header on every request if given); destroyed afterwards."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else None
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        session = await JanusSession.create(http, api_url)
        try:
            yield GateClient(address, http, session)
        finally:
            await session.destroy()
