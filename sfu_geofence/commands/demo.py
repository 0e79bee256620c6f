"""Run the demo conference server: a video meeting page, an operator console and the embedded database.

Listens on loopback only. A tab can pretend to connect from a sample address of another country
(``?from=CN``, or the page's "Connect as if from" menu): a demo-only mechanism that ``serve`` never has.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
from pathlib import Path

from aiohttp import web

from ..rtc.ice import IcePolicy
from ..server.admin import TOKEN_ENV
from ..server.app import ServerConfig
from ..server.demo import GEOFENCE, DemoConfig, create_demo_app
from ..server.state import StateConfig

NAME = "demo"
HELP = "run the demo video meeting and operator console on 127.0.0.1 (embedded database)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep room policies and the audit log in DIR (default: in memory, gone at exit)",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="(default warning)",
    )


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> DemoConfig:
    """The demo's configuration; the operator token comes from the environment or is made up now."""
    environ = dict(os.environ) if environ is None else environ
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is out of range")
    host = args.host
    return DemoConfig(
        server=ServerConfig(host=host, port=args.port, ice=IcePolicy(bind=(host,))),
        admin_token=environ.get(TOKEN_ENV) or secrets.token_urlsafe(18),
        state=StateConfig(directory=args.state_dir),
    )


async def run_demo(config: DemoConfig) -> None:
    """Serve until SIGINT or SIGTERM; print where to go first."""
    app = create_demo_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    print(
        f"sfu-geofence demo: video meeting and operator console ({app[GEOFENCE].database.label})\n"
        f"  open {base}/  (open it in several tabs; pick 'Connect as if from' to play another country)\n"
        f"  operator console: {base}/console#token={config.admin_token}\n"
        f"  (token: {config.admin_token}; set ${TOKEN_ENV} to choose it)\n"
        "  IP Geolocation by DB-IP (https://db-ip.com)\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(config))
    return 0
