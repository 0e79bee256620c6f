"""``sfu-geofence serve``: run the SFU with WebSocket signaling, the geofence and the operator API.

Every flag has an environment variable (the flag wins). Defaults keep everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from aiohttp import web

from ..rtc.ice import LOOPBACK_NETWORKS, IcePolicy, IPNetwork, networks
from .admin import TOKEN_ENV, AdminConfig
from .app import ServerConfig, create_geofenced_app
from .logs import keep_addresses_at_debug
from .remote import ProxyConfig
from .state import StateConfig

NAME = "serve"
HELP = "run the geofenced SFU (WebSocket signaling on /ws, operator API on /api)"

ENV_HOST = "SFU_GEOFENCE_HOST"
ENV_PORT = "SFU_GEOFENCE_PORT"
ENV_ICE_ADDRESSES = "SFU_GEOFENCE_ICE_ADDRESSES"
ENV_ALLOW_REMOTE = "SFU_GEOFENCE_ALLOW_REMOTE"
ENV_TURN_RELAY = "SFU_GEOFENCE_TURN_RELAY"
ENV_DB = "SFU_GEOFENCE_DB"
ENV_LOG_LEVEL = "SFU_GEOFENCE_LOG_LEVEL"
ENV_LOOPBACK_ONLY = "SFU_GEOFENCE_LOOPBACK_ONLY"
ENV_ADMIN_TOKEN = TOKEN_ENV
ENV_TRUSTED_PROXIES = "SFU_GEOFENCE_TRUSTED_PROXIES"
ENV_STATE_DIR = "SFU_GEOFENCE_STATE_DIR"
ENV_AUDIT_SYNC = "SFU_GEOFENCE_AUDIT_SYNC"
ENV_REDIS = "SFU_GEOFENCE_REDIS"

DEFAULT_ALLOW_REMOTE = tuple(str(n) for n in LOOPBACK_NETWORKS)


def _listed(name: str, environ: Mapping[str, str] | None = None) -> list[str] | None:
    value = (os.environ if environ is None else environ).get(name, "")
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items or None


def add_turn_relay_argument(parser: argparse.ArgumentParser) -> None:
    """``--turn-relay NETWORK`` (repeatable), shared by ``serve`` and ``demo``."""
    parser.add_argument(
        "--turn-relay",
        action="append",
        dest="turn_relays",
        metavar="NETWORK",
        help=f"relay addresses of a TURN server you run: media from there is relayed media (the room's "
        f"'relayed' rule decides it); repeatable (${ENV_TURN_RELAY}, comma-separated; default none: "
        "every candidate, whatever its type, is decided on its address)",
    )


def turn_relays_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[IPNetwork, ...]:
    """The declared TURN relay networks: the flags, else the environment; ValueError names a bad one."""
    return networks(args.turn_relays or _listed(ENV_TURN_RELAY, environ) or ())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of ``serve`` (defaults come from the environment, then from here)."""
    parser.add_argument(
        "--host", default=os.environ.get(ENV_HOST, "127.0.0.1"), help=f"listen address (${ENV_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get(ENV_PORT, "8080")), help=f"listen port (${ENV_PORT})"
    )
    parser.add_argument(
        "--ice-address",
        action="append",
        dest="ice_addresses",
        metavar="ADDRESS",
        help=f"address ICE binds and announces; repeatable (${ENV_ICE_ADDRESSES}, comma-separated; "
        "default 127.0.0.1)",
    )
    parser.add_argument(
        "--allow-remote",
        action="append",
        metavar="NETWORK",
        help=f"network media may come from; repeatable (${ENV_ALLOW_REMOTE}; default loopback only)",
    )
    add_turn_relay_argument(parser)
    parser.add_argument("--db", default=os.environ.get(ENV_DB), help=f"geolocation database path (${ENV_DB})")
    parser.add_argument(
        "--admin-token",
        help=f"bearer token of the operator API under /api; prefer ${ENV_ADMIN_TOKEN} (argv is public). "
        "Without one the API is not mounted",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        dest="trusted_proxies",
        metavar="ADDRESS_OR_NETWORK",
        help=f"reverse proxy whose X-Forwarded-For is believed; repeatable (${ENV_TRUSTED_PROXIES}, "
        "comma-separated; default: trust nobody)",
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get(ENV_STATE_DIR),
        help=f"directory of policies.sqlite and audit.sqlite (${ENV_STATE_DIR}; default: in memory, "
        "lost at exit)",
    )
    parser.add_argument(
        "--audit-sync",
        default=os.environ.get(ENV_AUDIT_SYNC, "NORMAL").upper(),
        type=str.upper,
        choices=["FULL", "NORMAL"],
        help=f"SQLite synchronous setting of the audit log (${ENV_AUDIT_SYNC}; default NORMAL: survives "
        "a crash, FULL: also a power cut)",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get(ENV_REDIS) or None,
        metavar="URL",
        help=f"keep policies in this Redis (redis://host:port/db), shared by every node given the same "
        f"one; a change through any node is enforced on all (${ENV_REDIS}; default: policies in "
        "--state-dir, this process only)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get(ENV_LOG_LEVEL, "info"),
        choices=["debug", "info", "warning", "error"],
        help=f"(${ENV_LOG_LEVEL})",
    )
    parser.add_argument(
        "--loopback-only",
        action="store_true",
        default=os.environ.get(ENV_LOOPBACK_ONLY, "") not in ("", "0"),
        help=f"refuse to listen or bind ICE outside 127.0.0.0/8 and ::1 (${ENV_LOOPBACK_ONLY})",
    )


