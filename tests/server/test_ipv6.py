"""IPv6 end to end: signaling and ICE over IPv6, IPv6 networks in a real .mmdb, IPv4-mapped addresses.

On the machine's loopback there is one IPv6 address, ::1, which the test database puts in DE; IPv4
participants reach the same server through a dual-stack socket, which reports them as
``::ffff:a.b.c.d``: the geofence must decide those as their IPv4 address. In a LAN namespace (marker
``lan``) the dummy interface adds addresses of 2001:db8::/32, several countries of them, so IPv6
participants can come from different places as IPv4 ones do from 127.x ranges.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from sfu_geofence.core.audit import EventKind
from sfu_geofence.core.geofence import Geofence
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.rtc.ice import LOOPBACK_NETWORKS, IcePolicy
from sfu_geofence.server import GEOFENCE_HOST, SFU, ServerConfig, create_geofenced_app
from sfu_geofence.sfu import Sfu
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.netns import LAN_IPV6, LAN_NETWORKS, add_lan_address
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually

pytestmark = pytest.mark.ipv6

WITHIN = 30.0
US, CN = "127.1.0.6", "127.86.0.6"


@dataclass
class Server:
    sfu: Sfu
    geofence: Geofence
    urls: dict[str, str]
    """Signaling URL by listening socket name (``"v6"``, ``"dual"``)."""


def _listening(family: socket.AddressFamily, host: str, *, v6only: bool = True) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        # A dual-stack socket (v6only off) bound to ::ffff:127.0.0.1 takes IPv4 clients on 127.0.0.1
        # and reports them as ::ffff:a.b.c.d, as a server listening on [::] does.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    sock.bind((host, 0))
    sock.listen()
    return sock


@asynccontextmanager
async def serving(
    config: ServerConfig, sockets: dict[str, tuple[socket.socket, str]]
) -> AsyncIterator[Server]:
    """The product's application (``serve``'s) on the given sockets; ``sockets[name] = (sock, url host)``."""
    app = create_geofenced_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        urls = {}
        for name, (sock, host) in sockets.items():
            await web.SockSite(runner, sock).start()
            urls[name] = f"http://{host}:{sock.getsockname()[1]}/ws"
        yield Server(app[SFU], app[GEOFENCE_HOST].geofence, urls)
    finally:
        await runner.cleanup()
        for sock, _ in sockets.values():
            sock.close()


async def joined(url: str, room: str, address: str, *, media_address: str | None = None) -> SyntheticPeer:
    peer = SyntheticPeer(
        url,
        room,
        address,
        name=address,
        tracks=synthetic_tracks()[:1],
        media_address=media_address,
        allowed_remote=(*LOOPBACK_NETWORKS, *LAN_NETWORKS),
    )
    await peer.join(within=WITHIN)
    assert peer.participant_id is not None, peer.messages
    return peer


def hear_each_other(peers: Sequence[SyntheticPeer]) -> str | None:
    for receiver in peers:
        for sender in peers:
            if sender is not receiver:
                meters = receiver.meters(str(sender.participant_id), "audio")
                if not meters or meters[0].frames < 25:
                    return f"{receiver.name} has not heard {sender.name} for half a second yet"
    return None


def media_addresses(server: Server, room: str) -> dict[str, str | None]:
    return {view.participant: view.media_address for view in server.geofence.participants(room)}


async def ejected(server: Server, peer: SyntheticPeer) -> None:
    await eventually(lambda: None if peer.closed.is_set() else f"{peer.name} still in", within=WITHIN)
    assert peer.close_code == 4409, peer.messages
    pid = str(peer.participant_id)
    await eventually(lambda: None if pid not in server.sfu.participants else "still served", within=WITHIN)


async def refused(url: str, room: str, address: str) -> SyntheticPeer:
    peer = SyntheticPeer(url, room, address, name=address)
    await peer.join(within=WITHIN)
    await eventually(lambda: None if peer.closed.is_set() else "not closed", within=WITHIN)
    await peer.close()
    assert peer.close_code == 4403, peer.messages
    return peer


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return build_database(
        tmp_path / "dual.mmdb",
        [
            "127.1.0.0/16=US",
            "127.86.0.0/16=CN",
            "::1/128=DE",
            "2001:db8::49:0/112=DE",
            "2001:db8::86:0/112=CN",
            "2001:db8::1:0/112=US",
        ],
    )


async def test_ipv6_loopback_and_ipv4_mapped_participants_meet_and_are_denied_and_ejected_across_families(
    database: Path,
) -> None:
    config = ServerConfig(db_path=str(database), ice=IcePolicy(bind=("127.0.0.1", "::1")))
    sockets = {
        "v6": (_listening(socket.AF_INET6, "::1"), "[::1]"),
        "dual": (_listening(socket.AF_INET6, "::ffff:127.0.0.1", v6only=False), "127.0.0.1"),
    }
    async with serving(config, sockets) as server:
        de = await joined(server.urls["v6"], "both", "::1")
        us = await joined(server.urls["dual"], "both", US)
        try:
            await eventually(lambda: hear_each_other([de, us]), within=WITHIN)
            # Signaling: ::1 is in DE; the IPv4-mapped ::ffff:127.1.0.6 is decided (and shown) as 127.1.0.6.
            admissions = {
                e.participant: (e.address, e.country)
                for e in server.geofence.audit.events(room="both", kind=EventKind.ADMISSION)
            }
            assert admissions == {de.participant_id: ("::1", "DE"), us.participant_id: (US, "US")}
            # ICE: the IPv6 participant's media came over IPv6, the other's over IPv4.
            assert media_addresses(server, "both") == {de.participant_id: "::1", us.participant_id: US}

            server.geofence.set_policy("both", RoomPolicy.deny("DE", "CN"))
            await ejected(server, de)
            assert not us.closed.is_set()
            # An IPv4-mapped participant from CN is refused as CN, its address shown as IPv4.
            await refused(server.urls["dual"], "both", CN)
            [refusal] = server.geofence.audit.events(room="both", kind=EventKind.ADMISSION, outcome="refused")
            assert (refusal.address, refusal.country) == (CN, "CN")
            # ...and one from ::1 (DE) too, over IPv6.
            await refused(server.urls["v6"], "both", "::1")

            server.geofence.set_policy("both", RoomPolicy.deny("US"))
            await ejected(server, us)
        finally:
            for peer in (de, us):
                await peer.close()


@pytest.mark.lan
async def test_on_the_lan_ipv6_participants_from_two_countries_meet_and_a_denied_one_or_its_media_is_ejected(
    database: Path,
) -> None:
    """Signaling on the dummy interface's 2001:db8::1; participants from 2001:db8::49:x (DE), ::86:x (CN)."""
    de_address, cn_address, us_address = "2001:db8::49:1", "2001:db8::86:1", "2001:db8::1:1"
    for address in (de_address, cn_address, us_address):
        add_lan_address(address)
    config = ServerConfig(db_path=str(database), ice=IcePolicy.from_strings([LAN_IPV6], ["2001:db8::/32"]))
    sockets = {"v6": (_listening(socket.AF_INET6, LAN_IPV6), f"[{LAN_IPV6}]")}
    async with serving(config, sockets) as server:
        url = server.urls["v6"]
        de, cn = await joined(url, "lan", de_address), await joined(url, "lan", cn_address)
        sneaky = None
        try:
            await eventually(lambda: hear_each_other([de, cn]), within=WITHIN)
            assert media_addresses(server, "lan") == {
                de.participant_id: de_address,
                cn.participant_id: cn_address,
            }

            server.geofence.set_policy("lan", RoomPolicy.deny("CN"))
            await ejected(server, cn)
            assert not de.closed.is_set()
            await refused(url, "lan", cn_address)
            # Signaling from a US address, media over IPv6 from a CN one: the media-address check ejects it.
            sneaky = await joined(url, "lan", us_address, media_address=cn_address)
            await ejected(server, sneaky)
            [event] = server.geofence.audit.events(participant=sneaky.participant_id, kind=EventKind.MEDIA)
            assert (event.address, event.country, event.outcome) == (cn_address, "CN", "refused")
            await eventually(lambda: hear_each_other([de]), within=WITHIN)
            assert not de.closed.is_set()
        finally:
            for peer in (de, cn, sneaky):
                if peer is not None:
                    await peer.close()
