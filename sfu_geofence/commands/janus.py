"""``sfu-geofence janus``: the geofence in front of an unmodified Janus (docs/janus.md).

Clients reach the gate (Janus's HTTP API under ``/janus``, its WebSocket API on ``/``) instead of
Janus; Janus's own API and Admin API stay on addresses only the gate reaches. Every flag has an
environment variable (the flag wins); the Admin API's secret and the operator token come from the
environment only (argv is public).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..janusgate import GateConfig, running_gate
from ..server.admin import TOKEN_ENV, AdminConfig
from ..server.admin_listener import DEFAULT_ADMIN_PORT, AdminListenerConfig
from ..server.remote import ProxyConfig
from ..server.serve import Listener, run_until_signalled
from ..server.state import StateConfig
from .serve import (
    ENV_ADMIN_HOST,
    ENV_ADMIN_PORT,
    ENV_AUDIT_SYNC,
    ENV_DB,
    ENV_STATE_DIR,
    ENV_TRUSTED_PROXIES,
    _listed,
    add_turn_relay_argument,
    configure_logging,
    turn_relays_from_args,
)

NAME = "janus"
HELP = "geofence an existing Janus: a front for its HTTP and WebSocket API that decides VideoRoom joins"

ENV_JANUS_URL = "SFU_GEOFENCE_JANUS_URL"
ENV_JANUS_ADMIN_URL = "SFU_GEOFENCE_JANUS_ADMIN_URL"
ENV_JANUS_ADMIN_SECRET = "SFU_GEOFENCE_JANUS_ADMIN_SECRET"
ENV_GATE_HOST = "SFU_GEOFENCE_JANUS_GATE_HOST"
ENV_GATE_PORT = "SFU_GEOFENCE_JANUS_GATE_PORT"
ENV_LOG_LEVEL = "SFU_GEOFENCE_LOG_LEVEL"
DEFAULT_GATE_PORT = 8089


def configure(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--janus-url",
        default=env(ENV_JANUS_URL, "http://127.0.0.1:8088/janus"),
        help=f"Janus's HTTP API, reachable by the gate only (${ENV_JANUS_URL}; default %(default)s)",
    )
    parser.add_argument(
        "--janus-admin-url",
        default=env(ENV_JANUS_ADMIN_URL, "http://127.0.0.1:7088/admin"),
        help=f"Janus's Admin API; its admin_secret in ${ENV_JANUS_ADMIN_SECRET} "
        f"(${ENV_JANUS_ADMIN_URL}; default %(default)s)",
    )
    parser.add_argument(
        "--host", default=env(ENV_GATE_HOST, "127.0.0.1"), help=f"where clients connect (${ENV_GATE_HOST})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env(ENV_GATE_PORT, str(DEFAULT_GATE_PORT))),
        help=f"(${ENV_GATE_PORT}; default {DEFAULT_GATE_PORT})",
    )
    parser.add_argument(
        "--admin-host",
        default=env(ENV_ADMIN_HOST, "127.0.0.1"),
        help=f"operator API (/api) and Janus's event handler (/janus-events) (${ENV_ADMIN_HOST})",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=int(env(ENV_ADMIN_PORT, str(DEFAULT_ADMIN_PORT))),
        help=f"(${ENV_ADMIN_PORT}; default {DEFAULT_ADMIN_PORT})",
    )
    parser.add_argument("--db", default=env(ENV_DB), help=f"geolocation database path (${ENV_DB})")
    parser.add_argument(
        "--state-dir",
        default=env(ENV_STATE_DIR),
        help=f"policies and audit (${ENV_STATE_DIR}; default: memory)",
    )
    parser.add_argument(
        "--audit-sync",
        default=env(ENV_AUDIT_SYNC, "NORMAL").upper(),
        type=str.upper,
        choices=["FULL", "NORMAL"],
        help=f"(${ENV_AUDIT_SYNC})",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        dest="trusted_proxies",
        metavar="ADDRESS_OR_NETWORK",
        help=f"reverse proxy whose X-Forwarded-For is believed; repeatable (${ENV_TRUSTED_PROXIES})",
    )
    add_turn_relay_argument(parser)
    parser.add_argument(
        "--log-level",
        default=env(ENV_LOG_LEVEL, "info"),
        choices=["debug", "info", "warning", "error"],
        help=f"(${ENV_LOG_LEVEL})",
    )


def config_from_args(args: argparse.Namespace) -> GateConfig:
    """Validate the flags into a configuration; raises ValueError naming what is wrong."""
    secret = os.environ.get(ENV_JANUS_ADMIN_SECRET)
    if not secret:
        raise ValueError(
            f"set ${ENV_JANUS_ADMIN_SECRET} to Janus's admin_secret: ejections go through its Admin API"
        )
    return GateConfig(
        janus_url=args.janus_url,
        admin_url=args.janus_admin_url,
        admin_secret=secret,
        host=args.host,
        port=args.port,
        admin_listener=AdminListenerConfig(args.admin_host, args.admin_port),
        token=AdminConfig.from_env(None).token,
        db_path=args.db,
        state=StateConfig(
            Path(args.state_dir) if args.state_dir else None, audit_synchronous=args.audit_sync
        ),
        proxies=ProxyConfig(tuple(args.trusted_proxies or _listed(ENV_TRUSTED_PROXIES) or ())),
        turn_relays=turn_relays_from_args(args),
    )


async def serve_gate(config: GateConfig) -> bool:
    """Serve the gate until SIGINT or SIGTERM."""
    async with running_gate(config) as running:
        admin = config.admin_listener

        def announce(bases: list[str]) -> None:
            front, back = bases
            websocket = front.replace("http", "ws", 1)
            print(f"janus gate listening on {front}/janus (HTTP) and {websocket}/ (WebSocket)")
            print(f"admin listening on {back} (operator API {back}/api, Janus events {back}/janus-events)")
            sys.stdout.flush()

        return await run_until_signalled(
            [
                Listener(running.front, config.host, config.port),
                Listener(running.admin, admin.host, admin.port),
            ],
            announce,
        )


def run(args: argparse.Namespace) -> int:
    configure_logging(args)
    config = config_from_args(args)
    if config.token is None:
        print(f"no ${TOKEN_ENV}: the operator API is not mounted", file=sys.stderr)
    return 0 if asyncio.run(serve_gate(config)) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"sfu-geofence {NAME}")
    configure(parser)
    return run(parser.parse_args(argv))
