"""Bounded ICE work per connection, whatever a client lists or sends: candidate bombs and
peer-reflexive churn cost a bounded number of candidates, pairs and audit rows.

The counts are the assertion (how much the SFU's connection holds), never wall time.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aioice import Connection

from sfu_geofence.core.audit import EventKind
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.rtc.candidates import IceLimits
from sfu_geofence.rtc.forwarding import ice_connection_of
from sfu_geofence.rtc.ice import IcePolicy, SelectedPair, ice_stats, observe_selected_pair, use_policy
from sfu_geofence.server import ServerConfig
from sfu_geofence.sfu.participant import Participant
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.sdp import ice_credentials, with_extra_candidates
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.stun_churn import PrflxChurner
from sfu_geofence.testing.wait import eventually

WITHIN = 30.0  # a loaded 2-core machine
RETRANSMIT_S = 1.0
ROOM = "town-hall"
LIMITS = IceLimits()


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


@dataclass
class Churning:
    """A connected participant of a deny-CN room at 127.1.2.1, and senders of checks as it."""

    connection: Connection
    participant: Participant
    peer: SyntheticPeer
    churns: list[PrflxChurner]
    nominated: list[tuple[str, int]] = field(default_factory=list)
    """Every remote address the SFU's connection nominated, in order (a later nomination may follow
    a check's so closely that the current selected pair alone could miss it)."""


@asynccontextmanager
async def churning(served: Served, *hosts: str) -> AsyncIterator[Churning]:
    """A participant joined from 127.1.2.1 and senders of its authenticated checks from new ports of
    ``hosts`` (closed on exit)."""
    served.geofence.set_policy(ROOM, RoomPolicy.deny("CN"))
    peer = SyntheticPeer(served.url, ROOM, "127.1.2.1", tracks=synthetic_tracks()[:1])
    async with joined(served, peer) as connection:
        assert peer.pc is not None
        participant = served.sfu.participants[str(peer.participant_id)]
        assert participant.selected_pair is not None
        server = participant.selected_pair.local_address
        credentials = (
            ice_credentials(peer.pc.remoteDescription.sdp),
            ice_credentials(peer.pc.localDescription.sdp),
        )
        churns = [PrflxChurner(host, server, *credentials) for host in hosts]
        churning_peer = Churning(connection, participant, peer, churns)

        def nominated(pair: SelectedPair) -> None:
            churning_peer.nominated.append(pair.remote_address)

        observe_selected_pair(connection, nominated)
        try:
            yield churning_peer
        finally:
            for churn in churns:
                churn.close()


async def nominated_check(churn: PrflxChurner, churning_peer: Churning) -> None:
    """A check from a new port of ``churn.host``, sent again every second until the SFU has nominated
    that pair, as a real client retransmits its checks (one check, once, was not nominated within 30
    s in about one full-suite run in ten on a loaded machine; not reproduced in isolation)."""
    port = await churn.check_from_new_port()
    resend_at = time.monotonic() + RETRANSMIT_S

    def nominated() -> str | None:
        nonlocal resend_at
        if (churn.host, port) in churning_peer.nominated:
            return None
        if time.monotonic() >= resend_at:
            churn.check_again(port)
            resend_at += RETRANSMIT_S
        return "not nominated"

    await eventually(nominated, within=WITHIN)


async def test_a_candidate_bomb_is_cut_to_the_limit_before_aioice_pairs_it_and_the_call_connects(
    database: Path,
) -> None:
    # 50 extra candidates fit the size limit of an answer to one media section (6 KiB); the first 20
    # distinct candidate lines are all that aiortc parses and aioice pairs.
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

                # The real candidate came first: the bomber's own call works.
                def audio_arrives() -> str | None:
                    meters = watcher.meters(str(bomber.participant_id), "audio")
                    return None if meters and meters[0].packets >= 10 else "no audio from the bomber yet"

                await eventually(audio_arrives, within=WITHIN)
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


