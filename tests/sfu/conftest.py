"""An SFU served on 127.0.0.1 for integration tests with real aiortc peers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from sfu_geofence.server import SFU, ServerConfig, create_app
from sfu_geofence.sfu import Sfu


@dataclass
class Served:
    url: str
    sfu: Sfu
    app: web.Application


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    app = create_app(ServerConfig(host="127.0.0.1", port=0))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Served(url=f"http://127.0.0.1:{port}/ws", sfu=app[SFU], app=app)
    finally:
        await runner.cleanup()
