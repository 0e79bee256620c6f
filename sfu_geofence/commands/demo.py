"""Run the demo conference server: a video meeting page, an operator console and the embedded database.

Listens on loopback only; its ICE gathers on loopback and this machine's own addresses and accepts media
from those only (:func:`~sfu_geofence.rtc.machine.machine_ice_policy`), so a browser as shipped (which
leaves loopback out of WebRTC) joins, and no other machine ever does. A tab can pretend to connect from
a sample address of another country (``?from=CN``, or the page's "Connect as if from" menu): a
demo-only mechanism that ``serve`` never has.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from .. import eventloop
from ..rtc.machine import machine_ice_policy
from ..server.admin import TOKEN_ENV, AdminConfig
from ..server.admin_listener import DEFAULT_ADMIN_PORT, AdminListenerConfig
from ..server.app import GEOFENCE_HOST, ServerConfig
from ..server.demo import DemoConfig, create_demo_app
from ..server.serve import listeners, run_until_signalled, within_file_budget
from ..server.state import StateConfig
from .serve import (
    add_turn_argument,
    add_turn_relay_argument,
    admin_port,
    configure_logging,
    ice_servers_from_args,
    turn_relays_from_args,
)

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
        "--admin-port",
        type=int,
        help=f"port of the operator console, its API and /metrics, on the same host (default "
        f"{DEFAULT_ADMIN_PORT}, or any free one when --port is 0; 0: any free one)",
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
    add_turn_relay_argument(parser)
    add_turn_argument(parser)
    eventloop.add_uvloop_argument(parser)


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> DemoConfig:
    """The demo's configuration; the operator token comes from the environment or is made up now."""
    environ = os.environ if environ is None else environ
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is out of range")
    host = args.host
    ipaddress.ip_address(host)  # DemoConfig says why anything but loopback is refused
    return DemoConfig(
        ServerConfig(
            host=host,
            port=args.port,
            ice=machine_ice_policy(loopback=host),
            turn_relays=turn_relays_from_args(args, environ),
            ice_servers=ice_servers_from_args(args, environ),
            state=StateConfig(directory=args.state_dir),
            admin=AdminConfig(environ.get(TOKEN_ENV) or secrets.token_urlsafe(18)),
            admin_listener=AdminListenerConfig(host, admin_port(args)),
        )
    )


async def run_demo(config: DemoConfig) -> None:
    """Serve until SIGINT or SIGTERM; print where to go first."""
    config = replace(config, server=within_file_budget(config.server))
    app = create_demo_app(config)
    database = app[GEOFENCE_HOST].geofence.database
    token = config.admin_token
    credit = f"  {database.attribution}\n" if database.attribution else ""

    def announce(bases: list[str]) -> None:
        base, admin = bases
        print(
            f"sfu-geofence demo: video meeting and operator console ({database.label})\n"
            f"  open {base}/  (open it in several tabs; pick 'Connect as if from' to play another country)\n"
            f"  operator console: {admin}/console#token={token}\n"
            f"  (token: {token}; set ${TOKEN_ENV} to choose it)\n"
            f"{credit}"
            "Ctrl-C stops it.",
            flush=True,
        )

    await run_until_signalled(listeners(app, config.server), announce)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    configure_logging(args)
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(run_demo(config), use_uvloop=args.uvloop)
    return 0
