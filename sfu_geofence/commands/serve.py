"""``sfu-geofence serve``: run the SFU with WebSocket signaling, the geofence and the operator API.

Every flag has an environment variable (the flag wins). Defaults keep everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from .. import eventloop
from ..core.addresses import IPNetwork
from ..protocol import IceServer
from ..rtc.ice import LOOPBACK_NETWORKS, IcePolicy, networks
from ..server.admin import TOKEN_ENV, AdminConfig
from ..server.admin_listener import DEFAULT_ADMIN_PORT, AdminListenerConfig
from ..server.app import ServerConfig
from ..server.caps import Caps
from ..server.logs import keep_addresses_at_debug
from ..server.remote import ProxyConfig
from ..server.serve import serve
from ..server.state import StateConfig

NAME = "serve"
HELP = "run the geofenced SFU (WebSocket signaling on /ws; operator API and metrics on the admin port)"

ENV_HOST = "SFU_GEOFENCE_HOST"
ENV_PORT = "SFU_GEOFENCE_PORT"
ENV_ICE_ADDRESSES = "SFU_GEOFENCE_ICE_ADDRESSES"
ENV_ALLOW_REMOTE = "SFU_GEOFENCE_ALLOW_REMOTE"
ENV_TURN_RELAY = "SFU_GEOFENCE_TURN_RELAY"
ENV_TURN = "SFU_GEOFENCE_TURN"
ENV_TURN_USERNAME = "SFU_GEOFENCE_TURN_USERNAME"
ENV_TURN_CREDENTIAL = "SFU_GEOFENCE_TURN_CREDENTIAL"
ENV_DB = "SFU_GEOFENCE_DB"
ENV_LOG_LEVEL = "SFU_GEOFENCE_LOG_LEVEL"
ENV_LOOPBACK_ONLY = "SFU_GEOFENCE_LOOPBACK_ONLY"
ENV_ADMIN_TOKEN = TOKEN_ENV
ENV_TRUSTED_PROXIES = "SFU_GEOFENCE_TRUSTED_PROXIES"
ENV_STATE_DIR = "SFU_GEOFENCE_STATE_DIR"
ENV_AUDIT_SYNC = "SFU_GEOFENCE_AUDIT_SYNC"
ENV_REDIS = "SFU_GEOFENCE_REDIS"
ENV_NODE_ID = "SFU_GEOFENCE_NODE_ID"
ENV_ADVERTISE_URL = "SFU_GEOFENCE_ADVERTISE_URL"
ENV_WORKERS = "SFU_GEOFENCE_WORKERS"
ENV_ADMIN_HOST = "SFU_GEOFENCE_ADMIN_HOST"
ENV_ADMIN_PORT = "SFU_GEOFENCE_ADMIN_PORT"
CAP_ENV_PREFIX = "SFU_GEOFENCE_CAP_"
"""``--cap-websockets-per-address`` reads ``SFU_GEOFENCE_CAP_WEBSOCKETS_PER_ADDRESS``, and so on."""

ENV_DRAIN_TIMEOUT = "SFU_GEOFENCE_DRAIN_TIMEOUT"
ENV_DB_WATCH = "SFU_GEOFENCE_DB_WATCH"
ENV_AUDIT_RETENTION = "SFU_GEOFENCE_AUDIT_RETENTION"
ENV_RENEGOTIATE_ON_LEAVE = "SFU_GEOFENCE_RENEGOTIATE_ON_LEAVE"

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


def add_turn_argument(parser: argparse.ArgumentParser) -> None:
    """``--turn URL`` (repeatable), shared by ``serve`` and ``demo``: handed to every client in ``joined``."""
    parser.add_argument(
        "--turn",
        action="append",
        dest="turn_urls",
        metavar="URL",
        help=f"TURN (or STUN) server browsers are told to use, e.g. turn:turn.example.org:3478; repeatable "
        f"(${ENV_TURN}, comma-separated). Its long-term credential comes from ${ENV_TURN_USERNAME} and "
        f"${ENV_TURN_CREDENTIAL} only (argv is public). Declare its relay addresses with --turn-relay",
    )


def ice_servers_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> tuple[IceServer, ...]:
    """The ``--turn`` servers with the environment's credential; ValueError names what is wrong."""
    environ = os.environ if environ is None else environ
    urls = args.turn_urls or _listed(ENV_TURN, environ) or ()
    username = environ.get(ENV_TURN_USERNAME) or None
    credential = environ.get(ENV_TURN_CREDENTIAL) or None
    try:
        return tuple(
            IceServer(url, username, credential) if url.startswith("turn") else IceServer(url) for url in urls
        )
    except ValueError as exc:
        raise ValueError(f"--turn: {exc} (set ${ENV_TURN_USERNAME} and ${ENV_TURN_CREDENTIAL})") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags of ``serve`` (defaults come from the environment, then from here)."""
    parser.add_argument(
        "--host", default=os.environ.get(ENV_HOST, "127.0.0.1"), help=f"listen address (${ENV_HOST})"
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get(ENV_PORT, "8080")), help=f"listen port (${ENV_PORT})"
    )
    parser.add_argument(
        "--admin-host",
        default=os.environ.get(ENV_ADMIN_HOST, "127.0.0.1"),
        help=f"listen address of the operator API and /metrics (${ENV_ADMIN_HOST}; default 127.0.0.1)",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=int(os.environ[ENV_ADMIN_PORT]) if os.environ.get(ENV_ADMIN_PORT) else None,
        help=f"port of the operator API and /metrics (${ENV_ADMIN_PORT}; default {DEFAULT_ADMIN_PORT}, "
        "or any free one when --port is 0; 0: any free one)",
    )
    add_cap_arguments(parser)
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
    add_turn_argument(parser)
    parser.add_argument("--db", default=os.environ.get(ENV_DB), help=f"geolocation database path (${ENV_DB})")
    _seconds(
        parser,
        "--db-watch",
        ENV_DB_WATCH,
        ServerConfig.db_watch_interval,
        "look at the --db file this often and reload it when it is replaced; 0: never",
    )
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
    _seconds(
        parser,
        "--drain-timeout",
        ENV_DRAIN_TIMEOUT,
        ServerConfig.drain_timeout,
        "on SIGTERM: seconds to tell everyone and flush the audit before exiting",
    )
    parser.add_argument(
        "--audit-retention",
        type=float,
        default=float(os.environ[ENV_AUDIT_RETENTION]) if os.environ.get(ENV_AUDIT_RETENTION) else None,
        metavar="DAYS",
        help=f"delete audit events older than this many days (${ENV_AUDIT_RETENTION}; default: keep all)",
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
        "--node-id",
        default=os.environ.get(ENV_NODE_ID, ""),
        help=f"this node's name in a cluster (${ENV_NODE_ID}; default HOSTNAME:PORT of the public listener)",
    )
    parser.add_argument(
        "--advertise-url",
        default=os.environ.get(ENV_ADVERTISE_URL) or None,
        metavar="URL",
        help=f"this node's public signaling URL, which other nodes name in the redirect for the rooms it "
        f"hosts (${ENV_ADVERTISE_URL}; default ws://HOST:PORT/ws of the public listener)",
    )
    parser.add_argument(
        "--workers",
        type=workers_count,
        default=os.environ.get(ENV_WORKERS, "1"),
        metavar="N|auto",
        help=f"SFU processes sharing one Redis, each on its own ports (--port + i, admin port + i): one "
        f"command uses every core. Without --redis, a private redis-server (persisting into --state-dir) "
        f"is started and stopped with them. auto: one per core (${ENV_WORKERS}; default 1: this process "
        "alone, no Redis unless --redis)",
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
    parser.add_argument(
        "--renegotiate-on-leave",
        action="store_true",
        default=os.environ.get(ENV_RENEGOTIATE_ON_LEAVE, "") not in ("", "0"),
        help=f"when someone leaves or is ejected, send everyone else an offer that only marks the "
        f"leaver's m-lines inactive (${ENV_RENEGOTIATE_ON_LEAVE}; default: they go inactive in the "
        "next offer made for another reason, a join's, so that a removal costs the others no "
        "renegotiation)",
    )
    eventloop.add_uvloop_argument(parser)


configure = add_arguments


def _seconds(parser: argparse.ArgumentParser, flag: str, env: str, default: float, text: str) -> None:
    parser.add_argument(
        flag,
        type=float,
        default=float(os.environ.get(env, default)),
        metavar="SECONDS",
        help=f"{text} (${env}; default {default:g})",
    )


def add_cap_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`Caps`: ``--cap-NAME`` (and ``SFU_GEOFENCE_CAP_NAME``)."""
    defaults = Caps()
    group = parser.add_argument_group("admission control (docs/operations.md)")
    for item in fields(Caps):
        group.add_argument(
            f"--cap-{item.name.replace('_', '-')}",
            dest=f"cap_{item.name}",
            type=_cap_type(item.name),
            metavar="N",
            help=f"(${CAP_ENV_PREFIX}{item.name.upper()}; default {getattr(defaults, item.name)})",
        )


