"""One media source per connection: only the checked (nominated) address reaches DTLS/SRTP, through a
bounded queue.

A helper in an allowed country answers the connectivity checks while a host in a restricted country
sends the media: the server geolocates the helper only, so it must take media from nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aioice import Connection
from aiortc import RTCPeerConnection

from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.rtc.candidates import IceLimits
from sfu_geofence.rtc.forwarding import ice_connection_of
from sfu_geofence.rtc.ice import IcePolicy, ice_stats, use_policy
from sfu_geofence.rtc.split_path import send_data_from
from sfu_geofence.server import ServerConfig
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.server import geofenced_on_loopback
from sfu_geofence.testing.wait import eventually

WITHIN = 30.0  # a loaded 2-core machine
ROOM = "town-hall"


@asynccontextmanager
async def udp_socket(host: str) -> AsyncIterator[asyncio.DatagramTransport]:
    """A plain UDP socket on ``host`` (any port) that ignores what it receives."""
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(host, 0)
    )
    try:
        yield transport
    finally:
        transport.close()


async def test_media_from_a_second_source_is_dropped_before_dtls_so_it_never_reaches_anyone(
    database: Path,
) -> None:
    # STUN from the US address (checked, admitted); DTLS and SRTP from a CN socket (never checked).
    config = ServerConfig(db_path=str(database), connect_timeout=6.0)
    async with geofenced_on_loopback(config) as served, udp_socket("127.86.0.20") as cn_socket:
        served.geofence.set_policy(ROOM, RoomPolicy.deny("CN"))

        def split(pc: RTCPeerConnection) -> None:
            connection = ice_connection_of(pc)
            assert connection is not None
            send_data_from(connection, cn_socket)

        watcher = SyntheticPeer(served.url, ROOM, "127.49.0.20")
        hostile = SyntheticPeer(served.url, ROOM, "127.1.0.20", tracks=synthetic_tracks()[:1], prepare=split)
        try:
            await watcher.join(within=WITHIN)
            await hostile.join(within=WITHIN)
            assert hostile.participant_id is not None, hostile.messages
            connection = ice_connection_of(served.sfu.participants[hostile.participant_id].pc)
            assert connection is not None
            hostile_id = hostile.participant_id

            def subscribed() -> str | None:
                return None if watcher.meters(hostile_id, "audio") else "the watcher has no track of it yet"

            await eventually(subscribed, within=WITHIN)  # (a track stays metered after it ends)
            await asyncio.wait_for(hostile.closed.wait(), WITHIN)
            assert hostile.close_code == 4410  # no media connection: its DTLS never got through
            assert [m.packets for m in watcher.meters(hostile_id, "audio")] == [0]
            assert ice_stats(connection).foreign_dropped > 0
        finally:
            await hostile.close()
            await watcher.close()


async def _connected_pair(receiver_policy: IcePolicy, sender_host: str) -> tuple[Connection, Connection]:
    """Two real aioice connections on loopback, connected; the receiver's under ``receiver_policy``."""
    with use_policy(receiver_policy):
        receiver = Connection(ice_controlling=True)
    with use_policy(IcePolicy(bind=(sender_host,))):
        sender = Connection(ice_controlling=False)
    for connection in (receiver, sender):
        await connection.gather_candidates()
    for local, remote in ((receiver, sender), (sender, receiver)):
        local.remote_username, local.remote_password = remote.local_username, remote.local_password
        for candidate in remote.local_candidates:
            await local.add_remote_candidate(candidate)
        await local.add_remote_candidate(None)
    await asyncio.gather(receiver.connect(), sender.connect())
    return receiver, sender


async def test_a_flood_from_the_media_source_waits_in_a_bounded_queue_and_the_rest_is_dropped() -> None:
    # Nobody reads the receiver (as when its DTLS is not reading yet): a queue without a bound grows.
    limits = IceLimits(receive_queue=64)
    receiver, sender = await _connected_pair(IcePolicy(bind=("127.0.0.1",), limits=limits), "127.49.0.21")
    try:
        for n in range(600):
            await sender.send(b"\x80\x00" + n.to_bytes(2, "big") + bytes(96))  # RTP-looking junk
            await asyncio.sleep(0)  # the receiver reads one datagram per loop iteration

        def all_counted() -> str | None:
            stats = ice_stats(receiver)
            seen = stats.receive_queue + stats.overflow_dropped
            return None if seen == 600 else f"{seen} of 600 datagrams seen: {stats}"

        await eventually(all_counted, within=WITHIN)
        stats = ice_stats(receiver)
        assert (stats.receive_queue, stats.overflow_dropped, stats.foreign_dropped) == (64, 536, 0)
    finally:
        await sender.close()
        await receiver.close()


async def test_datagrams_from_an_allowed_address_that_was_never_nominated_never_reach_the_queue() -> None:
    receiver, sender = await _connected_pair(IcePolicy(bind=("127.0.0.1",)), "127.49.0.22")
    [local] = receiver.local_candidates
    try:
        async with udp_socket("127.49.0.22") as stranger:  # same address as the peer, another port
            for _ in range(500):
                stranger.sendto(b"\x80" + bytes(99), (local.host, local.port))
                await asyncio.sleep(0)

            def all_counted() -> str | None:
                dropped = ice_stats(receiver).foreign_dropped
                return None if dropped == 500 else f"{dropped} of 500 dropped"

            await eventually(all_counted, within=WITHIN)
        assert ice_stats(receiver).receive_queue == 0
        await sender.send(b"\x80" + bytes(99))  # the nominated peer's own datagrams still get through
        await eventually(
            lambda: None if ice_stats(receiver).receive_queue == 1 else "not queued", within=WITHIN
        )
    finally:
        await sender.close()
        await receiver.close()
