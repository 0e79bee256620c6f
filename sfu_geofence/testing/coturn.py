"""A real TURN server for tests: Debian's coturn (``turnserver``), on loopback only, stopped by PID.

The geofence's ``relayed`` rule is about media that reaches the SFU through a TURN relay, whose
address says nothing of where the participant is. Nothing stands in for the relay: tests start
``turnserver`` with files in their own temporary directory, listening on 127.0.0.1 only (UDP and TCP on
one port; no TLS, DTLS, CLI or any other listener), with a long-term credential, relay addresses on a
loopback address of their own (so the SFU can tell the relay from every participant), and
``--allow-loopback-peers`` (coturn refuses to relay to 127.x peers otherwise). See
docs/testing.md.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .process import terminate

if TYPE_CHECKING:
    from aiortc import RTCIceServer

TURNSERVER = "turnserver"
COTURN_MISSING = "coturn's turnserver not found: apt-get install -y coturn"

LISTEN_ADDRESS = "127.0.0.1"
RELAY_ADDRESS = "127.0.0.3"
"""Where coturn's relayed media comes from: a loopback address no participant of the tests uses."""

REALM = "sfu-geofence.test"


@dataclass(frozen=True)
class TurnServer:
    """A running coturn: where clients reach it, with which credential, where its relayed media comes from."""

    host: str
    port: int
    username: str
    credential: str
    relay_address: str
    """The source address of everything coturn relays: what the SFU sees as the remote address."""
    pid: int

    @property
    def url(self) -> str:
        """The ``turn:`` URL (RFC 7065) clients are given."""
        return f"turn:{self.host}:{self.port}?transport=udp"

    @property
    def relay_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The network an operator declares as this TURN server's relays (``--turn-relay``)."""
        return ipaddress.ip_network(self.relay_address)

    def ice_server(self) -> RTCIceServer:
        """This server as an aiortc ``RTCIceServer`` (aiortc is imported only when asked)."""
        from aiortc import RTCIceServer

        return RTCIceServer(urls=self.url, username=self.username, credential=self.credential)


def find_turnserver() -> str | None:
    """Path of coturn's ``turnserver``, or None."""
    return shutil.which(TURNSERVER)


def _free_port(kind: socket.SocketKind, host: str) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _free_udp_and_tcp_port(host: str, attempts: int = 20) -> int:
    """A port free for both UDP and TCP on ``host`` now (coturn listens on both)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no port free for both UDP and TCP on {host} after {attempts} attempts")


@contextmanager
def running_coturn(
    directory: Path,
    *,
    relay_address: str = RELAY_ADDRESS,
    relay_ports: int = 64,
    within: float = 20.0,
) -> Iterator[TurnServer]:
    """Start coturn with files in ``directory``; yield it once it answers; stop it by PID afterwards.

    Raises FileNotFoundError (:data:`COTURN_MISSING`) without ``turnserver``, and RuntimeError with
    coturn's log when it does not come up within ``within`` seconds.
    """
    executable = find_turnserver()
    if executable is None:
        raise FileNotFoundError(COTURN_MISSING)
    port = _free_udp_and_tcp_port(LISTEN_ADDRESS)
    # Relay ports: a free one as the base of a small range (coturn skips any taken meanwhile).
    low = min(_free_port(socket.SOCK_DGRAM, relay_address), 65535 - relay_ports)
    server = TurnServer(
        host=LISTEN_ADDRESS,
        port=port,
        username="participant",
        credential=secrets.token_urlsafe(12),
        relay_address=relay_address,
        pid=0,
    )
    log = directory / "turnserver.log"
    argv = [
        executable,
        "-n",  # no configuration file: everything is on this command line
        f"--listening-ip={LISTEN_ADDRESS}",
        f"--listening-port={port}",
        f"--relay-ip={relay_address}",
        f"--min-port={low}",
        f"--max-port={low + relay_ports - 1}",
        "--lt-cred-mech",
        f"--user={server.username}:{server.credential}",
        f"--realm={REALM}",
        "--fingerprint",
        "--no-cli",
        "--no-tls",
        "--no-dtls",
        "--no-multicast-peers",
        "--allow-loopback-peers",
        f"--pidfile={directory / 'turnserver.pid'}",
        f"--userdb={directory / 'turndb.sqlite'}",  # its own, not /var/lib/turn's
        "--log-file=stdout",
        "--simple-log",
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=directory)
    server = replace(server, pid=process.pid)
    try:
        _wait_until_listening(process, server, within, log)
        yield server
    finally:
        terminate(process)


def _wait_until_listening(
    process: subprocess.Popen[bytes], server: TurnServer, within: float, log: Path
) -> None:
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"turnserver exited with status {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection((server.host, server.port), timeout=1):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"turnserver did not listen on {server.host}:{server.port} within {within:g} s:\n"
                    f"{log.read_text()}"
                ) from None
            time.sleep(0.05)
