"""``sfu-geofence serve``: flags, environment, and a real server process on loopback."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
from pathlib import Path

import netaddr
import pytest
from mmdb_writer import MMDBWriter

from sfu_geofence.cli import main
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.serve import add_arguments, config_from_args
from sfu_geofence.synthetic.client import SyntheticPeer
from sfu_geofence.testing.process import spawn_module, stop


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


def test_a_server_config_keeps_its_turn_relays_and_its_ice_policys_relay_networks_equal() -> None:
    relay = ipaddress.ip_network("127.0.0.7/32")
    given = ServerConfig(turn_relays=(relay,))
    assert given.ice.relay_networks == (relay,)
    assert ServerConfig(ice=given.ice).turn_relays == (relay,)


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--admin-token", "short"], "at least 16 characters"),
        (["--trusted-proxy", "proxy.example"], "is not an IP address or network"),
        (["--turn-relay", "turn.example"], "does not appear to be an IPv4 or IPv6 network"),
        (["--redis", "http://127.0.0.1:6379/0"], "Redis URL must specify one of the following schemes"),
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFU_GEOFENCE_")} | environment
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sfu_geofence",
        "serve",
        "--loopback-only",
        "--port",
        "0",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
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
