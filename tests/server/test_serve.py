"""``sfu-geofence serve``: flags, environment, and a real server process on loopback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import netaddr
import pytest
from aiohttp import web
from mmdb_writer import MMDBWriter

from sfu_geofence.cli import main
from sfu_geofence.commands.serve import add_arguments, config_from_args
from sfu_geofence.core.errors import ClosedError
from sfu_geofence.protocol import ClosingMessage, IceServer
from sfu_geofence.server import GEOFENCE_HOST, ServerConfig, create_geofenced_app
from sfu_geofence.server.caps import Caps
from sfu_geofence.server.serve import Listener, run_until_signalled
from sfu_geofence.server.state import StateConfig
from sfu_geofence.synthetic.client import SyntheticPeer, everyone_receives, synthetic_tracks
from sfu_geofence.testing.process import spawn_module, spawn_serve, stop
from sfu_geofence.testing.wait import eventually


def _config(argv: list[str]) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_defaults_keep_everything_on_127_0_0_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SFU_GEOFENCE_"):
            monkeypatch.delenv(name)
    config = _config([])
    assert (config.host, config.port, config.ice.bind, config.db_path) == (
        "127.0.0.1",
        8080,
        ("127.0.0.1",),
        None,
    )
    assert config.ice.allowed_remote == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


def test_environment_variables_set_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SFU_GEOFENCE_HOST", "127.0.0.2")
    monkeypatch.setenv("SFU_GEOFENCE_PORT", "9000")
    monkeypatch.setenv("SFU_GEOFENCE_ICE_ADDRESSES", "127.0.0.3, 127.0.0.4")
    monkeypatch.setenv("SFU_GEOFENCE_ALLOW_REMOTE", "127.0.0.0/16")
    monkeypatch.setenv("SFU_GEOFENCE_DB", "/tmp/geo.mmdb")
    config = _config(["--port", "9001"])
    assert config.host == "127.0.0.2"
    assert config.port == 9001
    assert config.ice.bind == ("127.0.0.3", "127.0.0.4")
    assert config.ice.allowed_remote == (ipaddress.ip_network("127.0.0.0/16"),)
    assert config.db_path == "/tmp/geo.mmdb"
    assert _config(["--ice-address", "127.0.0.9"]).ice.bind == ("127.0.0.9",)


def test_redis_is_off_unless_a_flag_or_the_environment_names_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SFU_GEOFENCE_REDIS", raising=False)
    assert _config([]).redis_url is None
    monkeypatch.setenv("SFU_GEOFENCE_REDIS", "redis://127.0.0.1:6390/1")
    assert _config([]).redis_url == "redis://127.0.0.1:6390/1"
    assert _config(["--redis", "redis://127.0.0.1:6391/0"]).redis_url == "redis://127.0.0.1:6391/0"


def test_the_node_id_and_advertised_url_come_from_flags_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SFU_GEOFENCE_NODE_ID", raising=False)
    monkeypatch.delenv("SFU_GEOFENCE_ADVERTISE_URL", raising=False)
    assert (_config([]).node_id, _config([]).advertise_url) == ("", None)  # HOSTNAME:PORT once bound
    monkeypatch.setenv("SFU_GEOFENCE_NODE_ID", "sfu-2")
    monkeypatch.setenv("SFU_GEOFENCE_ADVERTISE_URL", "wss://sfu-2.example.org/ws")
    assert (_config([]).node_id, _config([]).advertise_url) == ("sfu-2", "wss://sfu-2.example.org/ws")
    flags = ["--node-id", "sfu-3:8080", "--advertise-url", "ws://127.0.0.1:8080/ws"]
    assert (_config(flags).node_id, _config(flags).advertise_url) == ("sfu-3:8080", "ws://127.0.0.1:8080/ws")


def test_geofence_flags_and_their_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SFU_GEOFENCE_"):
            monkeypatch.delenv(name)
    plain = _config([])
    assert (plain.admin.token, plain.proxies.trusted, plain.state.directory) == (None, (), None)
    assert plain.state.audit_synchronous == "NORMAL"
    config = _config(
        [
            "--admin-token",
            "flag-token-0123456789",
            "--trusted-proxy",
            "127.0.0.5",
            "--trusted-proxy",
            "10.0.0.0/24",
            "--state-dir",
            str(tmp_path),
            "--audit-sync",
            "full",
        ]
    )
    assert config.admin.token == "flag-token-0123456789"
    assert config.proxies.trusted == ("127.0.0.5/32", "10.0.0.0/24")
    assert (config.state.directory, config.state.audit_synchronous) == (tmp_path, "FULL")
    monkeypatch.setenv("SFU_GEOFENCE_ADMIN_TOKEN", "env-token-0123456789")
    monkeypatch.setenv("SFU_GEOFENCE_TRUSTED_PROXIES", "127.0.0.6, 127.0.0.7")
    monkeypatch.setenv("SFU_GEOFENCE_STATE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("SFU_GEOFENCE_AUDIT_SYNC", "FULL")
    config = _config([])
    assert config.admin.token == "env-token-0123456789"
    assert config.proxies.trusted == ("127.0.0.6/32", "127.0.0.7/32")
    assert (config.state.directory, config.state.audit_synchronous) == (tmp_path / "env", "FULL")
    assert _config(["--admin-token", "flag-token-0123456789"]).admin.token == "flag-token-0123456789"


def test_a_leave_renegotiates_nobody_unless_told_by_flag_or_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # By default a leaver's m-lines go inactive in the others' next offer made for another reason;
    # --renegotiate-on-leave (or its variable) makes an offer of its own, as before issue 12.
    monkeypatch.delenv("SFU_GEOFENCE_RENEGOTIATE_ON_LEAVE", raising=False)
    assert _config([]).fold_retirements
    assert not _config(["--renegotiate-on-leave"]).fold_retirements
    monkeypatch.setenv("SFU_GEOFENCE_RENEGOTIATE_ON_LEAVE", "1")
    assert not _config([]).fold_retirements
    monkeypatch.setenv("SFU_GEOFENCE_RENEGOTIATE_ON_LEAVE", "0")
    assert _config([]).fold_retirements


def test_turn_relays_are_declared_by_repeated_flags_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("SFU_GEOFENCE_"):
            monkeypatch.delenv(name)
    assert (_config([]).turn_relays, _config([]).ice.relay_networks) == ((), ())
    flagged = _config(["--turn-relay", "127.0.0.7", "--turn-relay", "::1"])
    expected = (ipaddress.ip_network("127.0.0.7/32"), ipaddress.ip_network("::1/128"))
    assert (flagged.turn_relays, flagged.ice.relay_networks) == (expected, expected)
    monkeypatch.setenv("SFU_GEOFENCE_TURN_RELAY", "127.0.0.8/31, 127.0.0.9")
    assert _config([]).turn_relays == (
        ipaddress.ip_network("127.0.0.8/31"),
        ipaddress.ip_network("127.0.0.9/32"),
    )
    assert _config(["--turn-relay", "127.0.0.7"]).turn_relays == (ipaddress.ip_network("127.0.0.7/32"),)


def test_ipv4_mapped_networks_in_flags_are_the_ipv4_networks_they_name() -> None:
    # Remote and forwarded addresses are compared unmapped (::ffff:a.b.c.d as a.b.c.d): a network
    # written IPv4-mapped would never have matched anything.
    config = _config(
        [
            "--turn-relay",
            "::ffff:127.0.0.7",
            "--allow-remote",
            "::ffff:127.0.0.0/104",
            "--trusted-proxy",
            "::ffff:127.0.0.6/127",
        ]
    )
    relay = ipaddress.ip_network("127.0.0.7/32")
    assert (config.turn_relays, config.ice.relay_networks) == ((relay,), (relay,))
    assert config.ice.allowed_remote == (ipaddress.ip_network("127.0.0.0/8"),)
    assert config.proxies.trusted == ("127.0.0.6/31",)
    assert config.ice.is_relay("127.0.0.7")
    assert config.ice.allows_remote("127.200.0.1")
    # A network given as a value, not text, too.
    given = ServerConfig(turn_relays=(ipaddress.ip_network("::ffff:127.0.0.8/126"),))
    assert given.turn_relays == given.ice.relay_networks == (ipaddress.ip_network("127.0.0.8/30"),)


def test_a_server_config_keeps_its_turn_relays_and_its_ice_policys_relay_networks_equal() -> None:
    relay = ipaddress.ip_network("127.0.0.7/32")
    given = ServerConfig(turn_relays=(relay,))
    assert given.ice.relay_networks == (relay,)
    assert ServerConfig(ice=given.ice).turn_relays == (relay,)


def test_caps_and_the_admin_listener_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SFU_GEOFENCE_"):
            monkeypatch.delenv(name)
    plain = _config([])
    assert plain.caps == Caps()
    assert (plain.admin_listener.host, plain.admin_listener.port) == ("127.0.0.1", 8081)
    assert _config(["--port", "0"]).admin_listener.port == 0  # never two servers on one fixed admin port
    monkeypatch.setenv("SFU_GEOFENCE_CAP_WEBSOCKETS_PER_ADDRESS", "5")
    monkeypatch.setenv("SFU_GEOFENCE_CAP_JOIN_RATE", "0.5")
    monkeypatch.setenv("SFU_GEOFENCE_ADMIN_PORT", "9100")
    config = _config(["--cap-join-rate", "3", "--cap-participants", "20", "--admin-host", "127.0.0.9"])
    assert (config.caps.websockets_per_address, config.caps.join_rate, config.caps.participants) == (
        5,
        3.0,
        20,
    )
    assert (config.admin_listener.host, config.admin_listener.port) == ("127.0.0.9", 9100)


def test_turn_servers_for_browsers_come_from_flags_or_the_environment_with_the_environments_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("SFU_GEOFENCE_"):
            monkeypatch.delenv(name)
    assert _config([]).ice_servers == ()
    monkeypatch.setenv("SFU_GEOFENCE_TURN_USERNAME", "meeting")
    monkeypatch.setenv("SFU_GEOFENCE_TURN_CREDENTIAL", "s3cret-credential")
    flagged = _config(["--turn", "turn:127.0.0.1:3478", "--turn", "stun:127.0.0.1:3478"])
    assert flagged.ice_servers == (
        IceServer("turn:127.0.0.1:3478", "meeting", "s3cret-credential"),
        IceServer("stun:127.0.0.1:3478"),
    )
    monkeypatch.setenv("SFU_GEOFENCE_TURN", "turns:127.0.0.1:5349?transport=tcp")
    assert [server.url for server in _config([]).ice_servers] == ["turns:127.0.0.1:5349?transport=tcp"]
    assert [server.url for server in _config(["--turn", "turn:127.0.0.1:1"]).ice_servers] == [
        "turn:127.0.0.1:1"
    ]


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--cap-join-burst", "0"], "caps: join_burst must be at least 1"),
        (["--admin-host", "192.0.2.2"], "192.0.2.2 is not a loopback address"),
        (["--admin-port", "70000"], "--admin-port 70000 is out of range"),
        (["--turn", "turn:127.0.0.1:3478"], "needs a username and a credential"),
        (["--turn", "http://127.0.0.1:3478"], "is not a TURN or STUN URL"),
        (["--admin-token", "short"], "at least 16 characters"),
        (["--trusted-proxy", "proxy.example"], "is not an IP address or network"),
        (["--turn-relay", "turn.example"], "does not appear to be an IPv4 or IPv6 network"),
        (["--redis", "http://127.0.0.1:6379/0"], "Redis URL must specify one of the following schemes"),
        (["--node-id", "node a"], "--node-id 'node a': 1-100 characters of A-Z a-z 0-9 _ . : -"),
        (["--advertise-url", "http://127.0.0.1:8080/ws"], "is not a ws:// or wss:// URL"),
    ],
)
def test_bad_geofence_flags_are_refused_with_the_reason(
    flags: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--loopback-only", *flags]) == 2
    assert error in capsys.readouterr().err


def test_a_database_that_is_not_a_country_database_stops_serve_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asn = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    asn.insert_network(netaddr.IPSet(["114.114.0.0/16"]), {"autonomous_system_number": 21859})
    asn.to_db_file(str(tmp_path / "GeoLite2-ASN.mmdb"))
    assert main(["serve", "--loopback-only", "--port", "0", "--db", str(tmp_path / "GeoLite2-ASN.mmdb")]) == 2
    assert "is a 'GeoLite2-ASN' database, not a country one" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--host", "192.0.2.2"], ["--ice-address", "192.0.2.2"]])
def test_loopback_only_refuses_a_non_loopback_address(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--loopback-only", *flags]) == 2
    assert "192.0.2.2 is not a loopback address" in capsys.readouterr().err


async def test_serve_runs_a_server_that_admits_a_client_and_stops_on_sigterm() -> None:
    process = await spawn_module("sfu_geofence", "serve", "--loopback-only", "--port", "0")
    peer: SyntheticPeer | None = None
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        peer = SyntheticPeer(line.split()[-1], "room-s", "127.0.50.1")
        await peer.join(publish={})
        assert peer.participant_id is not None
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        await asyncio.wait_for(peer.closed.wait(), 5)
        assert peer.close_code == 1001
    finally:
        if peer is not None:
            await peer.close()
        await stop(process)


@pytest.mark.parametrize(
    ("flags", "environment", "logged"),
    [
        (["--log-level", "info"], {}, True),
        ([], {}, True),  # the documented default: info
        ([], {"SFU_GEOFENCE_LOG_LEVEL": "info"}, True),
        (["--log-level", "warning"], {}, False),
        (["--log-level", "warning"], {"SFU_GEOFENCE_LOG_LEVEL": "info"}, False),  # the flag wins
    ],
    ids=["flag info", "default", "environment info", "flag warning", "flag over environment"],
)
async def test_the_log_level_of_serve_decides_whether_the_start_up_info_line_is_printed(
    flags: list[str], environment: dict[str, str], logged: bool
) -> None:
    process = await spawn_serve(*flags, env=environment, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        process.send_signal(signal.SIGTERM)
        stderr = (await asyncio.wait_for(process.stderr.read(), 20)).decode()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        await stop(process)
    assert ("INFO sfu_geofence.server.app geofence: DB-IP Country Lite" in stderr) is logged, stderr


async def test_sigterm_during_a_call_tells_everyone_shutdown_with_1001_and_exits_0_within_the_drain_timeout(
    tmp_path: Path,
) -> None:
    drain_timeout = 8.0
    process = await spawn_module(
        "sfu_geofence",
        "serve",
        "--loopback-only",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path),
        "--drain-timeout",
        str(drain_timeout),
    )
    url = ""
    peers: list[SyntheticPeer] = []
    try:
        assert process.stdout is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().split()[-1]
        peers = [SyntheticPeer(url, "drained", f"127.0.51.{i}", tracks=synthetic_tracks()) for i in (1, 2)]
        for peer in peers:
            await peer.join()
            assert peer.participant_id is not None
        await eventually(lambda: everyone_receives(peers), within=20)
        waiting = SyntheticPeer(url, "drained", "127.0.51.3")  # connected, not joined yet
        await waiting.connect()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), drain_timeout + 5) == 0
        assert time.monotonic() - started < drain_timeout
        for peer in [*peers, waiting]:
            await asyncio.wait_for(peer.closed.wait(), 5)
            assert peer.close_code == 1001, peer.name
            closing = [m for m in peer.messages if m["type"] == "closing"]
            assert closing == [ClosingMessage("shutdown", "the server is shutting down").to_message()], (
                peer.name
            )
        # The audit log was flushed and closed: everything is in audit.sqlite, no write-ahead log left.
        assert not (tmp_path / "audit.sqlite-wal").exists()
        with contextlib.closing(sqlite3.connect(tmp_path / "audit.sqlite")) as db:
            [[admitted]] = db.execute(
                "SELECT count(*) FROM audit WHERE kind = 'admission' AND outcome = 'admitted'"
            ).fetchall()
        assert admitted == 2
        # Nobody can join any more: the listening socket is gone.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.ws_connect(url)
    finally:
        for peer in peers:
            await peer.close()
        await stop(process)


async def test_a_drain_that_cannot_finish_is_cut_short_at_the_drain_timeout_and_the_audit_still_closed(
    tmp_path: Path,
) -> None:
    app = create_geofenced_app(ServerConfig(port=0, state=StateConfig(tmp_path)))

    async def hang(app: web.Application) -> None:  # e.g. a peer connection that never finishes closing
        await asyncio.Event().wait()

    app.on_shutdown.append(hang)
    announced = asyncio.Event()
    running = asyncio.ensure_future(
        run_until_signalled([Listener(app, "127.0.0.1", 0)], lambda _: announced.set(), drain_timeout=0.5)
    )
    await asyncio.wait_for(announced.wait(), 20)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 10) is False
    with pytest.raises(ClosedError):
        app[GEOFENCE_HOST].geofence.audit.events()
    assert not (tmp_path / "audit.sqlite-wal").exists()


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_cluster_node_on_a_wildcard_address_must_say_where_clients_reach_it(host: str) -> None:
    # Else other nodes' redirects would name ws://0.0.0.0:PORT/ws, which no client elsewhere reaches.
    with pytest.raises(ValueError, match=f"--host {host} with --redis needs --advertise-url"):
        ServerConfig(host=host, redis_url="redis://127.0.0.1:6379/0")
    assert ServerConfig(host=host).advertise_url is None  # a single node redirects nobody
    advertised = ServerConfig(
        host=host, redis_url="redis://127.0.0.1:6379/0", advertise_url="wss://a.example/ws"
    )
    assert advertised.advertise_url == "wss://a.example/ws"


@pytest.mark.parametrize("url", ["ws:///ws", "wss://sfu-2.example.org:port/ws", "ws//sfu-2/ws"])
def test_an_advertised_url_needs_a_host_and_a_numeric_port(url: str) -> None:
    # What other nodes' redirects send clients to: it must be somewhere a client can connect.
    with pytest.raises(ValueError, match="is not a ws:// or wss:// URL"):
        ServerConfig(advertise_url=url)
    assert ServerConfig(advertise_url="wss://sfu-2.example.org:8443/ws").advertise_url is not None
