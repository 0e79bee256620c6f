"""Serving the SFU's application on 127.0.0.1 (an ephemeral port) for tests and benches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from aiohttp import web

from ..server import SFU, ServerConfig, create_app
from ..sfu import AdmissionHook, Sfu, SfuObserver


@dataclass
class Served:
    """A running server: where to connect, and the SFU inside it."""

    url: str
    """The signaling WebSocket URL."""
    sfu: Sfu
    app: web.Application


@asynccontextmanager
async def served_on_loopback(
    config: ServerConfig | None = None,
    admission: AdmissionHook | None = None,
    observers: Iterable[SfuObserver] = (),
) -> AsyncIterator[Served]:
    """Run the application in this event loop on 127.0.0.1 and an ephemeral port; clean up after."""
    config = replace(config or ServerConfig(), host="127.0.0.1", port=0)
    app = create_app(config, admission=admission, observers=observers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
        port = runner.addresses[0][1]
        yield Served(url=f"http://{config.host}:{port}/ws", sfu=app[SFU], app=app)
    finally:
        await runner.cleanup()