def _cap_type(name: str) -> type[float] | type[int]:
    return float if name == "join_rate" else int


def caps_from_args(args: argparse.Namespace) -> Caps:
    """The caps: each flag, else its environment variable, else the default; ValueError names a bad one."""
    values: dict[str, float] = {}
    for item in fields(Caps):
        given = getattr(args, f"cap_{item.name}", None)
        env = CAP_ENV_PREFIX + item.name.upper()
        if given is None and os.environ.get(env):
            try:
                given = _cap_type(item.name)(os.environ[env])
            except ValueError:
                raise ValueError(f"${env}: {os.environ[env]!r} is not a number") from None
        if given is not None:
            values[item.name] = given
    return Caps(**values)  # type: ignore[arg-type]


def workers_count(text: str) -> int:
    """``--workers``: a positive number, or ``auto`` (the cores this process may run on)."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) or 1
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of workers, or auto") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count}: at least 1 worker")
    return count


def admin_port(args: argparse.Namespace) -> int:
    """``--admin-port``; without it, the default port, or any free one when ``--port`` is 0 (tests,
    several servers on one machine: two fixed admin ports would collide). With ``--workers N`` (N > 1)
    the admin ports follow the N public ones by default: ``--port + N`` onwards."""
    if args.admin_port is not None:
        return int(args.admin_port)
    if args.port == 0:
        return 0
    workers = getattr(args, "workers", 1)
    return args.port + workers if workers > 1 else DEFAULT_ADMIN_PORT


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Validate the flags into a configuration; raises ValueError naming what is wrong."""
    ice_addresses = args.ice_addresses or _listed(ENV_ICE_ADDRESSES) or ["127.0.0.1"]
    allow_remote = args.allow_remote or _listed(ENV_ALLOW_REMOTE) or list(DEFAULT_ALLOW_REMOTE)
    if args.loopback_only:
        for address in [args.host, args.admin_host, *ice_addresses]:
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
        ice_servers=ice_servers_from_args(args),
        db_path=args.db,
        proxies=ProxyConfig(tuple(args.trusted_proxies or _listed(ENV_TRUSTED_PROXIES) or ())),
        state=StateConfig(
            Path(args.state_dir) if args.state_dir else None,
            audit_synchronous=args.audit_sync,
            audit_retention_days=args.audit_retention,
        ),
        admin=AdminConfig.from_env(args.admin_token),
        redis_url=args.redis,
        node_id=args.node_id,
        advertise_url=args.advertise_url,
        drain_timeout=args.drain_timeout,
        db_watch_interval=args.db_watch,
        admin_listener=AdminListenerConfig(args.admin_host, admin_port(args)),
        caps=caps_from_args(args),
        fold_retirements=not args.renegotiate_on_leave,
    )


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
    """Run ``serve``; returns the exit status: 0 after a complete drain, 1 when it was cut short."""
    config = config_from_args(args)
    configure_logging(args)
    if args.workers > 1:
        from ..server.workers import Supervisor

        supervisor = Supervisor(
            config,
            args.workers,
            use_uvloop=args.uvloop,
            configure_logging=functools.partial(configure_logging, args),
        )
        return eventloop.run(supervisor.run(), use_uvloop=args.uvloop)
    drained = True
    with contextlib.suppress(KeyboardInterrupt):
        drained = eventloop.run(serve(config), use_uvloop=args.uvloop)
    return 0 if drained else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfu-geofence serve", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
