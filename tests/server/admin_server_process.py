"""A geofence with its state on disk and the operator API on 127.0.0.1, in a process of its own.

The durability tests start it, talk to it over HTTP, and kill it (``kill -9``) or stop it (SIGTERM).
Usage: ``admin_server_process.py STATE_DIR DATABASE TOKEN FULL|NORMAL``; prints ``listening PORT``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import cast

from aiohttp import web

from sfu_geofence import Geofence
from sfu_geofence.core.storage import Synchronous
from sfu_geofence.server.admin import create_admin_app
from sfu_geofence.server.state import StateConfig


async def main(state_dir: str, database: str, token: str, synchronous: str) -> None:
    state = StateConfig(Path(state_dir), audit_synchronous=cast(Synchronous, synchronous))
    fence = Geofence(
        lambda request: None, database=database, policies=state.open_policies(), audit=state.open_audit()
    )
    app = web.Application()
    app.add_subapp("/api", create_admin_app(fence, None, token))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"listening {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    fence.close()
    print("closed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