configure = add_arguments


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Validate the flags into a configuration; raises ValueError naming what is wrong."""
    ice_addresses = args.ice_addresses or _listed(ENV_ICE_ADDRESSES) or ["127.0.0.1"]
    allow_remote = args.allow_remote or _listed(ENV_ALLOW_REMOTE) or list(DEFAULT_ALLOW_REMOTE)
    if args.loopback_only:
        for address in [args.host, *ice_addresses]:
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"--loopback-only: {address} is not a loopback address")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is out of range")
    if args.redis is not None:
        from ..cluster.redisstore import describe_url

        describe_url(args.redis)  # a URL Redis's client can use, or ValueError naming the schemes
    return ServerConfig(
        host=args.host,
        port=args.port,
        ice=IcePolicy.from_strings(ice_addresses, allow_remote),
        turn_relays=turn_relays_from_args(args),
        db_path=args.db,
        proxies=ProxyConfig(tuple(args.trusted_proxies or _listed(ENV_TRUSTED_PROXIES) or ())),
        state=StateConfig(
            Path(args.state_dir) if args.state_dir else None, audit_synchronous=args.audit_sync
        ),
        admin=AdminConfig.from_env(args.admin_token),
        redis_url=args.redis,
    )


async def serve(config: ServerConfig) -> None:
    """Serve until SIGINT or SIGTERM, then close every participant."""

    def announce(base: str) -> None:
        print(f"listening on {base}/ws", flush=True)

    if config.redis_url is None:
        await run_app_until_signalled(create_geofenced_app(config), config.host, config.port, announce)
        return
    from ..cluster.redisstore import RedisPolicyStore  # only a cluster node needs the client

    store = await RedisPolicyStore.open(config.redis_url)  # unreachable: StorageError, exit 2
    try:
        app = create_geofenced_app(config, policies=store)
        await run_app_until_signalled(app, config.host, config.port, announce)
    finally:
        await store.aclose()


async def run_app_until_signalled(
    app: web.Application, host: str, port: int, announce: Callable[[str], None]
) -> None:
    """Serve ``app`` on ``host:port`` until SIGINT or SIGTERM, then clean it up (closing everyone).

    ``announce`` is called once listening, with the base URL (``http://host:port``, the port the
    system picked when ``port`` is 0): what ``serve`` and ``demo`` print.
    """
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # Everything allocated so far lives as long as the process: keep it out of the cyclic
        # collector's full collections, which otherwise pause every participant's media while they
        # walk it.
        gc.freeze()
        bound_host, bound_port = runner.addresses[0][:2]
        announce(f"http://{_url_host(bound_host)}:{bound_port}")
        await stop.wait()
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def configure_logging(args: argparse.Namespace) -> None:
    """Log at ``--log-level`` (``-v``: debug) with timestamps, for the commands that run a server.

    Participants' addresses are for operators (the operator API and the audit), so they are logged
    at DEBUG only (:func:`~sfu_geofence.server.logs.keep_addresses_at_debug`).
    """
    # force: the top-level command has configured logging already (-v or warnings only), which would
    # make this call a no-op.
    level = "DEBUG" if getattr(args, "verbose", False) else args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    keep_addresses_at_debug(level == "DEBUG")


def run(args: argparse.Namespace) -> int:
    """Run ``serve``; returns the exit status."""
    config = config_from_args(args)
    configure_logging(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfu-geofence serve", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
