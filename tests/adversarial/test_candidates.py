"""Bounded ICE work per connection, whatever a client lists or sends: candidate bombs and
peer-reflexive churn cost a bounded number of candidates, pairs and audit rows.

The counts are the assertion (how much the SFU's connection holds), never wall time.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

from aioice import Connection, stun

from sfu_geofence.core.audit import EventKind
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.rtc.candidates import IceLimits
from sfu_geofence.rtc.forwarding import ice_connection_of
from sfu_geofence.rtc.ice import ice_stats
from sfu_geofence.server import ServerConfig
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.wait import eventually

WITHIN = 30.0  # a loaded 2-core machine
ROOM = "town-hall"
LIMITS = IceLimits()


def with_extra_candidates(count: int) -> object:
    """An answer rewrite: ``count`` more host candidates (allowed loopback addresses) after the real one."""

    def rewrite(sdp: str) -> str:
        extra = "".join(
            f"a=candidate:bomb{n} 1 udp 2130706431 127.49.{n // 250}.{n % 250 + 1} 9 typ host\r\n"
            for n in range(count)
        )
        first = re.search(r"a=candidate:[^\r\n]*\r\n", sdp)
        assert first is not None, "the answer has no candidate"
        return sdp[: first.end()] + extra + sdp[first.end() :]

    return rewrite


@asynccontextmanager
async def joined(served: Served, peer: SyntheticPeer) -> AsyncIterator[Connection]:
    """``peer`` joined and connected; the SFU's ICE connection to it."""
    try:
        await peer.join(within=WITHIN)
        assert peer.participant_id is not None, peer.messages
        participant = served.sfu.participants[peer.participant_id]
        await eventually(
            lambda: None if participant.selected_pair is not None else "no selected pair yet", within=WITHIN
        )
        connection = ice_connection_of(participant.pc)
        assert connection is not None
        yield connection
    finally:
        await peer.close()


async def test_a_candidate_bomb_is_cut_to_the_limit_before_aioice_pairs_it_and_the_call_connects(
    database: Path,
) -> None:
    # 50 extra candidates fit the size limit of an answer to one media section (6 KiB).
    async with geofenced_on_loopback(ServerConfig(db_path=str(database))) as served:
        watcher = SyntheticPeer(served.url, ROOM, "127.49.1.1")
        bomber = SyntheticPeer(
            served.url,
            ROOM,
            "127.1.1.1",
            tracks=synthetic_tracks()[:1],
            rewrite_answer=with_extra_candidates(50),
        )
        try:
            await watcher.join(within=WITHIN)
            async with joined(served, bomber) as connection:
                stats = ice_stats(connection)
                assert stats.remote_candidates == LIMITS.remote_candidates
                assert stats.pairs <= LIMITS.pairs
                assert stats.candidates.candidates_ignored == 51 - LIMITS.remote_candidates
                # The real candidate came first: the bomber's own call works.
                meters = watcher.meters(str(bomber.participant_id), "audio")
                await eventually(
                    lambda: None if meters and meters[0].packets >= 10 else "no audio from the bomber yet",
                    within=WITHIN,
                )
        finally:
            await watcher.close()


async def test_an_answer_larger_than_real_clients_answers_is_refused_before_it_is_parsed(
    database: Path,
) -> None:
    # 1 500 extra candidates: 78 KB, under the 256 KiB message limit, 13 x what one media section needs.
    async with geofenced_on_loopback(ServerConfig(db_path=str(database))) as served:
        bomber = SyntheticPeer(
            served.url,
            ROOM,
            "127.1.1.2",
            tracks=synthetic_tracks()[:1],
            rewrite_answer=with_extra_candidates(1500),
        )
        try:
            await bomber.join(within=WITHIN)
            await asyncio.wait_for(bomber.closed.wait(), WITHIN)
            assert bomber.close_code == 4413
            [closing] = [m for m in bomber.messages if m.get("type") == "closing"]
            assert re.fullmatch(
                r"invalid SDP answer: \d+ bytes answering 1 media sections \(at most 6144\)",
                closing["message"],
            ), closing
            assert served.sfu.participants == {}
        finally:
            await bomber.close()


class Responder(asyncio.DatagramProtocol):
    """Answers the SFU's connectivity checks as the client would, with the client's password."""

    def __init__(self, password: str) -> None:
        self.password = password.encode()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        if message.message_class is stun.Class.REQUEST and self.transport is not None:
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.RESPONSE,
                transaction_id=message.transaction_id,
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
            response.add_message_integrity(self.password)
            response.add_fingerprint()
            self.transport.sendto(bytes(response), addr)


def _sdp_attribute(sdp: str, name: str) -> str:
    found = re.search(rf"^a={name}:(\S+)", sdp, re.MULTILINE)
    assert found is not None, f"no a={name} in the SDP"
    return found.group(1)


async def test_forty_checks_from_new_source_ports_keep_few_candidates_and_make_one_audit_row(
    database: Path,
) -> None:
    # Each authenticated check from a new port would be a new peer-reflexive candidate, pair,
    # nomination and media-address audit row; the address (and so the decision) never changes.
    async with geofenced_on_loopback(ServerConfig(db_path=str(database))) as served:
        served.geofence.set_policy(ROOM, RoomPolicy.deny("CN"))
        churner = SyntheticPeer(served.url, ROOM, "127.1.2.1", tracks=synthetic_tracks()[:1])
        async with joined(served, churner) as connection:
            assert churner.pc is not None
            offer, answer = churner.pc.remoteDescription.sdp, churner.pc.localDescription.sdp
            sfu_ufrag, sfu_pwd = _sdp_attribute(offer, "ice-ufrag"), _sdp_attribute(offer, "ice-pwd")
            own_ufrag, own_pwd = _sdp_attribute(answer, "ice-ufrag"), _sdp_attribute(answer, "ice-pwd")
            participant = served.sfu.participants[str(churner.participant_id)]
            assert participant.selected_pair is not None
            sfu_address = participant.selected_pair.local_address
            loop = asyncio.get_running_loop()
            transports: list[asyncio.DatagramTransport] = []
            try:
                for _ in range(40):
                    transport, _protocol = await loop.create_datagram_endpoint(
                        lambda: Responder(own_pwd), local_addr=("127.1.2.1", 0)
                    )
                    transports.append(transport)
                    request = stun.Message(
                        message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST
                    )
                    request.attributes["USERNAME"] = f"{sfu_ufrag}:{own_ufrag}"
                    request.attributes["PRIORITY"] = 1853824767
                    request.attributes["ICE-CONTROLLED"] = secrets.randbits(64)
                    request.add_message_integrity(sfu_pwd.encode())
                    request.add_fingerprint()
                    transport.sendto(bytes(request), sfu_address)
                    port = transport.get_extra_info("sockname")[1]

                    def nominated(port: int = port) -> str | None:
                        pair = participant.selected_pair
                        return (
                            None if pair is not None and pair.remote_address[1] == port else "not nominated"
                        )

                    await eventually(nominated, within=WITHIN)
            finally:
                for transport in transports:
                    transport.close()
            stats = ice_stats(connection)
            assert stats.peer_reflexive <= LIMITS.peer_reflexive
            assert stats.remote_candidates <= LIMITS.remote_candidates
            assert stats.pairs <= LIMITS.pairs
            assert stats.candidates.peer_reflexive_pruned == 40 - LIMITS.peer_reflexive
            events = served.geofence.audit.events(participant=churner.participant_id, kind=EventKind.MEDIA)
            assert [(e.address, e.outcome) for e in events] == [("127.1.2.1", "admitted")]