async def test_forty_checks_from_new_source_ports_keep_few_candidates_and_make_one_audit_row(
    database: Path,
) -> None:
    # Each authenticated check from a new port would be a new peer-reflexive candidate, pair,
    # nomination and media-address audit row; the address (and so the decision) never changes.
    async with (
        geofenced_on_loopback(ServerConfig(db_path=str(database))) as served,
        churning(served, "127.1.2.1") as churning_peer,
    ):
        [churn] = churning_peer.churns
        for _ in range(40):
            await nominated_check(churn, churning_peer)
        stats = ice_stats(churning_peer.connection)
        assert stats.peer_reflexive <= LIMITS.peer_reflexive
        assert stats.remote_candidates <= LIMITS.remote_candidates
        assert stats.pairs <= LIMITS.pairs
        assert stats.candidates.peer_reflexive_pruned == 40 - LIMITS.peer_reflexive
        events = served.geofence.audit.events(
            participant=churning_peer.peer.participant_id, kind=EventKind.MEDIA
        )
        assert [(e.address, e.outcome) for e in events] == [("127.1.2.1", "admitted")]


async def test_checks_alternating_between_two_addresses_make_one_audit_row_per_address(
    database: Path,
) -> None:
    # A client with two addresses (one IPv6 /64 has unlimited ones) alternating its checks: every
    # nomination is decided, but each address is audited once for the session, not once per check.
    async with (
        geofenced_on_loopback(ServerConfig(db_path=str(database))) as served,
        churning(served, "127.1.2.2", "127.1.2.3") as churning_peer,
    ):
        for i in range(30):
            await nominated_check(churning_peer.churns[i % 2], churning_peer)
        events = served.geofence.audit.events(
            participant=churning_peer.peer.participant_id, kind=EventKind.MEDIA
        )
        assert [(e.address, e.outcome, e.count) for e in events] == [
            ("127.1.2.1", "admitted", 1),
            ("127.1.2.2", "admitted", 1),
            ("127.1.2.3", "admitted", 1),
        ]


async def test_checks_from_new_ports_before_the_answer_is_applied_stay_within_the_prflx_limit() -> None:
    # The offer gives a client the server's credentials: it can send authenticated checks before its
    # answer is applied. aioice keeps up to 100 of them and, once it connects, learns a peer-reflexive
    # candidate, a pair and a triggered check (a nomination) for each source, past every limit.
    with use_policy(IcePolicy(bind=("127.0.0.1",))):
        server = Connection(ice_controlling=True)
    with use_policy(IcePolicy(bind=("127.1.3.1",))):
        client = Connection(ice_controlling=False)
    for connection in (server, client):
        await connection.gather_candidates()
    [server_candidate] = server.local_candidates
    churn = PrflxChurner(
        "127.1.3.1",
        (server_candidate.host, server_candidate.port),
        (server.local_username, server.local_password),
        (client.local_username, client.local_password),
    )
    try:
        for _ in range(12):
            await churn.check_from_new_port()

        def all_received() -> str | None:
            # Kept by aioice until connect() (its private list), or ignored by the limit.
            seen = len(server._early_checks) + ice_stats(server).candidates.checks_ignored
            return None if seen == 12 else f"{seen} of 12 checks received"

        await eventually(all_received, within=WITHIN)
        client.remote_username, client.remote_password = server.local_username, server.local_password
        for candidate in server.local_candidates:
            await client.add_remote_candidate(candidate)
        await client.add_remote_candidate(None)
        server.remote_username, server.remote_password = client.local_username, client.local_password
        for candidate in client.local_candidates:
            await server.add_remote_candidate(candidate)
        await server.add_remote_candidate(None)
        await asyncio.gather(server.connect(), client.connect())
        stats = ice_stats(server)
        assert stats.peer_reflexive <= LIMITS.peer_reflexive, stats
        assert stats.remote_candidates <= LIMITS.remote_candidates, stats
        assert stats.candidates.checks_ignored == 12 - LIMITS.peer_reflexive, stats
    finally:
        churn.close()
        await client.close()
        await server.close()
